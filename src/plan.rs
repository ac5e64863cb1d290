//! The run matrix before anything runs: which runs (scenarios, filter, models, repetitions,
//! shard), whether their prices allow the batch (`--require-prices`, `--max-cost-usd`), and
//! what they can cost at most (`runner run --dry-run`).
//!
//! The cost bound counts input tokens with the model family's tokenizer (o200k_base or
//! cl100k_base, as OpenAI's tiktoken maps model names) and bounds everything the model adds
//! to the conversation by what the scenario allows it:
//!
//! - every turn makes at most `max_tool_rounds + 1` requests (each tool round, then the
//!   request that must answer);
//! - every request writes at most `max_tokens` tokens, which every later request reads again;
//! - a tool round's results are assumed no longer than the request that asked for them plus
//!   [`TOOL_RESULT_ALLOWANCE`] tokens (true of the built-in tools: a reversed text is as long
//!   as the text, the others return short objects);
//! - every message costs [`MESSAGE_OVERHEAD`] tokens of framing and every request
//!   [`REPLY_PRIMING`] more (OpenAI's documented chat format); the tool schemas are counted as
//!   their JSON.
//!
//! Without `max_tokens` a scenario's output has no bound; the dry run says so instead of
//! guessing.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::pricing::PriceTable;
use crate::provider::ModelSpec;
use crate::scenario::Scenario;
use crate::settings::{Settings, UsageError};
use crate::tools::ToolRegistry;

/// Tokens of framing per message in OpenAI's chat format.
pub(crate) const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens that prime every reply.
pub(crate) const REPLY_PRIMING: u64 = 3;
/// Tokens a tool round's results may add beyond the size of the request for them.
pub(crate) const TOOL_RESULT_ALLOWANCE: u64 = 100;

/// One slice of the run matrix: `index` of `count`, 1-based (`--shard I/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the run at `position` of the whole matrix belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (index, count) = text.split_once('/').ok_or("expected I/N, e.g. 2/4")?;
        let index: usize = index.trim().parse().map_err(|_| format!("`{index}` is not a shard number"))?;
        let count: usize = count.trim().parse().map_err(|_| format!("`{count}` is not a shard count"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard {index}/{count}: I must be between 1 and N"));
        }
        Ok(Shard { index, count })
    }
}

/// What the command line asks of the matrix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatrixOptions<'a> {
    /// `-m`: every scenario on each; empty: each scenario's own model, else the default.
    pub models: &'a [String],
    pub repeat: u32,
    /// Only scenarios whose name contains this.
    pub filter: Option<&'a str>,
    pub shard: Option<Shard>,
}

/// The batch to run: every run in a fixed order (files, scenarios within them, models,
/// repetitions), so every shard of a CI matrix computes the same one.
#[derive(Debug)]
pub(crate) struct Plan {
    pub runs: Vec<Planned>,
    /// The models of `runs` without a price, each once, in order.
    pub unpriced: Vec<String>,
    pub shard: Option<Shard>,
}

impl Plan {
    /// The matrix of `scenarios` as `options` ask.
    pub(crate) fn new(settings: &Settings, mut scenarios: Vec<Scenario>, options: MatrixOptions<'_>) -> Result<Self, UsageError> {
        if let Some(filter) = options.filter {
            scenarios.retain(|s| s.name.contains(filter));
            if scenarios.is_empty() {
                return Err(UsageError(format!("no scenario name contains `{filter}`")));
            }
        }
        let mut runs = Vec::new();
        for scenario in scenarios.into_iter().map(Arc::new) {
            let own = [scenario.model.clone().unwrap_or_else(|| settings.default_model.clone())];
            let models = if options.models.is_empty() { &own[..] } else { options.models };
            for text in models {
                let spec = settings.parse_model(text)?;
                for repetition in 1..=options.repeat {
                    runs.push(Planned { scenario: scenario.clone(), spec: spec.clone(), repetition });
                }
            }
        }
        if let Some(shard) = options.shard {
            runs = runs.into_iter().enumerate().filter(|(position, _)| shard.contains(*position)).map(|(_, run)| run).collect();
        }
        check_log_names(&runs)?;
        let unpriced = unpriced_models(&runs, &settings.prices);
        Ok(Self { runs, unpriced, shard: options.shard })
    }

    /// Refuses a batch with unpriced models when prices are required or a budget must be
    /// enforced.
    pub(crate) fn check_prices(&self, require_prices: bool, budget: bool) -> Result<(), UsageError> {
        if self.unpriced.is_empty() || !(require_prices || budget) {
            return Ok(());
        }
        let why = if require_prices { "--require-prices" } else { "--max-cost-usd cannot be enforced" };
        Err(UsageError(format!("no known price for {} ({why}); add prices with --prices FILE or runner.yaml", self.unpriced.join(", "))))
    }

    /// The dry run's report: the matrix and its cost bound.
    pub(crate) fn render_dry_run(&self, prices: &PriceTable) -> String {
        render_dry_run(&self.runs, prices, &self.unpriced, self.shard)
    }
}

