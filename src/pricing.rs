//! Prices per million tokens and the cost arithmetic.
//!
//! A built-in table covers the current models of every built-in provider; a user price file (`--prices FILE`) and the
//! `prices:` section of `runner.yaml` add entries or override them. A model with no entry is
//! *unpriced*: its cost is recorded as 0 and flagged as unpriced everywhere it is shown.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// (model, input, cached input, cache write input, output), USD per million tokens.
type Row = (&'static str, f64, Option<f64>, Option<f64>, f64);

/// Built-in prices read from one vendor's page on one date.
struct Sheet {
    provider: &'static str,
    source: &'static str,
    /// When the prices were read from `source` (YYYY-MM-DD).
    date: &'static str,
    models: &'static [Row],
}

/// The built-in table. Prices change: `runner models` shows each entry's source and date, and
/// `prices:` in runner.yaml or `--prices FILE` overrides any of them.
const SHEETS: &[Sheet] = &[
    Sheet {
        provider: "openai",
        source: "https://platform.openai.com/docs/pricing (standard tier)",
        date: "2025-08-07",
        models: &[
            ("gpt-5", 1.25, Some(0.125), None, 10.00),
            ("gpt-5-mini", 0.25, Some(0.025), None, 2.00),
            ("gpt-5-nano", 0.05, Some(0.005), None, 0.40),
            ("gpt-4.1", 2.00, Some(0.50), None, 8.00),
            ("gpt-4.1-mini", 0.40, Some(0.10), None, 1.60),
            ("gpt-4.1-nano", 0.10, Some(0.025), None, 0.40),
            ("gpt-4o", 2.50, Some(1.25), None, 10.00),
            ("gpt-4o-mini", 0.15, Some(0.075), None, 0.60),
            ("o3", 2.00, Some(0.50), None, 8.00),
            ("o4-mini", 1.10, Some(0.275), None, 4.40),
            ("o3-mini", 1.10, Some(0.55), None, 4.40),
            ("o1", 15.00, Some(7.50), None, 60.00),
            ("gpt-4-turbo", 10.00, None, None, 30.00),
            ("gpt-3.5-turbo", 0.50, None, None, 1.50),
        ],
    },
    Sheet {
        provider: "anthropic",
        // Cache writes at the 5-minute rate (1.25 x input); cache reads 0.1 x input.
        source: "https://docs.claude.com/en/docs/about-claude/pricing",
        date: "2025-11-24",
        models: &[
            ("claude-opus-4-5", 5.00, Some(0.50), Some(6.25), 25.00),
            ("claude-opus-4-1", 15.00, Some(1.50), Some(18.75), 75.00),
            ("claude-opus-4-0", 15.00, Some(1.50), Some(18.75), 75.00),
            ("claude-sonnet-4-5", 3.00, Some(0.30), Some(3.75), 15.00),
            ("claude-sonnet-4-0", 3.00, Some(0.30), Some(3.75), 15.00),
            ("claude-haiku-4-5", 1.00, Some(0.10), Some(1.25), 5.00),
            ("claude-3-5-haiku-latest", 0.80, Some(0.08), Some(1.00), 4.00),
        ],
    },
    Sheet {
        provider: "gemini",
        // Paid tier, prompts up to 200k tokens.
        source: "https://ai.google.dev/gemini-api/docs/pricing",
        date: "2025-11-18",
        models: &[
            ("gemini-3-pro-preview", 2.00, Some(0.20), None, 12.00),
            ("gemini-2.5-pro", 1.25, Some(0.125), None, 10.00),
            ("gemini-2.5-flash", 0.30, Some(0.03), None, 2.50),
            ("gemini-2.5-flash-lite", 0.10, Some(0.01), None, 0.40),
            ("gemini-2.0-flash", 0.10, Some(0.025), None, 0.40),
        ],
    },
    Sheet {
        provider: "mistral",
        source: "https://mistral.ai/pricing#api-pricing",
        date: "2025-10-01",
        models: &[
            ("mistral-large-latest", 2.00, None, None, 6.00),
            ("mistral-medium-latest", 0.40, None, None, 2.00),
            ("mistral-small-latest", 0.10, None, None, 0.30),
            ("codestral-latest", 0.30, None, None, 0.90),
        ],
    },
    Sheet {
        provider: "deepseek",
        // DeepSeek-V3.2-Exp: one price for both; cached input is a cache hit.
        source: "https://api-docs.deepseek.com/quick_start/pricing",
        date: "2025-09-29",
        models: &[
            ("deepseek-chat", 0.28, Some(0.028), None, 0.42),
            ("deepseek-reasoner", 0.28, Some(0.028), None, 0.42),
        ],
    },
    Sheet {
        provider: "groq",
        source: "https://groq.com/pricing",
        date: "2025-10-01",
        models: &[
            ("llama-3.3-70b-versatile", 0.59, None, None, 0.79),
            ("llama-3.1-8b-instant", 0.05, None, None, 0.08),
            ("meta-llama/llama-4-scout-17b-16e-instruct", 0.11, None, None, 0.34),
            ("meta-llama/llama-4-maverick-17b-128e-instruct", 0.20, None, None, 0.60),
        ],
    },
    Sheet {
        provider: "together",
        source: "https://www.together.ai/pricing",
        date: "2025-10-01",
        models: &[
            ("meta-llama/Llama-3.3-70B-Instruct-Turbo", 0.88, None, None, 0.88),
            ("deepseek-ai/DeepSeek-V3", 1.25, None, None, 1.25),
        ],
    },
    Sheet {
        provider: "openrouter",
        // OpenRouter passes its providers' prices through.
        source: "https://openrouter.ai/models",
        date: "2025-11-24",
        models: &[
            ("openai/gpt-4o-mini", 0.15, Some(0.075), None, 0.60),
            ("anthropic/claude-haiku-4.5", 1.00, Some(0.10), Some(1.25), 5.00),
            ("anthropic/claude-sonnet-4.5", 3.00, Some(0.30), Some(3.75), 15.00),
            ("google/gemini-2.5-flash", 0.30, Some(0.03), None, 2.50),
        ],
    },
];

/// Prices of one model in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    /// Price of prompt tokens served from the provider's cache; the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    pub output: f64,
    /// Price of prompt tokens written to the provider's cache (Anthropic's cache creation);
    /// the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_input: Option<f64>,
}

