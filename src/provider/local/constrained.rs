//! Constrained decoding of tool calls: the name among the offered tools, the arguments an
//! object of the tool's schema, strings and numbers copied from the message.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::LocalError;
use super::model::Model;
use super::sampler::Sampler;
use super::{Engine, MAX_CALLS, MAX_DEPTH, MAX_ITEMS, MAX_STRING_TOKENS, decide};
use crate::message::{FunctionCall, FunctionSpec, ToolCall, ToolSpec};

impl Engine {
    /// Writes the calls. A message that asks for several things ([`decide::request_parts`])
    /// gets a call per part (at most [`MAX_CALLS`]): its tool the part's only fitting one or
    /// the model's choice among them, its arguments grounded in that part alone. Otherwise one
    /// call to the chosen tool. `model` holds the prompt and [`CALL_OPEN`].
    pub(super) fn write_calls(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        chosen: usize,
        tools: &[ToolSpec],
        asked: &str,
    ) -> Result<(Vec<ToolCall>, u64), LocalError> {
        let parts = decide::request_parts(asked, tools)
            .filter(|parts| parts.len() <= MAX_CALLS)
            .unwrap_or_else(|| vec![(asked.to_owned(), vec![chosen])]);
        let mut calls = Vec::with_capacity(parts.len());
        let mut count = 0;
        for (i, (part, fitting)) in parts.iter().enumerate() {
            let opening = if i == 0 { "{\"name\":" } else { ",\n{\"name\":" };
            let names: Vec<String> =
                fitting.iter().map(|&t| format!(" {}", Value::String(tools[t].function.name.clone()))).collect();
            // One fitting tool: its name goes in with the opening, in one step.
            let index = if let [name] = &names[..] {
                count += self.force(model, &format!("{opening}{name}"))?.1;
                0
            } else {
                let (logits, n) = self.force(model, opening)?;
                let (index, _, m) = self.choose_text(model, logits, &names)?;
                count += n + m;
                index
            };
            let (call, n) = self.write_arguments(model, sampler, &tools[fitting[index]].function, part)?;
            count += n;
            calls.push(call);
        }
        let (_, n) = self.force(model, "\n]</tool_call>")?;
        Ok((calls, count + n))
    }

    /// The rest of a call whose name was written: its arguments, an object of its schema (see
    /// [`Engine::write_object`]), and the closing brace.
    pub(super) fn write_arguments(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        spec: &FunctionSpec,
        asked: &str,
    ) -> Result<(ToolCall, u64), LocalError> {
        let (_, mut count) = self.force(model, ", \"arguments\": ")?;
        let (arguments, n) = self.write_object(model, sampler, &spec.parameters, asked, 0)?;
        count += n;
        let (_, n) = self.force(model, "}")?;
        count += n;
        let id = format!("call_{}", crate::rng::mix64(count ^ model.cached().len() as u64) % 1_000_000_000);
        let call = ToolCall {
            id,
            kind: "function".into(),
            function: FunctionCall { name: spec.name.clone(), arguments: arguments.to_string() },
        };
        Ok((call, count))
    }

    /// An object of `schema`, in its properties' order: every required property, and an
    /// optional one only when the message gives evidence for it ([`wanted`]); a 135M model
    /// left to choose fills every optional field with something.
    pub(super) fn write_object(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        schema: &Value,
        asked: &str,
        depth: usize,
    ) -> Result<(Value, u64), LocalError> {
        let properties = schema["properties"].as_object().cloned().unwrap_or_default();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let (_, mut count) = self.force(model, "{")?;
        let mut object = serde_json::Map::new();
        for (name, property) in &properties {
            if !required.contains(&name.as_str()) && !wanted(name, property, asked) {
                continue;
            }
            let separator = if object.is_empty() { "" } else { ", " };
            let (logits, n) = self.force(model, &format!("{separator}{}: ", Value::String(name.clone())))?;
            count += n;
            let (value, n) = self.write_value(model, sampler, logits, property, asked, depth + 1)?;
            count += n;
            object.insert(name.clone(), value);
        }
        let (_, n) = self.force(model, "}")?;
        Ok((Value::Object(object), count + n))
    }

    /// An array of `schema`'s items. Numbers: the message's numbers, in order (what a list
    /// of numbers in a request almost always is). Other items: written one by one while the
    /// model prefers `, ` to `]` (at most [`MAX_ITEMS`]).
    pub(super) fn write_array(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        schema: &Value,
        asked: &str,
        depth: usize,
    ) -> Result<(Value, u64), LocalError> {
        let item = &schema["items"];
        let numbers = match item["type"].as_str() {
            Some(kind @ ("number" | "integer")) => numbers_in(asked, kind == "number"),
            _ => Vec::new(),
        };
        if !numbers.is_empty() {
            let text = format!("[{}]", numbers.join(", "));
            let (_, n) = self.force(model, &text)?;
            return Ok((serde_json::from_str(&text).unwrap_or_else(|_| json!([])), n));
        }
        let (mut logits, mut count) = self.force(model, "[")?;
        let mut items = Vec::new();
        loop {
            let (value, n) = self.write_value(model, sampler, logits, item, asked, depth + 1)?;
            count += n;
            items.push(value);
            let more = items.len() < MAX_ITEMS;
            let choices: Vec<String> = if more { vec![", ".into(), "]".into()] } else { vec!["]".into()] };
            let after = model.feed(&[])?;
            let (index, next, n) = self.choose_text(model, after, &choices)?;
            count += n;
            if choices[index] == "]" {
                break;
            }
            logits = next;
        }
        Ok((Value::Array(items), count))
    }

