//! Token usage: what one request consumed, summed per turn and per run.

use serde::{Deserialize, Serialize};

/// Token counts of one or more requests.
///
/// `cached_tokens` is the part of `prompt_tokens` the provider served from its prompt cache;
/// `cache_write_tokens` the part it wrote to its cache (Anthropic's cache creation, priced
/// apart); `reasoning_tokens` is the part of `completion_tokens` spent on hidden reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage with the total derived from its parts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens, ..Self::default() }
    }

    /// Prompt tokens that were neither served from the cache nor written to it.
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_sub(self.cached_tokens).saturating_sub(self.cache_write_tokens)
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cached_tokens += other.cached_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        let mut total = Self::default();
        for usage in iter {
            total += usage;
        }
        total
    }
}

/// Where a request's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UsageSource {
    /// The provider reported them in its response.
    Provider,
    /// The provider reported none; runner estimated them (about four characters a token).
    Estimated,
}

/// A rough token count for text when the provider reports no usage: one token per four
/// bytes, rounded up. Marked as [`UsageSource::Estimated`] wherever it is used.
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_field() {
        let a = Usage { cached_tokens: 3, reasoning_tokens: 1, ..Usage::new(10, 5) };
        let b = Usage { cached_tokens: 2, ..Usage::new(7, 4) };
        let total: Usage = [a, b].into_iter().sum();
        assert_eq!(total, Usage { prompt_tokens: 17, completion_tokens: 9, total_tokens: 26, cached_tokens: 5, reasoning_tokens: 1, cache_write_tokens: 0 });
        assert_eq!(total.uncached_prompt_tokens(), 12);
    }

    #[test]
    fn estimates_round_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcde"), 2);
    }
}
