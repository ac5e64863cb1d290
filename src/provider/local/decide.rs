//! Whether the embedded model calls a tool, and which.
//!
//! Left to itself the model almost never starts a tool call, and when made to, it favours
//! whichever tool is listed first and calls tools for small talk. So the choice is made in
//! two steps:
//!
//! 1. **Evidence.** A tool is a candidate only when the user's message shares a content word
//!    with the tool's name, description or parameter descriptions (lower-cased, plural and
//!    -ing/-ed endings stripped, common words ignored). No candidate: answer in text.
//! 2. **The model's preference**, scored in its own format: after `<tool_call>[` it either
//!    closes an empty list (`]`: no call) or opens a call whose `"name"` is one of the
//!    tools. Each option's log probability is compared with the same option's log
//!    probability for a content-free user message (contextual calibration): what the model
//!    prefers for *this* message, not what it prefers anyway. Among the candidates and "no
//!    call" (handicapped by [`NONE_HANDICAP`], since step 1 already found evidence for a
//!    tool), the highest calibrated score wins.

use serde_json::Value;

use super::LocalError;
use super::model::Model;
use super::sampler::log_mass;
use super::{CALL_OPEN, Engine};
use crate::message::{Message, ToolSpec};

/// Subtracted from the calibrated score of "no call" when step 1 found candidates.
pub const NONE_HANDICAP: f64 = 1.0;

/// Words that say nothing about which tool is wanted.
const COMMON: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "e", "for", "from", "g", "get",
    "give", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "please", "s", "so", "tell", "that", "the",
    "their", "this", "to", "two", "what", "whats", "with", "would", "you", "your", "both", "how", "much", "right",
    "which", "who", "why",
];

/// Content words of `text`, reduced to a rough stem; `+` counts as "plus".
pub fn content_words(text: &str) -> Vec<String> {
    let text = text.replace('+', " plus ").to_lowercase();
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| !COMMON.contains(w))
        .map(stem)
        .filter(|w| w.len() > 1)
        .collect()
}

fn stem(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(base) = word.strip_suffix(suffix)
            && base.len() >= 3
            && !(suffix == "s" && (base.ends_with('s') || base.ends_with('u')))
        {
            return base.to_owned();
        }
    }
    word.to_owned()
}

/// The offered tools whose description shares a content word with `message`.
pub fn candidates(message: &str, tools: &[ToolSpec]) -> Vec<usize> {
    let asked = content_words(message);
    tools
        .iter()
        .enumerate()
        .filter(|(_, tool)| {
            let mut about = format!("{} {}", tool.function.name.replace('_', " "), tool.function.description);
            if let Some(properties) = tool.function.parameters["properties"].as_object() {
                for (name, schema) in properties {
                    about.push(' ');
                    about.push_str(name);
                    about.push(' ');
                    about.push_str(schema["description"].as_str().unwrap_or_default());
                }
            }
            let offered = content_words(&about);
            asked.iter().any(|w| offered.contains(w))
        })
        .map(|(i, _)| i)
        .collect()
}

/// The parts of a message that asks for several things: split at each "and", when every
/// part shares a content word with some tool's name or description (not only a parameter:
/// "subject Hello and body ..." is one request). Each part with those tools, by index.
/// Fewer than two parts: `None`.
pub fn request_parts(message: &str, tools: &[ToolSpec]) -> Option<Vec<(String, Vec<usize>)>> {
    // Not inside a range or a list of numbers: "between 1 and 10".
    static SPLITTER: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let splitter = SPLITTER.get_or_init(|| regex::Regex::new(r"(?i)\s+and\s+").expect("valid pattern"));
    let mut parts: Vec<&str> = Vec::new();
    let mut start = 0;
    for found in splitter.find_iter(message) {
        let before = message[..found.start()].chars().next_back();
        let after = message[found.end()..].chars().next();
        if before.is_some_and(|c| c.is_ascii_digit()) && after.is_some_and(|c| c.is_ascii_digit() || c == '-') {
            continue;
        }
        parts.push(&message[start..found.start()]);
        start = found.end();
    }
    parts.push(&message[start..]);
    let parts: Vec<&str> = parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect();
    if parts.len() < 2 {
        return None;
    }
    let named: Vec<Vec<String>> = tools
        .iter()
        .map(|t| content_words(&format!("{} {}", t.function.name.replace('_', " "), t.function.description)))
        .collect();
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let words = content_words(part);
        let fitting: Vec<usize> = (0..tools.len()).filter(|&i| words.iter().any(|w| named[i].contains(w))).collect();
        if fitting.is_empty() {
            return None;
        }
        out.push((part.to_owned(), fitting));
    }
    Some(out)
}

/// The user message the calibration scores are computed for.
const CONTENT_FREE: &str = "N/A";

/// Log probabilities of the options after `prompt`: index 0 is "no call", 1 + i is the i-th
/// of `candidates` (indexes into `tools`; only they can be chosen, so only they are scored).
fn option_scores(
    engine: &Engine,
    model: &mut Model,
    tools: &[ToolSpec],
    candidates: &[usize],
) -> Result<(Vec<f64>, Model, u64), LocalError> {
    let mut opened = model.clone();
    let (logits, count) = engine.force(&mut opened, CALL_OPEN)?;
    let starts = |c: u8| {
        move |id: u32| {
            let t = engine.tokenizer.token_bytes(id);
            t.iter().find(|b| !b.is_ascii_whitespace()) == Some(&c)
        }
    };
    let none = log_mass(&logits, &starts(b']'));
    let call = log_mass(&logits, &starts(b'{'));
    let mut named = opened.clone();
    let (logits, _) = engine.force(&mut named, "{\"name\":")?;
    let mut scores = vec![none];
    for &tool in candidates {
        let text = format!(" {}", Value::String(tools[tool].function.name.clone()));
        scores.push(call + engine.log_prob(&mut named.clone(), logits.clone(), &text)?);
    }
    Ok((scores, opened, count))
}