    /// One JSON value of the schema's type. Strings and numbers are grounded in the user's
    /// message `asked`: a string is a span of it, a number one of its numbers (when it has
    /// any); a 135M model copies far more reliably than it composes. An enum value the
    /// message names is taken as it is. `logits` are those after the key. Returns the value
    /// and the number of tokens written.
    pub(super) fn write_value(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        logits: Vec<f32>,
        schema: &Value,
        asked: &str,
        depth: usize,
    ) -> Result<(Value, u64), LocalError> {
        if let Some(options) = schema["enum"].as_array() {
            if let Some(named) = named_option(options, asked) {
                let (_, n) = self.force(model, &named.to_string())?;
                return Ok((named.clone(), n));
            }
            let choices: Vec<String> = options.iter().map(Value::to_string).collect();
            let (index, _, n) = self.choose_text(model, logits, &choices)?;
            return Ok((options[index].clone(), n));
        }
        match schema["type"].as_str() {
            Some("string") => self.write_string(model, sampler, asked),
            Some("integer") => self.write_number(model, sampler, logits, false, asked),
            Some("number") => self.write_number(model, sampler, logits, true, asked),
            Some("boolean") => {
                let (index, _, n) = self.choose_text(model, logits, &["true".to_owned(), "false".to_owned()])?;
                Ok((Value::Bool(index == 0), n))
            }
            Some("object") if depth < MAX_DEPTH => self.write_object(model, sampler, schema, asked, depth),
            Some("array") if depth < MAX_DEPTH => self.write_array(model, sampler, schema, asked, depth),
            _ => {
                let (_, n) = self.force(model, "null")?;
                Ok((Value::Null, n))
            }
        }
    }

    pub(super) fn write_string(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        asked: &str,
    ) -> Result<(Value, u64), LocalError> {
        let (mut logits, mut count) = self.force(model, "\"")?;
        let mut bytes: Vec<u8> = Vec::new();
        for _ in 0..MAX_STRING_TOKENS {
            let tokenizer = &self.tokenizer;
            let plain = |id: u32, t: &[u8]| {
                !t.is_empty() && !self.stop.contains(&id) && !t.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)
            };
            let closing = |t: &[u8]| t.first() == Some(&b'"') && !bytes.is_empty();
            let current = String::from_utf8_lossy(&bytes).trim_start().to_owned();
            let grounded = |id: u32| {
                let t = tokenizer.token_bytes(id);
                if closing(&t) {
                    return span_at_words(asked, &current, true);
                }
                if !plain(id, &t) {
                    return false;
                }
                let mut next = bytes.clone();
                next.extend_from_slice(&t);
                let next = String::from_utf8_lossy(&next).trim_start().to_owned();
                !next.is_empty() && span_at_words(asked, &next, false)
            };
            let free = |id: u32| {
                let t = tokenizer.token_bytes(id);
                closing(&t) || plain(id, &t)
            };
            let pick = match sampler.pick(&logits, Some(&grounded)) {
                Some(id) => Some(id),
                None => sampler.pick(&logits, Some(&free)),
            };
            let Some(next) = pick else { break };
            let token = tokenizer.token_bytes(next);
            if token[0] == b'"' {
                break;
            }
            bytes.extend_from_slice(&token);
            logits = model.feed(&[next])?;
            count += 1;
        }
        let (_, n) = self.force(model, "\"")?;
        Ok((Value::String(String::from_utf8_lossy(&bytes).trim().to_owned()), count + n))
    }

    pub(super) fn write_number(
        &self,
        model: &mut Model,
        sampler: &mut Sampler,
        mut logits: Vec<f32>,
        fraction: bool,
        asked: &str,
    ) -> Result<(Value, u64), LocalError> {
        let numbers = numbers_in(asked, fraction);
        let mut text = String::new();
        let mut count = 0;
        for _ in 0..24 {
            let tokenizer = &self.tokenizer;
            let current = text.clone();
            let grounded = |id: u32| {
                let t = String::from_utf8_lossy(&tokenizer.token_bytes(id)).into_owned();
                if t.starts_with([',', '}', ']']) {
                    return numbers.contains(&current);
                }
                let next = format!("{current}{t}");
                numbers.iter().any(|n| n.starts_with(&next))
            };
            let free = |id: u32| {
                let t = tokenizer.token_bytes(id);
                let Ok(t) = std::str::from_utf8(&t) else { return false };
                let digits = current.trim_start_matches('-');
                if t.len() == 1 && t.as_bytes()[0].is_ascii_digit() {
                    // No leading zeros: "0" may only be followed by a fraction.
                    return digits != "0";
                }
                match t {
                    "-" => current.is_empty(),
                    "." => fraction && !digits.is_empty() && !digits.contains('.') && !digits.ends_with('.'),
                    _ => !digits.is_empty() && !digits.ends_with('.') && t.starts_with([',', '}', ']']),
                }
            };
            let pick = if numbers.is_empty() {
                sampler.pick(&logits, Some(&free))
            } else {
                sampler.pick(&logits, Some(&grounded))
            };
            let Some(next) = pick else { break };
            let token = String::from_utf8_lossy(&tokenizer.token_bytes(next)).into_owned();
            if token.starts_with([',', '}', ']']) {
                break;
            }
            text.push_str(&token);
            logits = model.feed(&[next])?;
            count += 1;
        }
        if text.is_empty() || text == "-" || text.ends_with('.') {
            text = "0".into();
        }
        let value: Value = serde_json::from_str(&text).unwrap_or(json!(0));
        Ok((value, count))
    }
}

