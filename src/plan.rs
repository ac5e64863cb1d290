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

use crate::message::Message;
use crate::pricing::PriceTable;
use crate::provider::cache::{self, RequestCache};
use crate::provider::{CompletionRequest, ModelSpec, Provider, ProviderConfig};
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
/// repetitions), so every shard of a CI matrix computes the same one. The runs themselves
/// are made as they are needed, never stored: 10,000 scenarios x `--repeat 1000` is ten
/// thousand cells, not ten million runs.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Every scenario on every model it runs on, in matrix order.
    pub cells: Vec<Cell>,
    /// Repetitions of every cell.
    pub repeat: u32,
    pub shard: Option<Shard>,
    /// The models of this shard's runs without a price, each once, in order (judges too).
    pub unpriced: Vec<String>,
    /// The judges the scenarios' `expect.judge` checks name, each once: as written, and parsed.
    pub judges: Vec<(String, ModelSpec)>,
}

/// One scenario on one model; its runs are its repetitions.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub scenario: Arc<Scenario>,
    pub spec: ModelSpec,
}

impl Plan {
    /// The matrix of `scenarios` as `options` ask.
    pub(crate) fn new(
        settings: &Settings,
        mut scenarios: Vec<Scenario>,
        options: MatrixOptions<'_>,
    ) -> Result<Self, UsageError> {
        if let Some(filter) = options.filter {
            scenarios.retain(|s| s.name.contains(filter));
            if scenarios.is_empty() {
                return Err(UsageError(format!("no scenario name contains `{filter}`")));
            }
        }
        let mut cells = Vec::new();
        for scenario in scenarios.into_iter().map(Arc::new) {
            let own = [scenario.model.clone().unwrap_or_else(|| settings.default_model.clone())];
            let models = if options.models.is_empty() { &own[..] } else { options.models };
            for text in models {
                cells.push(Cell { scenario: scenario.clone(), spec: settings.parse_model(text)? });
            }
        }
        check_log_names(&cells)?;
        let mut plan =
            Self { cells, repeat: options.repeat, shard: options.shard, unpriced: Vec::new(), judges: Vec::new() };
        let playing: Vec<&Cell> =
            plan.cells.iter().enumerate().filter(|(i, _)| plan.runs_of(*i) > 0).map(|(_, cell)| cell).collect();
        let mut judges: Vec<(String, ModelSpec)> = Vec::new();
        for text in playing
            .iter()
            .flat_map(|cell| &cell.scenario.turns)
            .filter_map(|turn| turn.expect.judge.as_ref())
            .map(|judge| &judge.model)
        {
            if !judges.iter().any(|(known, _)| known == text) {
                judges.push((text.clone(), settings.parse_model(text)?));
            }
        }
        // The models of this shard's runs, then their judges, each once.
        let mut unpriced = Vec::new();
        let mut seen = BTreeSet::new();
        for spec in playing.iter().map(|cell| &cell.spec).chain(judges.iter().map(|(_, spec)| spec)) {
            if settings.prices.get(&spec.provider, &spec.name).is_none() && seen.insert(spec.to_string()) {
                unpriced.push(spec.to_string());
            }
        }
        plan.unpriced = unpriced;
        plan.judges = judges;
        Ok(plan)
    }

    /// This shard's runs in matrix order, as (cell index, repetition from 1).
    pub(crate) fn runs(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let repeat = self.repeat;
        (0..self.cells.len())
            .flat_map(move |cell| (1..=repeat).map(move |repetition| (cell, repetition)))
            .enumerate()
            .filter(|(position, _)| self.shard.is_none_or(|shard| shard.contains(*position)))
            .map(|(_, run)| run)
    }

    /// How many of cell `cell`'s runs belong to this shard.
    pub(crate) fn runs_of(&self, cell: usize) -> u64 {
        let repeat = u64::from(self.repeat);
        let start = cell as u64 * repeat;
        match self.shard {
            None => repeat,
            Some(shard) => {
                // Positions p < x with p % count == index - 1.
                let (count, rest) = (shard.count as u64, shard.index as u64 - 1);
                let below = |x: u64| if x > rest { (x - rest - 1) / count + 1 } else { 0 };
                below(start + repeat) - below(start)
            }
        }
    }

