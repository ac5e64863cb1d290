//! YAML as runner reads it: the parser's limits (a YAML bomb is refused, not expanded) and its
//! errors as one plain sentence with a position.

use serde_saphyr::Location;

pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 10_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 64,
            max_nodes: 250_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
    }
}

/// The parser's message without its own position suffix (we print `file:line:column:`).
fn plain_message(err: &serde_saphyr::Error) -> String {
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let rendered = err.render_with_options(options);
    let message = match rendered.find(" at line ") {
        Some(at) if rendered[at..].contains(", column ") => rendered[..at].to_owned(),
        _ => rendered,
    };
    if message.starts_with("budget breached") || message.contains("limit exceeded") {
        // A YAML bomb or a runaway file: say which limit, and what the limits are.
        return format!(
            "expected a scenario file within runner's limits (64 levels of nesting, 250000 values, 10000 documents, \
             1000 anchors and aliases, 100000 values expanded from aliases); {}",
            limit_sentence(&message)
        );
    }
    message
}

/// The parser's account of a breached limit (`budget breached: Documents { documents: 10001 }`)
/// as a sentence: `this file goes past it: 10001 documents`.
fn limit_sentence(message: &str) -> String {
    let detail = message.strip_prefix("budget breached:").unwrap_or(message).trim();
    // `Kind { field: number, ... }` -> `number field, ...`
    let Some((_, fields)) = detail.split_once('{') else {
        return format!("this file goes past it: {detail}");
    };
    let parts: Vec<String> = fields
        .trim_end_matches('}')
        .split(',')
        .filter_map(|field| {
            let (name, value) = field.split_once(':')?;
            Some(format!("{} {}", value.trim(), name.trim().replace('_', " ")))
        })
        .collect();
    if parts.is_empty() {
        format!("this file goes past it: {detail}")
    } else {
        format!("this file goes past it: {}", parts.join(", "))
    }
}

/// Where a YAML error is, and what it says without the parser's own position suffix.
pub(crate) fn error_at(err: &serde_saphyr::Error) -> (Location, String) {
    (err.location().unwrap_or(Location::UNKNOWN), plain_message(err))
}