/// Whether the message gives evidence for an optional property: it names one of its enum
/// values, shares a content word with its name or description, or (a description showing
/// `HH:MM` or `YYYY-MM-DD`) holds a time or date.
pub(super) fn wanted(name: &str, schema: &Value, asked: &str) -> bool {
    static FORMATS: OnceLock<[(&str, regex::Regex); 2]> = OnceLock::new();
    if let Some(options) = schema["enum"].as_array() {
        return named_option(options, asked).is_some();
    }
    let description = schema["description"].as_str().unwrap_or_default();
    let formats = FORMATS.get_or_init(|| {
        let regex = |pattern: &str| regex::Regex::new(pattern).expect("valid pattern");
        [("HH:MM", regex(r"\b\d{1,2}:\d{2}\b")), ("YYYY-MM-DD", regex(r"\b\d{4}-\d{2}-\d{2}\b"))]
    });
    if formats.iter().any(|(shown, pattern)| description.contains(shown) && pattern.is_match(asked)) {
        return true;
    }
    let about = decide::content_words(&format!("{} {description}", name.replace('_', " ")));
    decide::content_words(asked).iter().any(|word| about.contains(word))
}

/// The enum value the message names (as a whole word, any case) first, if any.
pub(super) fn named_option<'a>(options: &'a [Value], asked: &str) -> Option<&'a Value> {
    let lower = asked.to_lowercase();
    options
        .iter()
        .filter_map(|option| {
            let text = option.as_str()?.to_lowercase();
            span_at_words(&lower, &text, true).then(|| lower.find(&text)).flatten().map(|at| (at, option))
        })
        .min_by_key(|(at, _)| *at)
        .map(|(_, option)| option)
}

/// The numbers written in `text` (`-3`, `1.5` when `fraction`), as written.
pub(super) fn numbers_in(text: &str, fraction: bool) -> Vec<String> {
    static WHOLE: OnceLock<regex::Regex> = OnceLock::new();
    static FRACTION: OnceLock<regex::Regex> = OnceLock::new();
    let regex = if fraction {
        FRACTION.get_or_init(|| regex::Regex::new(r"-?\d+(?:\.\d+)?").expect("valid pattern"))
    } else {
        WHOLE.get_or_init(|| regex::Regex::new(r"-?\d+").expect("valid pattern"))
    };
    regex.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

/// Whether `span` occurs in `text` starting where a word starts (after a space or an
/// opening bracket or quote: `EV-1001` and `notes/todo.txt` are one word each) and, with
/// `whole`, also ending where a word ends (before a space, a closing bracket or quote, or
/// punctuation that ends the word: the `.` of `draft.docx.`, not the one of `draft.docx`).
pub(super) fn span_at_words(text: &str, span: &str, whole: bool) -> bool {
    const OPENING: &str = "\"'([{";
    const CLOSING: &str = "\"')]}";
    if span.is_empty() {
        return false;
    }
    text.match_indices(span).any(|(at, _)| {
        let starts = text[..at].chars().next_back().is_none_or(|c| c.is_whitespace() || OPENING.contains(c));
        let mut after = text[at + span.len()..].chars();
        let ends = match after.next() {
            None => true,
            Some(c) if c.is_whitespace() || CLOSING.contains(c) => true,
            Some(c) if c.is_ascii_punctuation() => {
                after.next().is_none_or(|d| d.is_whitespace() || CLOSING.contains(d))
            }
            Some(_) => false,
        };
        starts && (!whole || ends)
    })
}
