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

/// The largest count a server's usage is believed for: 2^53, the largest integer a JSON
/// number holds exactly. Past it a figure is a server's bug, not tokens.
pub(crate) const MAX_BELIEVED: u64 = 1 << 53;

impl Usage {
    /// Usage with the total derived from its parts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Self::default()
        }
    }

    /// Whether a server's report is believable: every count at most [`MAX_BELIEVED`], the
    /// total at least prompt plus completion, the cache's parts within the prompt and the
    /// reasoning within the completion. A report that is not is kept raw (`raw_usage`) and
    /// the figures are estimated instead.
    pub fn is_believable(&self) -> bool {
        let counts = [
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.cached_tokens,
            self.reasoning_tokens,
            self.cache_write_tokens,
        ];
        counts.iter().all(|&n| n <= MAX_BELIEVED)
            && self.total_tokens >= self.prompt_tokens + self.completion_tokens
            && self.cached_tokens + self.cache_write_tokens <= self.prompt_tokens
            && self.reasoning_tokens <= self.completion_tokens
    }

    /// Prompt tokens that were neither served from the cache nor written to it.
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_sub(self.cached_tokens).saturating_sub(self.cache_write_tokens)
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        // Saturating: a sum never wraps to a small figure, whatever a file or server said.
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(other.cache_write_tokens);
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
        assert_eq!(
            total,
            Usage {
                prompt_tokens: 17,
                completion_tokens: 9,
                total_tokens: 26,
                cached_tokens: 5,
                reasoning_tokens: 1,
                cache_write_tokens: 0
            }
        );
        assert_eq!(total.uncached_prompt_tokens(), 12);
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let big = Usage::new(1 << 63, 1 << 63);
        assert_eq!(big.total_tokens, u64::MAX);
        let mut sum = big;
        sum += big;
        assert_eq!((sum.prompt_tokens, sum.completion_tokens, sum.total_tokens), (u64::MAX, u64::MAX, u64::MAX));
    }

    #[test]
    fn unbelievable_reports_are_recognised() {
        assert!(Usage::new(10, 5).is_believable());
        assert!(
            Usage { cached_tokens: 4, cache_write_tokens: 6, reasoning_tokens: 5, ..Usage::new(10, 5) }.is_believable()
        );
        assert!(!Usage::new(MAX_BELIEVED + 1, 0).is_believable());
        assert!(!Usage { total_tokens: 3, ..Usage::new(10, 5) }.is_believable());
        assert!(!Usage { cached_tokens: 11, ..Usage::new(10, 5) }.is_believable());
        assert!(!Usage { reasoning_tokens: 6, ..Usage::new(10, 5) }.is_believable());
    }

    #[test]
    fn estimates_round_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcde"), 2);
    }
}