/// One entry of the table: the price, where it came from and when it was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceEntry {
    #[serde(flatten)]
    pub price: Price,
    pub source: String,
    /// When the price was read from its source (YYYY-MM-DD), where known.
    pub date: Option<String>,
}

/// One entry of a price file: the price in USD per million tokens, and optionally where and
/// when it was read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePrice {
    pub input: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    pub output: f64,
    #[serde(default)]
    pub cache_write_input: Option<f64>,
    /// Where the price comes from (a URL, a contract); default: the file it is in.
    #[serde(default)]
    pub source: Option<String>,
    /// When it was read, as YYYY-MM-DD.
    #[serde(default)]
    pub date: Option<String>,
}

impl From<Price> for FilePrice {
    fn from(price: Price) -> Self {
        Self {
            input: price.input,
            cached_input: price.cached_input,
            output: price.output,
            cache_write_input: price.cache_write_input,
            source: None,
            date: None,
        }
    }
}

/// Cost of some usage in USD. `input_usd` includes cached input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub input_usd: f64,
    pub output_usd: f64,
    pub total_usd: f64,
}

/// What was actually spent: a cost and its judges' cost, less what the request cache
/// answered (nothing sent, nothing paid). The one definition of "spent".
pub(crate) fn spent_usd(cost_usd: f64, judge_usd: f64, cached_usd: f64) -> f64 {
    (cost_usd + judge_usd - cached_usd).max(0.0)
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, other: Self) {
        self.input_usd += other.input_usd;
        self.output_usd += other.output_usd;
        self.total_usd += other.total_usd;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        let mut total = Self::default();
        for cost in iter {
            total += cost;
        }
        total
    }
}

impl Price {
    /// Cost of `usage`: each class of input tokens at its own price (neither read from nor
    /// written to the cache x input price + cache reads x cached price + cache writes x cache
    /// write price) + output x output price.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let per_token = |price: f64| price / 1_000_000.0;
        let cached_price = self.cached_input.unwrap_or(self.input);
        let write_price = self.cache_write_input.unwrap_or(self.input);
        let input_usd = usage.uncached_prompt_tokens() as f64 * per_token(self.input)
            + usage.cached_tokens as f64 * per_token(cached_price)
            + usage.cache_write_tokens as f64 * per_token(write_price);
        let output_usd = usage.completion_tokens as f64 * per_token(self.output);
        Cost { input_usd, output_usd, total_usd: input_usd + output_usd }
    }
}

/// Prices keyed by `PROVIDER:MODEL`.
#[derive(Debug, Clone, Default)]
pub(crate) struct PriceTable {
    entries: BTreeMap<String, PriceEntry>,
}

/// A price file: `PROVIDER:MODEL` -> price.
pub(crate) type PriceFile = BTreeMap<String, FilePrice>;