/// The offered tool to call and the number of tokens fed into `model`, which then holds the
/// prompt and [`CALL_OPEN`]; `None` to answer in text (`model` untouched).
/// `candidates` are step 1's (not empty).
pub(crate) fn choose(
    engine: &Engine,
    model: &mut Model,
    messages: &[Message],
    tools: &[ToolSpec],
    candidates: &[usize],
) -> Result<Option<(usize, u64)>, LocalError> {
    let (scores, opened, count) = option_scores(engine, model, tools, candidates)?;
    let baseline = calibration(engine, model, messages, tools, candidates)?;
    let calibrated: Vec<f64> = scores.iter().zip(&baseline).map(|(s, b)| s - b).collect();
    // 0: no call; 1 + i: candidates[i].
    let mut best = 0;
    let mut best_score = calibrated[0] - NONE_HANDICAP;
    for (option, &score) in calibrated.iter().enumerate().skip(1) {
        if score > best_score {
            best = option;
            best_score = score;
        }
    }
    let names: Vec<&str> = candidates.iter().map(|&i| tools[i].function.name.as_str()).collect();
    tracing::debug!(
        ?names,
        ?scores,
        ?baseline,
        ?calibrated,
        choice = best,
        "tool decision (0: no call, i: names[i - 1])"
    );
    if best == 0 {
        return Ok(None);
    }
    *model = opened;
    Ok(Some((candidates[best - 1], count)))
}

/// The option scores for the same conversation with a content-free last user message.
fn calibration(
    engine: &Engine,
    model: &Model,
    messages: &[Message],
    tools: &[ToolSpec],
    candidates: &[usize],
) -> Result<Vec<f64>, LocalError> {
    let mut neutral = messages.to_vec();
    if let Some(Message::User { content }) = neutral.last_mut() {
        *content = CONTENT_FREE.to_owned();
    }
    let prompt = engine.tokenizer.encode(&engine.render(&neutral, tools)?);
    let key = (prompt, candidates.to_vec());
    if let Some(scores) = engine.calibration.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
        return Ok(scores.clone());
    }
    // It shares the system prompt and tools (and earlier turns) with the real prompt, which
    // `model` holds: a copy of it keeps that prefix (its blocks shared), and only the
    // content-free message is fed.
    let mut model = model.clone();
    model.prefill(&key.0)?;
    let (scores, _, _) = option_scores(engine, &mut model, tools, candidates)?;
    let mut cache = engine.calibration.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() > 64 {
        cache.clear();
    }
    cache.insert(key, scores.clone());
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolRegistry;

    #[test]
    fn content_words_drop_common_words_and_endings() {
        assert_eq!(content_words("Is it raining in London?"), ["rain", "london"]);
        assert_eq!(content_words("Calculate 7 + 8"), ["calculate", "plus"]);
        assert_eq!(content_words("What's the weather?"), ["weather"]);
    }

    #[test]
    fn candidates_need_shared_words() {
        let registry = ToolRegistry::builtin();
        let names: Vec<String> = registry.names().map(str::to_owned).collect();
        let tools = registry.specs(&names);
        let named = |message: &str| -> Vec<String> {
            candidates(message, &tools).into_iter().map(|i| tools[i].function.name.clone()).collect()
        };
        assert_eq!(named("What's the weather in Paris?"), ["get_weather"]);
        assert_eq!(named("reverse apple"), ["reverse_text"]);
        assert_eq!(named("What is 2 plus 3?"), ["add_numbers"]);
        assert!(named("Tell me a joke.").is_empty());
        assert!(named("Hi! How are you?").is_empty());
    }

    #[test]
    fn a_message_splits_into_requests_only_where_each_part_names_a_tool() {
        let registry = ToolRegistry::builtin();
        let names: Vec<String> = registry.names().map(str::to_owned).collect();
        let tools = registry.specs(&names);
        let named = |message: &str| -> Option<Vec<(String, Vec<String>)>> {
            request_parts(message, &tools).map(|parts| {
                parts
                    .into_iter()
                    .map(|(p, t)| (p, t.iter().map(|&i| tools[i].function.name.clone()).collect()))
                    .collect()
            })
        };
        let pair = |part: &str, tool: &str| (part.to_owned(), vec![tool.to_owned()]);
        // "2 and 3" is one list of numbers, not two requests.
        assert_eq!(
            named("Reverse the word apple and add 2 and 3"),
            Some(vec![pair("Reverse the word apple", "reverse_text"), pair("add 2 and 3", "add_numbers")])
        );
        assert_eq!(
            named("Reverse the word apple and get the weather in Paris"),
            Some(vec![pair("Reverse the word apple", "reverse_text"), pair("get the weather in Paris", "get_weather")])
        );
        // "banana" names no tool: no split.
        assert_eq!(named("Reverse the words apple and banana"), None);
        assert!(request_parts("What is the weather in Paris?", &tools).is_none());
        // A range is one request, even when what follows names the tool.
        assert!(
            request_parts("Give me a random number between 1 and 10 using the get_random_number tool.", &tools)
                .is_none()
        );
    }
}