    /// How many runs this shard has.
    pub(crate) fn len(&self) -> u64 {
        (0..self.cells.len()).map(|cell| self.runs_of(cell)).sum()
    }

    /// Refuses a batch with unpriced models when prices are required or a budget must be
    /// enforced.
    pub(crate) fn check_prices(&self, require_prices: bool, budget: bool) -> Result<(), UsageError> {
        if self.unpriced.is_empty() || !(require_prices || budget) {
            return Ok(());
        }
        let why = if require_prices { "--require-prices" } else { "--max-cost-usd cannot be enforced" };
        Err(UsageError(format!(
            "no known price for {} ({why}); add prices with --prices FILE or runner.yaml",
            self.unpriced.join(", ")
        )))
    }
}

/// Two models whose names make the same log file name (`a:b` and `a_b`) would overwrite each
/// other's logs: refused.
fn check_log_names(cells: &[Cell]) -> Result<(), UsageError> {
    let mut seen: Vec<(String, &ModelSpec)> = Vec::new();
    for run in cells {
        let key = crate::files::safe_file_name(&run.spec.to_string());
        match seen.iter().find(|(k, _)| *k == key) {
            Some((_, other)) if *other != &run.spec => {
                return Err(UsageError(format!(
                    "models `{other}` and `{}` make the same log file name `{key}`; run them apart",
                    run.spec
                )));
            }
            Some(_) => {}
            None => seen.push((key, &run.spec)),
        }
    }
    Ok(())
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
            Some(Tokenizer::Cl100kBase) => {
                Self { name: "cl100k_base", exact: true, bpe: tiktoken_rs::cl100k_base_singleton() }
            }
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

/// What the dry run looks up in a request cache: the cache, where each provider sends (the
/// base URL is part of a key), and `--seed`.
pub(crate) struct CacheLookup<'a> {
    pub cache: &'a RequestCache,
    pub providers: &'a ProviderConfig,
    pub seed: Option<u64>,
}

impl CacheLookup<'_> {
    /// How many of `cell`'s turn-opening requests (one per turn of each run) the cache would
    /// answer. A turn's first request is known when every turn before it was answered from
    /// the cache with text alone; a turn with tool calls needs its tools' results, unknown
    /// before they run, so the count stops there.
    fn answerable(&self, cell: &Cell, repetitions: &[u32], repeated: bool, registry: &ToolRegistry) -> u64 {
        let scenario = &cell.scenario;
        let base_url = match cell.spec.provider.as_str() {
            "local" => None,
            provider => self.providers.endpoints.get(provider).and_then(|e| self.providers.shown_base_url(e)),
        };
        let provider = crate::provider::cache::Offline { base_url };
        let specs = registry.with(&scenario.declared).specs(&scenario.tools);
        let mut sampling = scenario.sampling;
        sampling.seed = sampling.seed.or(self.seed);
        let mut hits = 0;
        for &repetition in repetitions {
            let mut messages: Vec<Message> =
                scenario.system.iter().map(|content| Message::System { content: content.clone() }).collect();
            for turn in &scenario.turns {
                messages.push(Message::User { content: turn.user.clone() });
                let request = CompletionRequest {
                    model: &cell.spec.name,
                    messages: &messages,
                    tools: &specs,
                    sampling: &sampling,
                    tool_choice: None,
                    on_text: None,
                };
                let (key, _) = cache::key(&cell.spec, provider.base_url(), &request, repeated.then_some(repetition));
                let Some(entry) = self.cache.read(&key) else { break };
                hits += 1;
                if !entry.response.tool_calls.is_empty() {
                    break;
                }
                messages.push(Message::Assistant {
                    content: Some(entry.response.content.unwrap_or_default()),
                    tool_calls: Vec::new(),
                });
            }
        }
        hits
    }
}