/// A price entry runner cannot use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PriceError {
    #[error("price key `{0}` must be PROVIDER:MODEL (e.g. openai:{0})")]
    Key(String),
    #[error("price of `{key}`: {field} must be a non-negative number, got {value}")]
    Amount { key: String, field: &'static str, value: f64 },
    #[error("price of `{key}`: expected date as YYYY-MM-DD, found `{date}`")]
    Date { key: String, date: String },
}

impl PriceTable {
    /// The built-in table.
    pub(crate) fn builtin() -> Self {
        let entries = SHEETS
            .iter()
            .flat_map(|sheet| {
                sheet.models.iter().map(|&(model, input, cached_input, cache_write_input, output)| {
                    let price = Price { input, cached_input, output, cache_write_input };
                    let entry = PriceEntry {
                        price,
                        source: format!("built-in: {}", sheet.source),
                        date: Some(sheet.date.to_owned()),
                    };
                    (format!("{}:{model}", sheet.provider), entry)
                })
            })
            .chain(std::iter::once((
                "local:smollm2-135m".to_owned(),
                PriceEntry {
                    price: Price { input: 0.0, cached_input: Some(0.0), output: 0.0, cache_write_input: None },
                    source: "embedded model: runs in-process, costs nothing".to_owned(),
                    date: None,
                },
            )))
            .collect();
        Self { entries }
    }

    /// Adds or overrides entries; `source` names where they came from (a file path).
    /// Keys must be `PROVIDER:MODEL`.
    pub(crate) fn extend(&mut self, prices: PriceFile, source: &str) -> Result<(), PriceError> {
        for (key, entry) in prices {
            let price = Price {
                input: entry.input,
                cached_input: entry.cached_input,
                output: entry.output,
                cache_write_input: entry.cache_write_input,
            };
            if !key.contains(':') {
                return Err(PriceError::Key(key));
            }
            let fields = [
                ("input", Some(price.input)),
                ("cached_input", price.cached_input),
                ("output", Some(price.output)),
                ("cache_write_input", price.cache_write_input),
            ];
            for (field, value) in fields {
                if let Some(value) = value
                    && !(value.is_finite() && value >= 0.0)
                {
                    return Err(PriceError::Amount { key, field, value });
                }
            }
            if let Some(date) = &entry.date
                && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err()
            {
                return Err(PriceError::Date { key, date: date.clone() });
            }
            let source = entry.source.unwrap_or_else(|| source.to_owned());
            self.entries.insert(key, PriceEntry { price, source, date: entry.date });
        }
        Ok(())
    }

    /// The entry for `provider:model`; a dated snapshot (`gpt-4o-2024-08-06`) falls back to
    /// its family (`gpt-4o`) when it has no entry of its own.
    pub(crate) fn get(&self, provider: &str, model: &str) -> Option<&PriceEntry> {
        self.entries
            .get(&format!("{provider}:{model}"))
            .or_else(|| self.entries.get(&format!("{provider}:{}", strip_snapshot_date(model)?)))
    }

    /// The provider of a bare model name, when the table knows the model under one provider.
    pub(crate) fn provider_of(&self, model: &str) -> Option<&str> {
        let family = strip_snapshot_date(model);
        self.entries.keys().find_map(|key| {
            let (provider, name) = key.split_once(':')?;
            (name == model || Some(name) == family).then_some(provider)
        })
    }

    /// Every entry, sorted by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &PriceEntry)> {
        self.entries.iter().map(|(key, entry)| (key.as_str(), entry))
    }
}

