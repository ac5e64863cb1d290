//! What names a model and what a request samples with: the vocabulary every layer shares,
//! from the scenario file to the reports.

use serde::{Deserialize, Serialize};

/// A model named as `PROVIDER:MODEL`: the key of a model everywhere (logs, reports,
/// summaries, prices). Displayed as `PROVIDER:MODEL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelSpec {
    pub provider: String,
    pub name: String,
}

impl ModelSpec {
    /// `PROVIDER:MODEL` split at the first colon, as written in reports; `None` without a colon.
    pub fn from_key(key: &str) -> Option<Self> {
        let (provider, name) = key.split_once(':')?;
        Some(Self { provider: provider.to_owned(), name: name.to_owned() })
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.name)
    }
}

/// Sampling settings sent with every request of a conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
}