impl Plan {
    /// The dry run's report: the matrix (a row per scenario and model) and the cost bound.
    pub(crate) fn render_dry_run(
        &self,
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
        for (i, cell) in self.cells.iter().enumerate() {
            let runs = self.runs_of(i);
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
                let repetitions: Vec<u32> = self.runs().filter(|&(c, _)| c == i).map(|(_, r)| r).collect();
                let hits = lookup.answerable(cell, &repetitions, self.repeat > 1, tools);
                let turns = cell.scenario.turns.len() as u64 * runs;
                cached += hits;
                openings += turns;
                row.push(format!("{hits}/{turns}"));
            }
            rows.push(row);
        }
        let shard = self.shard.map_or_else(String::new, |s| format!(", shard {}/{}", s.index, s.count));
        let mut out = format!(
            "dry run: {} run(s) of {} scenario(s) on {} model(s){shard}; no model is called\n\n",
            self.len(),
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
        if !self.unpriced.is_empty() {
            out.push_str(&format!("unpriced: {} (counted as $0)\n", self.unpriced.join(", ")));
        }
        if let Some(lookup) = cache {
            out.push_str(&format!(
                "cache: {cached} of {openings} turn-opening requests are in {} (a turn's later requests carry tool results, known only once the tools run)\n",
                lookup.cache.dir.display()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        let registry = ToolRegistry::builtin();
        let check_model = |_: &str| Ok(());
        let validator = crate::scenario::Validator::new(&registry, &check_model);
        crate::scenario::parse_scenarios(yaml, "t.yaml", "t", &validator).unwrap().remove(0)
    }

    #[test]
    fn bound_follows_the_conversation_it_allows() {
        let counter = Counter::for_model(&ModelSpec { provider: "openai".into(), name: "gpt-4o-mini".into() });
        assert_eq!((counter.name, counter.exact), ("o200k_base", true));
        let s = scenario(
            "name: a\nsystem: Be brief.\nmax_tokens: 10\nmax_tool_rounds: 1\ntools: [add_numbers]\nturns:\n  - user: Add 2 and 3\n  - user: Now 4 and 5\n",
        );
        let b = bound(&s, &ToolRegistry::builtin(), &counter);
        let tools = counter.count(&serde_json::to_string(&ToolRegistry::builtin().specs(&s.tools)).unwrap());
        let system = MESSAGE_OVERHEAD + counter.count("Be brief.");
        let (u1, u2) =
            (MESSAGE_OVERHEAD + counter.count("Add 2 and 3"), MESSAGE_OVERHEAD + counter.count("Now 4 and 5"));
        let base = tools + REPLY_PRIMING + system;
        let out = 10 + MESSAGE_OVERHEAD;
        let round = out + TOOL_RESULT_ALLOWANCE;
        // Turn 1: a request with nothing before it, then one after a tool round.
        // Turn 2: the same, after turn 1's two outputs and its one round.
        let expected = (base + u1)
            + (base + u1 + out + round)
            + (base + u1 + u2 + 2 * out + round)
            + (base + u1 + u2 + 3 * out + 2 * round);
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
    fn shards_split_the_lazy_matrix_exactly() {
        let cells: Vec<Cell> = (0..7)
            .map(|i| Cell {
                scenario: Arc::new(scenario(&format!("name: s{i}\nturns:\n  - user: hi\n"))),
                spec: ModelSpec { provider: "openai".into(), name: "m".into() },
            })
            .collect();
        let whole = Plan { cells: cells.clone(), repeat: 5, shard: None, unpriced: Vec::new(), judges: Vec::new() };
        assert_eq!(whole.len(), 35);
        let mut seen = Vec::new();
        for index in 1..=4 {
            let plan = Plan {
                cells: cells.clone(),
                repeat: 5,
                shard: Some(Shard { index, count: 4 }),
                unpriced: Vec::new(),
                judges: Vec::new(),
            };
            let runs: Vec<(usize, u32)> = plan.runs().collect();
            assert_eq!(runs.len() as u64, plan.len(), "shard {index}");
            for cell in 0..cells.len() {
                assert_eq!(
                    plan.runs_of(cell),
                    runs.iter().filter(|(c, _)| *c == cell).count() as u64,
                    "shard {index}, cell {cell}"
                );
            }
            seen.extend(runs);
        }
        seen.sort_unstable();
        assert_eq!(seen, whole.runs().collect::<Vec<_>>(), "the shards cover every run once");
    }

    #[test]
    fn older_models_count_with_cl100k() {
        let counter = Counter::for_model(&ModelSpec { provider: "openai".into(), name: "gpt-3.5-turbo".into() });
        assert_eq!(counter.name, "cl100k_base");
        // "hello world" is two tokens in both vocabularies.
        assert_eq!(counter.count("hello world"), 2);
    }
}
