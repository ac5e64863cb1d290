//! The most a run can cost, before it runs (`runner run --dry-run`).
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

use crate::model::ModelSpec;
use crate::scenario::Scenario;
use crate::tools::ToolRegistry;

/// Tokens of framing per message in OpenAI's chat format.
pub(crate) const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens that prime every reply.
pub(crate) const REPLY_PRIMING: u64 = 3;
/// Tokens a tool round's results may add beyond the size of the request for them.
pub(crate) const TOOL_RESULT_ALLOWANCE: u64 = 100;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        super::super::test_scenario(yaml)
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
    fn older_models_count_with_cl100k() {
        let counter = Counter::for_model(&ModelSpec { provider: "openai".into(), name: "gpt-3.5-turbo".into() });
        assert_eq!(counter.name, "cl100k_base");
        // "hello world" is two tokens in both vocabularies.
        assert_eq!(counter.count("hello world"), 2);
    }
}
