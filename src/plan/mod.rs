//! The run matrix before anything runs: which runs (scenarios, filter, models, repetitions,
//! shard), whether their prices allow the batch (`--require-prices`, `--max-cost-usd`), and
//! what they can cost at most (`bound`; the dry run's cache look-up in `lookup`).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::model::ModelSpec;
use crate::provider::ModelError;
use crate::scenario::Scenario;
use crate::settings::Settings;

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

/// A `--shard` that is not `I/N` with I from 1 to N.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("expected I/N, e.g. 2/4")]
    NoSlash,
    #[error("`{0}` is not a shard number")]
    Index(String),
    #[error("`{0}` is not a shard count")]
    Count(String),
    #[error("shard {0}/{1}: I must be between 1 and N")]
    OutOfRange(usize, usize),
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, ShardError> {
        let (index, count) = text.split_once('/').ok_or(ShardError::NoSlash)?;
        let index: usize = index.trim().parse().map_err(|_| ShardError::Index(index.to_owned()))?;
        let count: usize = count.trim().parse().map_err(|_| ShardError::Count(count.to_owned()))?;
        if count == 0 || index == 0 || index > count {
            return Err(ShardError::OutOfRange(index, count));
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
    /// The models that help play and grade the runs, each once: the judges the scenarios'
    /// `judge` checks name and their simulated users' models.
    pub helpers: Vec<ModelSpec>,
}

/// One scenario on one model; its runs are its repetitions.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub scenario: Arc<Scenario>,
    pub spec: ModelSpec,
}

/// Why a batch cannot be planned: the user's to fix (exit code 2), nothing run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("no scenario name contains `{0}`")]
    NoMatch(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("no known price for {models} ({why}); add prices with --prices FILE or runner.yaml")]
    Unpriced { models: String, why: &'static str },
    #[error("models `{first}` and `{second}` make the same log file name `{key}`; run them apart")]
    SameLogName { first: ModelSpec, second: ModelSpec, key: String },
}

impl PlanError {
    /// The process exit code this error ends a command with.
    pub(crate) fn code(&self) -> u8 {
        crate::exit::EXIT_USAGE
    }
}

impl Plan {
    /// The matrix of `scenarios` as `options` ask.
    pub(crate) fn new(
        settings: &Settings,
        mut scenarios: Vec<Scenario>,
        options: MatrixOptions<'_>,
    ) -> Result<Self, PlanError> {
        if let Some(filter) = options.filter {
            scenarios.retain(|s| s.name.contains(filter));
            if scenarios.is_empty() {
                return Err(PlanError::NoMatch(filter.to_owned()));
            }
        }
        let asked = options.models.iter().map(|text| settings.parse_model(text)).collect::<Result<Vec<_>, _>>()?;
        let default = match asked.is_empty() && scenarios.iter().any(|s| s.model.is_none()) {
            true => Some(settings.parse_model(&settings.default_model)?),
            false => None,
        };
        let mut cells = Vec::new();
        for scenario in scenarios.into_iter().map(Arc::new) {
            let own: Vec<ModelSpec> = scenario.model.clone().or_else(|| default.clone()).into_iter().collect();
            for spec in if asked.is_empty() { &own } else { &asked } {
                cells.push(Cell { scenario: scenario.clone(), spec: spec.clone() });
            }
        }
        check_log_names(&cells)?;
        let mut plan =
            Self { cells, repeat: options.repeat, shard: options.shard, unpriced: Vec::new(), helpers: Vec::new() };
        let playing: Vec<&Cell> =
            plan.cells.iter().enumerate().filter(|(i, _)| plan.runs_of(*i) > 0).map(|(_, cell)| cell).collect();
        let mut helpers: Vec<ModelSpec> = Vec::new();
        for scenario in playing.iter().map(|cell| &cell.scenario) {
            let judges =
                scenario.turns.iter().map(|turn| &turn.expect).chain(scenario.expect.iter().map(|e| &e.checks));
            let judges = judges.filter_map(|expect| expect.judge.as_ref()).map(|judge| &judge.model);
            for spec in judges.chain(scenario.simulate.iter().map(|s| &s.model)) {
                if !helpers.contains(spec) {
                    helpers.push(spec.clone());
                }
            }
        }
        // The models of this shard's runs, then their helpers, each once.
        let mut unpriced = Vec::new();
        let mut seen = BTreeSet::new();
        for spec in playing.iter().map(|cell| &cell.spec).chain(&helpers) {
            if settings.prices.get(&spec.provider, &spec.name).is_none() && seen.insert(spec.to_string()) {
                unpriced.push(spec.to_string());
            }
        }
        plan.unpriced = unpriced;
        plan.helpers = helpers;
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
    pub(crate) fn check_prices(&self, require_prices: bool, budget: bool) -> Result<(), PlanError> {
        if self.unpriced.is_empty() || !(require_prices || budget) {
            return Ok(());
        }
        let why = if require_prices { "--require-prices" } else { "--max-cost-usd cannot be enforced" };
        Err(PlanError::Unpriced { models: self.unpriced.join(", "), why })
    }
}

/// Two models whose names make the same log file name (`a:b` and `a_b`) would overwrite each
/// other's logs: refused.
fn check_log_names(cells: &[Cell]) -> Result<(), PlanError> {
    let mut seen: Vec<(String, &ModelSpec)> = Vec::new();
    for run in cells {
        let key = crate::files::safe_file_name(&run.spec.to_string());
        match seen.iter().find(|(k, _)| *k == key) {
            Some((_, other)) if *other != &run.spec => {
                return Err(PlanError::SameLogName { first: (*other).clone(), second: run.spec.clone(), key });
            }
            Some(_) => {}
            None => seen.push((key, &run.spec)),
        }
    }
    Ok(())
}

mod bound;
mod lookup;

pub(crate) use bound::{Counter, bound};
pub(crate) use lookup::CacheLookup;

#[cfg(test)]
pub(crate) fn test_scenario(yaml: &str) -> Scenario {
    let registry = crate::tools::ToolRegistry::builtin();
    let validator = crate::scenario::Validator::new(&registry, &crate::scenario::any_model);
    crate::scenario::parse_scenarios(yaml, "t.yaml", "t", &validator).unwrap().remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        test_scenario(yaml)
    }

    #[test]
    fn shards_split_the_lazy_matrix_exactly() {
        let cells: Vec<Cell> = (0..7)
            .map(|i| Cell {
                scenario: Arc::new(scenario(&format!("name: s{i}\nturns:\n  - user: hi\n"))),
                spec: ModelSpec { provider: "openai".into(), name: "m".into() },
            })
            .collect();
        let whole = Plan { cells: cells.clone(), repeat: 5, shard: None, unpriced: Vec::new(), helpers: Vec::new() };
        assert_eq!(whole.len(), 35);
        let mut seen = Vec::new();
        for index in 1..=4 {
            let plan = Plan {
                cells: cells.clone(),
                repeat: 5,
                shard: Some(Shard { index, count: 4 }),
                unpriced: Vec::new(),
                helpers: Vec::new(),
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
}