/// Two models whose names make the same log file name (`a:b` and `a_b`) would overwrite each
/// other's logs: refused.
fn check_log_names(runs: &[Planned]) -> Result<(), UsageError> {
    let mut seen: Vec<(String, &ModelSpec)> = Vec::new();
    for run in runs {
        let key = crate::files::safe_file_name(&run.spec.to_string());
        match seen.iter().find(|(k, _)| *k == key) {
            Some((_, other)) if *other != &run.spec => {
                return Err(UsageError(format!("models `{other}` and `{}` make the same log file name `{key}`; run them apart", run.spec)));
            }
            Some(_) => {}
            None => seen.push((key, &run.spec)),
        }
    }
    Ok(())
}

/// One run of the matrix, before its model is resolved.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub scenario: Arc<Scenario>,
    pub spec: ModelSpec,
    /// 1-based.
    pub repetition: u32,
}

/// The models of `matrix` that have no price, each once, in order.
fn unpriced_models(matrix: &[Planned], prices: &PriceTable) -> Vec<String> {
    let mut seen = BTreeSet::new();
    matrix
        .iter()
        .filter(|run| prices.get(&run.spec.provider, &run.spec.name).is_none())
        .map(|run| run.spec.to_string())
        .filter(|model| seen.insert(model.clone()))
        .collect()
}

/// The tokenizer used to count a model's input: OpenAI's mapping of model names, o200k_base
/// (the current one) for models it does not know.
pub(crate) struct Counter {
    pub name: &'static str,
    /// Exact for this model, or an approximation.
    pub exact: bool,
    bpe: &'static tiktoken_rs::CoreBPE,
}

impl Counter {
    pub(crate) fn for_model(spec: &ModelSpec) -> Self {
        use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};
        let known = if spec.provider == "openai" { get_tokenizer(&spec.name) } else { None };
        match known {
            Some(Tokenizer::Cl100kBase) => Self { name: "cl100k_base", exact: true, bpe: tiktoken_rs::cl100k_base_singleton() },
            Some(_) => Self { name: "o200k_base", exact: true, bpe: tiktoken_rs::o200k_base_singleton() },
            None => Self { name: "o200k_base", exact: false, bpe: tiktoken_rs::o200k_base_singleton() },
        }
    }

    pub(crate) fn count(&self, text: &str) -> u64 {
        self.bpe.encode_ordinary(text).len() as u64
    }
}

/// Upper bound of one run's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    pub requests: u64,
    pub input_tokens: u64,
    /// `None`: the scenario sets no `max_tokens`, so nothing bounds the output.
    pub output_tokens: Option<u64>,
}

/// The most tokens one run of `scenario` can use, counted with `counter`.
pub(crate) fn bound(scenario: &Scenario, registry: &ToolRegistry, counter: &Counter) -> Bound {
    let specs = registry.specs(&scenario.tools);
    let tools = if specs.is_empty() { 0 } else { counter.count(&serde_json::to_string(&specs).unwrap_or_default()) };
    let message = |text: &str| MESSAGE_OVERHEAD + counter.count(text);
    let max_out = scenario.sampling.max_tokens.map(u64::from);
    let per_output = max_out.unwrap_or(0) + MESSAGE_OVERHEAD;
    let per_round = per_output + TOOL_RESULT_ALLOWANCE;

    let mut fixed = tools + REPLY_PRIMING + scenario.system.as_deref().map_or(0, message);
    let (mut requests, mut input, mut outputs, mut rounds) = (0u64, 0u64, 0u64, 0u64);
    for turn in &scenario.turns {
        fixed += message(&turn.user);
        for round in 0..=u64::from(scenario.max_tool_rounds) {
            input += fixed + outputs * per_output + rounds * per_round;
            requests += 1;
            outputs += 1;
            if round < u64::from(scenario.max_tool_rounds) {
                rounds += 1;
            }
        }
    }
    Bound { requests, input_tokens: input, output_tokens: max_out.map(|max| max * requests) }
}

