//! How sure a comparison is: each model's pass rate with its Wilson interval, every model
//! paired with a reference model scenario by scenario (pass rate and cost per run), pass@k and
//! pass^k over repetitions, and the cheapest model that reaches a pass rate with confidence.
//! Built from a [`Summary`] alone, so `runner run` and `runner report` (shards merged later)
//! give the same figures. The maths is [`crate::stats`].

use std::collections::HashMap;
use std::fmt::Write as _;

use super::summary::{ModelStats, ScenarioStats, Summary};
use crate::model::ModelSpec;
use crate::stats::{Interval, Paired, pass_all_k, pass_at_k, wilson};

/// The difference a paired comparison should be able to see: 5 points of pass rate.
pub(crate) const DETECTABLE: f64 = 0.05;

/// What a comparison is asked beyond the runs: the model the others are compared with, and the
/// pass rate a model must reach with confidence (`--compare-to`, `--target-pass-rate`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Asked {
    /// `None`: the summary's first model.
    pub compare_to: Option<ModelSpec>,
    pub target: Option<f64>,
}

/// One model against another over the scenarios both finished.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Versus {
    /// The model compared with.
    pub reference: ModelSpec,
    /// The per-scenario difference in the fraction of repetitions passed; `None` when no
    /// scenario was finished by both.
    pub pass: Option<Paired>,
    /// The per-scenario difference in mean cost per run (USD); `None` when either model has no
    /// price or nothing was paired.
    pub cost: Option<Paired>,
    /// Mean cost per run over the paired scenarios, this model's over the reference's; `None`
    /// when the reference cost nothing or is unpriced.
    pub cost_ratio: Option<f64>,
}

/// Two models' (or one model's, before and after) figures paired scenario by scenario.
pub(crate) fn pair(
    scenarios_a: &[ScenarioStats],
    a: &ModelStats,
    scenarios_b: &[ScenarioStats],
    b: &ModelStats,
) -> Versus {
    let of_a: HashMap<&str, &ScenarioStats> =
        scenarios_a.iter().filter(|s| s.model == a.model && s.runs > 0).map(|s| (s.scenario.as_str(), s)).collect();
    let pairs: Vec<(&ScenarioStats, &ScenarioStats)> = scenarios_b
        .iter()
        .filter(|s| s.model == b.model && s.runs > 0)
        .filter_map(|sb| Some((*of_a.get(sb.scenario.as_str())?, sb)))
        .collect();
    let pass: Vec<f64> = pairs.iter().map(|(sa, sb)| sb.pass_fraction() - sa.pass_fraction()).collect();
    let priced = !a.tally.unpriced && !b.tally.unpriced;
    let cost: Vec<f64> = pairs.iter().map(|(sa, sb)| sb.cost_per_run() - sa.cost_per_run()).collect();
    let (cost_a, cost_b) =
        pairs.iter().fold((0.0, 0.0), |(x, y), (sa, sb)| (x + sa.cost_per_run(), y + sb.cost_per_run()));
    // A difference of two fractions lies in [-1, 1]; so does its interval.
    let pass = Paired::of(&pass).map(|mut paired| {
        paired.interval = paired.interval.map(|i| Interval { low: i.low.max(-1.0), high: i.high.min(1.0) });
        paired
    });
    Versus {
        reference: a.model.clone(),
        pass,
        cost: if priced { Paired::of(&cost) } else { None },
        cost_ratio: (priced && cost_a > 0.0).then(|| cost_b / cost_a),
    }
}

/// One model's figures with their uncertainty.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelConfidence {
    pub model: ModelSpec,
    /// The 95% Wilson interval of its pass rate over its finished runs.
    pub interval: Option<Interval>,
    /// n: the fewest finished repetitions of any of its scenarios (pass@k and pass^k for k up
    /// to n count every scenario).
    pub repetitions: usize,
    /// pass@k for k = 1..=n (index k - 1): the mean over scenarios.
    pub pass_at: Vec<f64>,
    /// pass^k for k = 1..=n.
    pub pass_all: Vec<f64>,
    /// Against the reference model; `None` for the reference itself or with one model.
    pub versus: Option<Versus>,
}

impl ModelConfidence {
    /// pass@n and pass^n, with n, when the scenarios were repeated.
    pub(crate) fn pass_k_at_n(&self) -> Option<(usize, f64, f64)> {
        (self.repetitions >= 2)
            .then(|| (self.repetitions, *self.pass_at.last().unwrap_or(&0.0), *self.pass_all.last().unwrap_or(&0.0)))
    }
}

