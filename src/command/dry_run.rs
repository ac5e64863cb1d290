//! `runner run --dry-run`: the matrix (a row per scenario and model) and its cost bound, as a
//! table.

use std::collections::BTreeSet;

use crate::plan::{CacheLookup, Counter, Plan, bound};
use crate::pricing::PriceTable;
use crate::tools::ToolRegistry;

/// The dry run's report: the matrix (a row per scenario and model) and the cost bound.
pub(crate) fn render(
    plan: &Plan,
    prices: &PriceTable,
    tools: &ToolRegistry,
    cache: Option<&CacheLookup<'_>>,
) -> String {
    let mut header = vec!["scenario", "model", "runs", "requests<=", "input_tok<=", "output_tok<=", "cost_usd<="];
    if cache.is_some() {
        header.push("cached");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    let (mut cached, mut openings) = (0, 0);
    let mut total_usd = 0.0;
    let (mut bounded, mut unbounded) = (false, false);
    let mut counters: Vec<(String, &'static str, bool)> = Vec::new();
    let mut scenarios = BTreeSet::new();
    for (i, cell) in plan.cells.iter().enumerate() {
        let runs = plan.runs_of(i);
        if runs == 0 {
            continue;
        }
        scenarios.insert(cell.scenario.name.as_str());
        let counter = Counter::for_model(&cell.spec);
        let model = cell.spec.to_string();
        if !counters.iter().any(|(m, ..)| *m == model) {
            counters.push((model.clone(), counter.name, counter.exact));
        }
        let one = bound(&cell.scenario, &tools.with(&cell.scenario.declared), &counter);
        let price = prices.get(&cell.spec.provider, &cell.spec.name);
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
                bounded = true;
                format!("{usd:.6}")
            }
        };
        let mut row = vec![
            cell.scenario.name.escape_debug().to_string(),
            model,
            runs.to_string(),
            (one.requests * runs).to_string(),
            // Without max_tokens the model's own replies, read again by later requests,
            // have no bound either.
            one.output_tokens.map_or_else(|| "no bound".to_owned(), |_| (one.input_tokens * runs).to_string()),
            one.output_tokens.map_or_else(|| "no max_tokens".to_owned(), |t| (t * runs).to_string()),
            cost,
        ];
        if let Some(lookup) = cache {
            let repetitions: Vec<u32> = plan.runs().filter(|&(c, _)| c == i).map(|(_, r)| r).collect();
            let hits = lookup.answerable(cell, &repetitions, plan.repeat > 1, tools);
            let turns = cell.scenario.turns.len() as u64 * runs;
            cached += hits;
            openings += turns;
            row.push(format!("{hits}/{turns}"));
        }
        rows.push(row);
    }
    let shard = plan.shard.map_or_else(String::new, |s| format!(", shard {}/{}", s.index, s.count));
    let mut out = format!(
        "dry run: {} run(s) of {} scenario(s) on {} model(s){shard}; no model is called\n\n",
        plan.len(),
        scenarios.len(),
        counters.len()
    );
    out.push_str(&crate::report::render_table(&rows, &[0, 1]));
    out.push('\n');
    for (model, tokenizer, exact) in &counters {
        let how = if *exact { "" } else { " (an approximation: not this model's own tokenizer)" };
        out.push_str(&format!("tokens of {model}: counted with {tokenizer}{how}\n"));
    }
    if unbounded && !bounded {
        out.push_str("cost upper bound: none (no scenario sets max_tokens; set it to bound the output)");
    } else {
        out.push_str(&format!("cost upper bound: ${total_usd:.6}"));
        if unbounded {
            out.push_str(
                " for the scenarios that set max_tokens; the others have no bound (set max_tokens to bound them)",
            );
        }
    }
    out.push('\n');
    if !plan.unpriced.is_empty() {
        out.push_str(&format!("unpriced: {} (counted as $0)\n", plan.unpriced.join(", ")));
    }
    if let Some(lookup) = cache {
        out.push_str(&format!(
            "cache: {cached} of {openings} turn-opening requests are in {} (a turn's later requests carry tool results, known only once the tools run)\n",
            lookup.cache.dir.display()
        ));
    }
    out
}
