//! The scenario file as written: a serde mirror of the format with every value's position,
//! which `validate` turns into a [`super::Scenario`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) model: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) system: Option<Spanned<String>>,
    /// The user's own agent program, in place of runner's loop.
    #[serde(default)]
    pub(super) agent: Option<Spanned<Value>>,
    #[serde(default)]
    pub(super) temperature: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) top_p: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) max_tokens: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) seed: Option<u64>,
    /// Names, declarations, or `{mcp: ...}`.
    #[serde(default)]
    pub(super) tools: Option<Vec<Spanned<Value>>>,
    #[serde(default)]
    pub(super) tool_results: Option<Spanned<BTreeMap<String, Value>>>,
    #[serde(default)]
    pub(super) max_tool_rounds: Option<Spanned<u32>>,
    /// Scripted turns; none is fine when a simulated user follows.
    #[serde(default)]
    pub(super) turns: Option<Spanned<Vec<RawTurn>>>,
    /// A model that plays the user after the scripted turns.
    #[serde(default)]
    pub(super) simulate: Option<Spanned<RawSimulate>>,
    /// Checks over the whole conversation (`ended` and `max_turns` only here; no ordered
    /// `tool_calls` and no latency).
    #[serde(default)]
    pub(super) expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSimulate {
    #[serde(default)]
    pub(super) model: Option<Spanned<String>>,
    pub(super) goal: Spanned<String>,
    #[serde(default)]
    pub(super) persona: Option<String>,
    #[serde(default)]
    pub(super) max_turns: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTurn {
    pub(super) user: String,
    #[serde(default)]
    pub(super) expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<RawExpectedCall>>,
    #[serde(default)]
    pub(super) tool_calls_unordered: Option<Vec<RawExpectedCall>>,
    /// Names or `{name, arguments}`.
    #[serde(default)]
    pub(super) called: Option<Vec<Spanned<Value>>>,
    #[serde(default)]
    pub(super) not_called: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) contains: Option<Strings>,
    #[serde(default)]
    pub(super) not_contains: Option<Strings>,
    #[serde(default)]
    pub(super) regex: Option<Spanned<Strings>>,
    #[serde(default)]
    pub(super) max_cost_usd: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) max_latency_ms: Option<u64>,
    /// A rubric, or `{rubric, model}`.
    #[serde(default)]
    pub(super) judge: Option<Spanned<Value>>,
    /// How the conversation ended (the top-level `expect` only).
    #[serde(default)]
    pub(super) ended: Option<Spanned<String>>,
    /// User messages at most (the top-level `expect` only).
    #[serde(default)]
    pub(super) max_turns: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpectedCall {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) arguments: Option<Spanned<Value>>,
}

/// A string or a list of strings.
pub(super) struct Strings(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Strings, E> {
                Ok(Strings(vec![value.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(Strings(items))
            }
        }
        deserializer.deserialize_any(StringsVisitor)
    }
}
