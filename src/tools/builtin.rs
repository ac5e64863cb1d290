//! The built-in tools that need nothing outside the process.

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use unicode_segmentation::UnicodeSegmentation;

use super::{Tool, ToolContext, ToolError, parse_arguments, schema_problems};

/// A built-in tool: what it is and what it does. [`Checked`] makes it a [`Tool`], its
/// arguments checked against `parameters` first.
pub(super) trait Builtin: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// JSON schema of the arguments object.
    fn parameters(&self) -> Value;
    /// Runs the tool on arguments its schema accepts.
    fn call<'a>(&'a self, arguments: Value, context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>>;
}

/// A built-in as a [`Tool`]: its schema compiled on the first call to check, once.
pub(super) struct Checked<T> {
    tool: T,
    schema: std::sync::OnceLock<jsonschema::Validator>,
}

impl<T: Builtin> Checked<T> {
    pub(super) fn tool(tool: T) -> std::sync::Arc<dyn Tool> {
        std::sync::Arc::new(Self { tool, schema: std::sync::OnceLock::new() })
    }
}

impl<T: Builtin> Tool for Checked<T> {
    fn name(&self) -> &str {
        self.tool.name()
    }
    fn description(&self) -> &str {
        self.tool.description()
    }
    fn parameters(&self) -> Value {
        self.tool.parameters()
    }
    fn check(&self, arguments: &Value) -> Vec<String> {
        let schema = self.schema.get_or_init(|| {
            jsonschema::validator_for(&self.tool.parameters()).expect("a built-in tool's schema compiles")
        });
        schema_problems(schema, arguments)
    }
    fn call<'a>(&'a self, arguments: Value, context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        self.tool.call(arguments, context)
    }
}

pub(super) struct AddNumbers;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddArgs {
    x: f64,
    y: f64,
}

impl Builtin for AddNumbers {
    fn name(&self) -> &'static str {
        "add_numbers"
    }
    fn description(&self) -> &'static str {
        "Add two numbers (x plus y) and return their sum."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "x": {"type": "number", "description": "The first number."},
                "y": {"type": "number", "description": "The second number."}
            },
            "required": ["x", "y"],
            "additionalProperties": false
        })
    }
    fn call<'a>(&'a self, arguments: Value, _: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let AddArgs { x, y } = parse_arguments(arguments)?;
            let sum = x + y;
            // Integral sums print as integers (5, not 5.0), which is what a reader expects.
            let result = if sum.fract() == 0.0 && sum.abs() < 9.0e15 { json!(sum as i64) } else { json!(sum) };
            Ok(json!({ "result": result }))
        })
    }
}

pub(super) struct ReverseText;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReverseArgs {
    text: String,
}

impl Builtin for ReverseText {
    fn name(&self) -> &'static str {
        "reverse_text"
    }
    fn description(&self) -> &'static str {
        "Reverse a text character by character, e.g. to spell a word backwards."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "The text to reverse."}},
            "required": ["text"],
            "additionalProperties": false
        })
    }
    fn call<'a>(&'a self, arguments: Value, _: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let ReverseArgs { text } = parse_arguments(arguments)?;
            Ok(json!({ "result": reverse_graphemes(&text) }))
        })
    }
}

/// Reverses user-perceived characters, so accents and emoji sequences stay whole.
pub(super) fn reverse_graphemes(text: &str) -> String {
    text.graphemes(true).rev().collect()
}

pub(super) struct GetCurrentTime;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

impl Builtin for GetCurrentTime {
    fn name(&self) -> &'static str {
        "get_current_time"
    }
    fn description(&self) -> &'static str {
        "Get the current local date and time (ISO 8601 with UTC offset): what time or day it is now."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    }
    fn call<'a>(&'a self, arguments: Value, _: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let NoArgs {} = parse_arguments(arguments)?;
            let now = chrono::Local::now();
            Ok(json!({ "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false) }))
        })
    }
}

pub(super) struct GetRandomNumber;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomArgs {
    min: i64,
    max: i64,
}

impl Builtin for GetRandomNumber {
    fn name(&self) -> &'static str {
        "get_random_number"
    }
    fn description(&self) -> &'static str {
        "Get a random integer between min and max, both inclusive (e.g. to roll a die)."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "min": {"type": "integer", "description": "Smallest possible value."},
                "max": {"type": "integer", "description": "Largest possible value."}
            },
            "required": ["min", "max"],
            "additionalProperties": false
        })
    }
    fn call<'a>(&'a self, arguments: Value, context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let RandomArgs { min, max } = parse_arguments(arguments)?;
            if min > max {
                return Err(ToolError::BadArguments(format!("min ({min}) is greater than max ({max})")));
            }
            Ok(json!({ "result": uniform(context.next_random(), min, max) }))
        })
    }
}

/// Maps a uniform 64-bit number onto `min..=max` (multiply-shift, no modulo bias to speak of).
fn uniform(random: u64, min: i64, max: i64) -> i64 {
    let span = (max as i128 - min as i128 + 1) as u128;
    let offset = (random as u128 * span) >> 64;
    (min as i128 + offset as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverses_by_grapheme() {
        assert_eq!(reverse_graphemes("apple"), "elppa");
        assert_eq!(reverse_graphemes("nöel"), "leön");
        // e + combining acute stays one character; the family emoji stays whole.
        assert_eq!(reverse_graphemes("ae\u{301}b"), "be\u{301}a");
        assert_eq!(reverse_graphemes("x👨‍👩‍👧y"), "y👨‍👩‍👧x");
    }

    #[test]
    fn uniform_stays_in_range_and_reaches_both_ends() {
        assert_eq!(uniform(0, 1, 10), 1);
        assert_eq!(uniform(u64::MAX, 1, 10), 10);
        assert_eq!(uniform(u64::MAX, i64::MIN, i64::MAX), i64::MAX);
        assert_eq!(uniform(0, i64::MIN, i64::MAX), i64::MIN);
        assert_eq!(uniform(12345, 7, 7), 7);
        let mut seen = [false; 10];
        for i in 0..1000u64 {
            let n = uniform(crate::rng::mix64(i), 1, 10);
            assert!((1..=10).contains(&n));
            seen[(n - 1) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