/// What `--target-pass-rate` found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TargetFinding {
    /// The cheapest model whose lower bound reaches the target (priced models before unpriced).
    Met { model: ModelSpec, low: f64, cost_per_run: Option<f64> },
    /// None reaches it; the one whose lower bound comes closest.
    Missed { closest: Option<(ModelSpec, f64)> },
}

/// Every model's confidence figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Confidence {
    pub models: Vec<ModelConfidence>,
    pub target: Option<(f64, TargetFinding)>,
}

impl Confidence {
    pub(crate) fn of(summary: &Summary, asked: &Asked) -> Self {
        // A reference that is not among these runs (read from a run's summary) falls back to
        // the first model.
        let reference = asked
            .compare_to
            .as_ref()
            .and_then(|model| summary.models().iter().find(|m| m.model == *model))
            .or_else(|| summary.models().first());
        let models = summary
            .models()
            .iter()
            .map(|m| {
                let scenarios: Vec<&ScenarioStats> =
                    summary.scenarios().iter().filter(|s| s.model == m.model && s.runs > 0).collect();
                let repetitions = scenarios.iter().map(|s| s.runs).min().unwrap_or(0);
                let mean_over = |estimate: fn(usize, usize, usize) -> Option<f64>, k: usize| {
                    scenarios.iter().filter_map(|s| estimate(s.runs, s.passed, k)).sum::<f64>() / scenarios.len() as f64
                };
                ModelConfidence {
                    model: m.model.clone(),
                    interval: wilson(m.passed, m.runs),
                    repetitions,
                    pass_at: (1..=repetitions).map(|k| mean_over(pass_at_k, k)).collect(),
                    pass_all: (1..=repetitions).map(|k| mean_over(pass_all_k, k)).collect(),
                    versus: reference
                        .filter(|r| r.model != m.model)
                        .map(|r| pair(summary.scenarios(), r, summary.scenarios(), m)),
                }
            })
            .collect::<Vec<_>>();
        let target = asked.target.map(|target| (target, find_target(summary, &models, target)));
        Self { models, target }
    }

    pub(crate) fn of_model(&self, model: &ModelSpec) -> Option<&ModelConfidence> {
        self.models.iter().find(|m| m.model == *model)
    }