/// The dry run's report: the matrix (a row per scenario and model) and the cost bound;
/// `unpriced` are the matrix's models without a price ([`unpriced_models`]).
fn render_dry_run(matrix: &[Planned], prices: &PriceTable, unpriced: &[String], shard: Option<Shard>) -> String {
    let registry = ToolRegistry::builtin();
    let mut rows = vec![["scenario", "model", "runs", "requests<=", "input_tok<=", "output_tok<=", "cost_usd<="].map(String::from).to_vec()];
    let mut groups: Vec<(&Planned, u64)> = Vec::new();
    for run in matrix {
        match groups.last_mut() {
            Some((first, count)) if Arc::ptr_eq(&first.scenario, &run.scenario) && first.spec == run.spec => *count += 1,
            _ => groups.push((run, 1)),
        }
    }
    let mut total_usd = 0.0;
    let mut unbounded = false;
    let mut counters: Vec<(String, &'static str, bool)> = Vec::new();
    for (run, runs) in &groups {
        let counter = Counter::for_model(&run.spec);
        let model = run.spec.to_string();
        if !counters.iter().any(|(m, ..)| *m == model) {
            counters.push((model.clone(), counter.name, counter.exact));
        }
        let one = bound(&run.scenario, &registry, &counter);
        let price = prices.get(&run.spec.provider, &run.spec.name);
        let free = price.is_some_and(|entry| entry.price.input == 0.0 && entry.price.output == 0.0);
        let cost = match (price, one.output_tokens) {
            (None, _) => "unpriced".to_owned(),
            (Some(_), None) if free => format!("{:.6}", 0.0),
            (Some(_), None) => {
                unbounded = true;
                "no bound".to_owned()
            }
            (Some(entry), Some(output)) => {
                let usage = crate::usage::Usage::new(one.input_tokens * runs, output * runs);
                let usd = entry.price.cost(&usage).total_usd;
                total_usd += usd;
                format!("{usd:.6}")
            }
        };
        rows.push(vec![
            run.scenario.name.clone(),
            model,
            runs.to_string(),
            (one.requests * runs).to_string(),
            // Without max_tokens the model's own replies, read again by later requests, have
            // no bound either.
            one.output_tokens.map_or_else(|| "no bound".to_owned(), |_| (one.input_tokens * runs).to_string()),
            one.output_tokens.map_or_else(|| "no max_tokens".to_owned(), |t| (t * runs).to_string()),
            cost,
        ]);
    }
    let scenarios: BTreeSet<&str> = matrix.iter().map(|r| r.scenario.name.as_str()).collect();
    let shard = shard.map_or_else(String::new, |s| format!(", shard {}/{}", s.index, s.count));
    let mut out = format!("dry run: {} run(s) of {} scenario(s) on {} model(s){shard}; no model is called\n\n", matrix.len(), scenarios.len(), counters.len());
    out.push_str(&crate::report::render_table(&rows, &[0, 1]));
    out.push('\n');
    for (model, tokenizer, exact) in &counters {
        let how = if *exact { "" } else { " (an approximation: not this model's own tokenizer)" };
        out.push_str(&format!("tokens of {model}: counted with {tokenizer}{how}\n"));
    }
    out.push_str(&format!("cost upper bound: ${total_usd:.6}"));
    if unbounded {
        out.push_str(" for the scenarios that set max_tokens; the others have no bound (set max_tokens to bound them)");
    }
    out.push('\n');
    if !unpriced.is_empty() {
        out.push_str(&format!("unpriced: {} (counted as $0)\n", unpriced.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        let registry = ToolRegistry::builtin();
        let check_model = |_: &str| Ok(());
        let validator = crate::scenario::Validator { tools: &registry, check_model: &check_model };
        crate::scenario::parse_scenarios(yaml, "t.yaml", "t", &validator).unwrap().remove(0)
    }

    #[test]
    fn bound_follows_the_conversation_it_allows() {
        let counter = Counter::for_model(&ModelSpec { provider: "openai".into(), name: "gpt-4o-mini".into() });
        assert_eq!((counter.name, counter.exact), ("o200k_base", true));
        let s = scenario("name: a\nsystem: Be brief.\nmax_tokens: 10\nmax_tool_rounds: 1\ntools: [add_numbers]\nturns:\n  - user: Add 2 and 3\n  - user: Now 4 and 5\n");
        let b = bound(&s, &ToolRegistry::builtin(), &counter);
        let tools = counter.count(&serde_json::to_string(&ToolRegistry::builtin().specs(&s.tools)).unwrap());
        let system = MESSAGE_OVERHEAD + counter.count("Be brief.");
        let (u1, u2) = (MESSAGE_OVERHEAD + counter.count("Add 2 and 3"), MESSAGE_OVERHEAD + counter.count("Now 4 and 5"));
        let base = tools + REPLY_PRIMING + system;
        let out = 10 + MESSAGE_OVERHEAD;
        let round = out + TOOL_RESULT_ALLOWANCE;
        // Turn 1: a request with nothing before it, then one after a tool round.
        // Turn 2: the same, after turn 1's two outputs and its one round.
        let expected = (base + u1) + (base + u1 + out + round) + (base + u1 + u2 + 2 * out + round) + (base + u1 + u2 + 3 * out + 2 * round);
        assert_eq!(b, Bound { requests: 4, input_tokens: expected, output_tokens: Some(40) });
    }

    #[test]
    fn no_max_tokens_no_output_bound() {
        let counter = Counter::for_model(&ModelSpec { provider: "local".into(), name: "smollm2-135m".into() });
        assert!(!counter.exact);
        let s = scenario("name: a\nturns:\n  - user: hi\n");
        let b = bound(&s, &ToolRegistry::builtin(), &counter);
        assert_eq!(b.output_tokens, None);
        assert_eq!(b.requests, u64::from(s.max_tool_rounds) + 1);
    }

    #[test]
    fn older_models_count_with_cl100k() {
        let counter = Counter::for_model(&ModelSpec { provider: "openai".into(), name: "gpt-3.5-turbo".into() });
        assert_eq!(counter.name, "cl100k_base");
        // "hello world" is two tokens in both vocabularies.
        assert_eq!(counter.count("hello world"), 2);
    }
}