/// `gpt-4o-2024-08-06` -> `gpt-4o`, `claude-haiku-4-5-20251001` -> `claude-haiku-4-5`;
/// `None` when the name ends in neither `-YYYY-MM-DD` nor `-YYYYMMDD`.
fn strip_snapshot_date(model: &str) -> Option<&str> {
    let digits = |part: &str, width: usize| part.len() == width && part.bytes().all(|b| b.is_ascii_digit());
    let (rest, last) = model.rsplit_once('-')?;
    if digits(last, 8) {
        return Some(rest);
    }
    let (rest, mm) = rest.rsplit_once('-')?;
    let (family, yyyy) = rest.rsplit_once('-')?;
    (digits(yyyy, 4) && digits(mm, 2) && digits(last, 2)).then_some(family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_splits_cached_and_uncached_input() {
        let price = Price { input: 2.0, cached_input: Some(0.5), output: 8.0, cache_write_input: None };
        let usage = Usage { cached_tokens: 400_000, ..Usage::new(1_000_000, 250_000) };
        let cost = price.cost(&usage);
        // 600k uncached x $2/M + 400k cached x $0.5/M = 1.2 + 0.2; 250k x $8/M = 2.0
        assert!((cost.input_usd - 1.4).abs() < 1e-12);
        assert!((cost.output_usd - 2.0).abs() < 1e-12);
        assert!((cost.total_usd - 3.4).abs() < 1e-12);
    }

    #[test]
    fn cache_writes_have_their_own_price() {
        let price = Price { input: 3.0, cached_input: Some(0.3), output: 15.0, cache_write_input: Some(3.75) };
        let usage = Usage { cached_tokens: 200_000, cache_write_tokens: 100_000, ..Usage::new(1_000_000, 0) };
        // 700k x $3/M + 200k x $0.3/M + 100k x $3.75/M = 2.1 + 0.06 + 0.375
        assert!((price.cost(&usage).input_usd - 2.535).abs() < 1e-12);
        let unpriced_writes = Price { cache_write_input: None, ..price };
        assert!((unpriced_writes.cost(&usage).input_usd - (2.1 + 0.06 + 0.3)).abs() < 1e-12);
    }

    #[test]
    fn cached_price_defaults_to_input_price() {
        let price = Price { input: 1.0, cached_input: None, output: 0.0, cache_write_input: None };
        let usage = Usage { cached_tokens: 500_000, ..Usage::new(1_000_000, 0) };
        assert!((price.cost(&usage).input_usd - 1.0).abs() < 1e-12);
    }

    #[test]
    fn snapshots_fall_back_to_their_family() {
        let table = PriceTable::builtin();
        assert_eq!(table.get("openai", "gpt-4o-2024-08-06"), table.get("openai", "gpt-4o"));
        assert!(table.get("openai", "gpt-4o-mini").is_some());
        assert!(table.get("openai", "gpt-4o-latest").is_none());
        assert_eq!(table.provider_of("gpt-4o-mini-2024-07-18"), Some("openai"));
        assert_eq!(table.provider_of("llama3"), None);
        assert_eq!(table.get("anthropic", "claude-haiku-4-5-20251001"), table.get("anthropic", "claude-haiku-4-5"));
        assert_eq!(strip_snapshot_date("model-2024"), None);
    }

    #[test]
    fn user_prices_override_and_add() {
        let mut table = PriceTable::builtin();
        let mut file = PriceFile::new();
        let dated = FilePrice {
            source: Some("contract 42".into()),
            date: Some("2026-11-01".into()),
            ..Price { input: 9.0, cached_input: None, output: 9.0, cache_write_input: None }.into()
        };
        file.insert("openai:gpt-4o-mini".into(), dated);
        file.insert(
            "ollama:llama3.2:3b".into(),
            Price { input: 0.0, cached_input: None, output: 0.0, cache_write_input: None }.into(),
        );
        table.extend(file, "prices.yaml").unwrap();
        let mini = table.get("openai", "gpt-4o-mini").unwrap();
        assert_eq!(
            (mini.price.input, mini.source.as_str(), mini.date.as_deref()),
            (9.0, "contract 42", Some("2026-11-01"))
        );
        assert_eq!(table.get("ollama", "llama3.2:3b").unwrap().source, "prices.yaml");
        assert_eq!(table.get("ollama", "llama3.2:3b").unwrap().date, None);
        assert_eq!(PriceTable::builtin().get("openai", "gpt-4o").unwrap().date.as_deref(), Some("2025-08-07"));
        assert_eq!(table.provider_of("llama3.2:3b"), Some("ollama"));
    }

    #[test]
    fn rejects_bare_keys_and_negative_prices() {
        let mut table = PriceTable::default();
        let bare = PriceFile::from([(
            "gpt-x".to_string(),
            Price { input: 1.0, cached_input: None, output: 1.0, cache_write_input: None }.into(),
        )]);
        assert!(table.extend(bare, "f").unwrap_err().to_string().contains("PROVIDER:MODEL"));
        let negative = PriceFile::from([(
            "a:b".to_string(),
            Price { input: -1.0, cached_input: None, output: 1.0, cache_write_input: None }.into(),
        )]);
        assert!(table.extend(negative, "f").unwrap_err().to_string().contains("non-negative"));
        let undated = FilePrice {
            date: Some("last week".into()),
            ..Price { input: 1.0, cached_input: None, output: 1.0, cache_write_input: None }.into()
        };
        assert!(
            table
                .extend(PriceFile::from([("a:b".to_string(), undated)]), "f")
                .unwrap_err()
                .to_string()
                .contains("YYYY-MM-DD")
        );
    }
}