    /// The comparison and target lines printed after the summary table.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let compared: Vec<(&ModelConfidence, &Versus)> =
            self.models.iter().filter_map(|m| Some((m, m.versus.as_ref()?))).collect();
        if !compared.is_empty() {
            out.push_str("compared (paired by scenario; 95% intervals):\n");
            for (m, versus) in compared {
                let _ = writeln!(out, "  {}", sentence(&m.model, versus));
            }
        }
        for m in &self.models {
            if let Some((n, at, all)) = m.pass_k_at_n() {
                let _ = writeln!(
                    out,
                    "repetitions: {}: pass@{n} {}, pass^{n} {} (the chance that at least one, or all, of {n} repetitions of a scenario pass)",
                    m.model,
                    percent(at),
                    percent(all)
                );
            }
        }
        if let Some((target, finding)) = &self.target {
            let _ = writeln!(out, "{}", target_sentence(*target, finding));
        }
        out
    }

    /// The same lines as Markdown, for the step summary.
    pub(crate) fn render_markdown(&self) -> String {
        let mut out = String::new();
        let compared: Vec<(&ModelConfidence, &Versus)> =
            self.models.iter().filter_map(|m| Some((m, m.versus.as_ref()?))).collect();
        if !compared.is_empty() {
            out.push_str("**Compared** (paired by scenario; 95% intervals):\n\n");
            for (m, versus) in compared {
                let _ = writeln!(out, "- {}", super::markdown_cell(&sentence(&m.model, versus)));
            }
            out.push('\n');
        }
        let repeated: Vec<_> = self.models.iter().filter_map(|m| Some((m, m.pass_k_at_n()?))).collect();
        if !repeated.is_empty() {
            out.push_str("| model | repetitions | pass@n | pass^n |\n|---|---:|---:|---:|\n");
            for (m, (n, at, all)) in repeated {
                let _ = writeln!(
                    out,
                    "| {} | {n} | {} | {} |",
                    super::markdown_code(&m.model.to_string()),
                    percent(at),
                    percent(all)
                );
            }
            out.push('\n');
        }
        if let Some((target, finding)) = &self.target {
            let _ = writeln!(out, "{}\n", super::markdown_cell(&target_sentence(*target, finding)));
        }
        out
    }

    /// Every pass@k and pass^k, for the JSON beside the summary; `None` when no model's
    /// scenarios were repeated.
    pub(crate) fn pass_k_json(&self) -> Option<serde_json::Value> {
        let models: Vec<serde_json::Value> = self
            .models
            .iter()
            .filter(|m| m.repetitions >= 2)
            .map(|m| {
                serde_json::json!({
                    "model": m.model.to_string(),
                    "repetitions": m.repetitions,
                    "pass_at_k": m.pass_at.iter().enumerate().map(|(i, v)| (format!("{}", i + 1), round(*v))).collect::<serde_json::Map<_, _>>(),
                    "pass_all_k": m.pass_all.iter().enumerate().map(|(i, v)| (format!("{}", i + 1), round(*v))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        (!models.is_empty()).then(|| serde_json::json!({ "models": models }))
    }
}

/// A fraction to 6 decimals, for JSON.
fn round(value: f64) -> serde_json::Value {
    serde_json::Value::from((value * 1e6).round() / 1e6)
}

fn find_target(summary: &Summary, models: &[ModelConfidence], target: f64) -> TargetFinding {
    // (model, lower bound, mean cost per run: `None` when unpriced)
    type Candidate<'a> = (&'a ModelSpec, f64, Option<f64>);
    let mut candidates: Vec<Candidate<'_>> = models
        .iter()
        .filter_map(|m| {
            let stats = summary.models().iter().find(|s| s.model == m.model)?;
            let cost = if stats.tally.unpriced { None } else { stats.mean_cost_per_run() };
            Some((&m.model, m.interval?.low, cost))
        })
        .collect();
    // Cheapest first, unpriced last; at one cost, the higher lower bound first.
    let by_cost = |a: &Candidate<'_>, b: &Candidate<'_>| {
        (a.2.is_none().cmp(&b.2.is_none()))
            .then(a.2.unwrap_or(0.0).total_cmp(&b.2.unwrap_or(0.0)))
            .then(b.1.total_cmp(&a.1))
    };
    candidates.sort_by(by_cost);
    if let Some((model, low, cost)) = candidates.iter().find(|c| c.1 >= target) {
        return TargetFinding::Met { model: (*model).clone(), low: *low, cost_per_run: *cost };
    }
    // The highest lower bound; at one bound, the cheaper.
    let closest = candidates.iter().max_by(|a, b| a.1.total_cmp(&b.1).then(by_cost(b, a)));
    TargetFinding::Missed { closest: closest.map(|(model, low, _)| ((*model).clone(), *low)) }
}

/// A fraction as a percentage with one decimal.
fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

/// A fraction as signed points: `+15.0`.
fn points(value: f64) -> String {
    let points = value * 100.0;
    if points.abs() < 0.05 { "0.0".to_owned() } else { format!("{points:+.1}") }
}

/// A p-value as people read it: `p < 0.001`, `p = 0.008`, `p = 0.41`.
pub(crate) fn p_value(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_owned()
    } else if p < 0.1 {
        format!("p = {p:.3}")
    } else {
        format!("p = {p:.2}")
    }
}

/// Dollars with a sign.
fn signed_usd(value: f64) -> String {
    if value < 0.0 { format!("-${:.6}", -value) } else { format!("+${value:.6}") }
}

/// `model vs reference: pass rate ...; cost per run ...`: which way it goes and how sure that
/// is, in plain words for every degenerate case.
pub(crate) fn sentence(model: &ModelSpec, versus: &Versus) -> String {
    let Some(pass) = &versus.pass else {
        return format!("{model} vs {}: no scenario finished by both, nothing to compare", versus.reference);
    };
    format!("{model} vs {}: {}; {}", versus.reference, pass_words(pass), cost_words(versus))
}

/// The pass-rate half of a comparison's sentence.
pub(crate) fn pass_words(pass: &Paired) -> String {
    let (diff, n) = (points(pass.mean), pass.n);
    match (pass.interval, pass.p) {
        (None, _) => format!("pass rate {diff} points on 1 scenario: too few to tell noise from a difference"),
        (Some(_), None) if pass.mean == 0.0 => format!("the same pass rate on all {n} scenarios"),
        (Some(_), None) => format!("pass rate {diff} points on each of the {n} scenarios (no spread, so no p-value)"),
        (Some(i), Some(p)) => {
            let figures =
                format!("pass rate {diff} points [{:.1}, {:.1}], {}", i.low * 100.0, i.high * 100.0, p_value(p));
            if pass.significant() {
                let way = if pass.mean > 0.0 { "better" } else { "worse" };
                return format!("{figures}: {way} over {n} scenarios");
            }
            match pass.items_to_detect(DETECTABLE) {
                Some(needed) if needed > n => format!(
                    "{figures}: within noise over {n} scenarios; about {needed} would tell 5 points apart (80% power)"
                ),
                Some(needed) => format!(
                    "{figures}: within noise over {n} scenarios, and likely under 5 points ({needed} would have shown 5 points at 80% power)"
                ),
                None => format!("{figures}: within noise over {n} scenarios"),
            }
        }
    }
}

/// The cost half of a comparison's sentence.
fn cost_words(versus: &Versus) -> String {
    let Some(cost) = &versus.cost else {
        return "cost not compared (a model has no price)".to_owned();
    };
    if cost.mean == 0.0 && cost.sd == 0.0 {
        return "the same cost per run".to_owned();
    }
    let change = signed_usd(cost.mean);
    let test = match (cost.interval, cost.p) {
        (Some(i), Some(p)) => format!(" [{}, {}], {}", signed_usd(i.low), signed_usd(i.high), p_value(p)),
        _ => String::new(),
    };
    match versus.cost_ratio.filter(|ratio| *ratio > 0.0) {
        Some(ratio) if ratio >= 0.095 => format!("cost per run x{ratio:.1} ({change}{test})"),
        Some(ratio) => format!("cost per run x{ratio:.3} ({change}{test})"),
        None => format!("cost per run {change}{test}"),
    }
}

fn target_sentence(target: f64, finding: &TargetFinding) -> String {
    let goal = percent(target);
    match finding {
        TargetFinding::Met { model, low, cost_per_run: Some(cost) } => format!(
            "target {goal}: {model} is the cheapest model whose pass rate reaches {goal} with 95% confidence (lower bound {}, ${cost:.6} per run)",
            percent(*low)
        ),
        TargetFinding::Met { model, low, cost_per_run: None } => format!(
            "target {goal}: {model} reaches {goal} with 95% confidence (lower bound {}); it has no price, so no cheaper model could be named",
            percent(*low)
        ),
        TargetFinding::Missed { closest: Some((model, low)) } => format!(
            "target {goal}: no model reaches {goal} with 95% confidence; the closest is {model} (lower bound {})",
            percent(*low)
        ),
        TargetFinding::Missed { closest: None } => format!("target {goal}: no model finished a run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use crate::report::summary::{RunFacts, Tally};

    /// A summary of `outcomes`: (scenario, model, passed?) per finished run, `None` for a run
    /// never started; every run costs `cost` of its model.
    fn summary(outcomes: &[(&str, &str, Option<bool>)], cost: impl Fn(&str) -> f64) -> Summary {
        let mut summary = Summary::default();
        for (scenario, model, passed) in outcomes {
            summary.add(RunFacts {
                scenario: (*scenario).into(),
                model: ModelSpec::from_key(model).unwrap(),
                repetition: 1,
                status: passed.map(|p| if p { Status::Passed } else { Status::Failed }),
                tally: Tally { cost_usd: cost(model), ..Tally::default() },
            });
        }
        summary
    }

    fn sentence_of(summary: &Summary, model: &str) -> String {
        let confidence = summary.confidence();
        let m = confidence.of_model(&ModelSpec::from_key(model).unwrap()).unwrap();
        sentence(&m.model, m.versus.as_ref().unwrap())
    }

    fn csv_row(summary: &Summary, model: &str) -> HashMap<String, String> {
        let text = summary.to_csv().unwrap();
        let mut reader = csv::Reader::from_reader(text.as_slice());
        let header = reader.headers().unwrap().clone();
        reader
            .records()
            .map(|r| header.iter().zip(r.unwrap().iter()).map(|(h, v)| (h.to_owned(), v.to_owned())).collect())
            .find(|r: &HashMap<String, String>| r["model"] == model)
            .unwrap()
    }

    #[test]
    fn degenerate_comparisons_are_plain_words_and_empty_cells_never_nan() {
        let flat = |_: &str| 0.001;
        // Identical results everywhere.
        let same = summary(
            &[
                ("s1", "m:a", Some(true)),
                ("s1", "m:b", Some(true)),
                ("s2", "m:a", Some(false)),
                ("s2", "m:b", Some(false)),
            ],
            flat,
        );
        assert_eq!(
            sentence_of(&same, "m:b"),
            "m:b vs m:a: the same pass rate on all 2 scenarios; the same cost per run"
        );
        let row = csv_row(&same, "m:b");
        assert_eq!(
            (row["pass_diff"].as_str(), row["pass_diff_low"].as_str(), row["pass_diff_p"].as_str()),
            ("0.0000", "0.0000", "")
        );
        // The same difference on every scenario: no spread, no p-value.
        let apart = summary(
            &[
                ("s1", "m:a", Some(false)),
                ("s1", "m:b", Some(true)),
                ("s2", "m:a", Some(false)),
                ("s2", "m:b", Some(true)),
            ],
            flat,
        );
        assert!(
            sentence_of(&apart, "m:b")
                .contains("pass rate +100.0 points on each of the 2 scenarios (no spread, so no p-value)")
        );
        // One scenario.
        let one = summary(&[("s1", "m:a", Some(false)), ("s1", "m:b", Some(true))], flat);
        assert!(
            sentence_of(&one, "m:b")
                .contains("m:b vs m:a: pass rate +100.0 points on 1 scenario: too few to tell noise from a difference")
        );
        assert_eq!(csv_row(&one, "m:b")["pass_diff_low"], "");
        // A model that finished nothing: no interval, nothing paired.
        let nothing = summary(&[("s1", "m:a", Some(true)), ("s1", "m:b", None)], flat);
        assert_eq!(sentence_of(&nothing, "m:b"), "m:b vs m:a: no scenario finished by both, nothing to compare");
        let row = csv_row(&nothing, "m:b");
        assert_eq!(
            (row["pass_rate_low"].as_str(), row["scenarios_paired"].as_str(), row["pass_diff"].as_str()),
            ("", "0", "")
        );
        for text in [
            same.render(),
            apart.render(),
            one.render(),
            nothing.render(),
            String::from_utf8(nothing.to_csv().unwrap()).unwrap(),
        ] {
            assert!(!text.to_lowercase().contains("nan") && !text.contains("inf"), "{text}");
        }
    }

    #[test]
    fn within_noise_says_how_many_scenarios_would_tell_five_points() {
        // 100 scenarios, b better on one: the spread (sd 0.1) says 34 scenarios would have
        // shown 5 points, so the difference is likely smaller than that.
        let mut outcomes = Vec::new();
        let names: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            outcomes.push((name.as_str(), "m:a", Some(i != 0)));
            outcomes.push((name.as_str(), "m:b", Some(true)));
        }
        let small = summary(&outcomes, |m| if m == "m:a" { 0.002 } else { 0.001 });
        assert_eq!(
            sentence_of(&small, "m:b"),
            "m:b vs m:a: pass rate +1.0 points [-1.0, 3.0], p = 0.32: within noise over 100 scenarios, and likely under 5 points (34 would have shown 5 points at 80% power); cost per run x0.5 (-$0.001000)"
        );
    }

    #[test]
    fn the_target_is_the_cheapest_model_whose_lower_bound_reaches_it() {
        let mut outcomes = Vec::new();
        let names: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
        for name in &names {
            for model in ["m:cheap", "m:mid", "m:dear"] {
                outcomes.push((name.as_str(), model, Some(model != "m:cheap" || name != "s0")));
            }
        }
        let prices = |m: &str| match m {
            "m:cheap" => 0.001,
            "m:mid" => 0.002,
            _ => 0.003,
        };
        let mut s = summary(&outcomes, prices);
        // cheap passes 29/30 (lower bound 83.3%), mid and dear 30/30 (88.6%).
        s.ask(Asked { compare_to: None, target: Some(0.85) });
        assert!(s.render().contains("target 85.0%: m:mid is the cheapest model whose pass rate reaches 85.0% with 95% confidence (lower bound 88.6%, $0.002000 per run)"), "{}", s.render());
        s.ask(Asked { compare_to: None, target: Some(0.8) });
        assert!(s.render().contains("target 80.0%: m:cheap is the cheapest"), "{}", s.render());
        s.ask(Asked { compare_to: None, target: Some(0.99) });
        assert!(
            s.render().contains(
                "target 99.0%: no model reaches 99.0% with 95% confidence; the closest is m:mid (lower bound 88.6%)"
            ),
            "{}",
            s.render()
        );
        let mut empty = summary(&[("s1", "m:a", None)], prices);
        empty.ask(Asked { compare_to: None, target: Some(0.5) });
        assert!(empty.render().contains("target 50.0%: no model finished a run"), "{}", empty.render());
    }
}
