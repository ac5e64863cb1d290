//! Text from outside (a model's reply, a server's words, a scenario's name) made safe where it
//! goes: markup, a terminal.

/// Text made safe for XML and HTML, in content and in quoted attributes; characters XML 1.0
/// forbids are dropped (JUnit files must parse; in HTML they are parse errors).
pub(crate) fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Text from outside (a scenario or tool name, a server's words) made safe to print on a
/// terminal: control characters (escape sequences, newlines) shown as `\u{..}`.
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// Why a `${VAR}` template could not be filled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ExpandError {
    #[error("expected `}}` after `${{` in `{0}`")]
    Unclosed(String),
    #[error("header needs ${{{0}}}: set {0} in the environment")]
    Unset(String),
}

/// `${VAR}` replaced by the variable's value; an unset variable is an error naming it.
pub(crate) fn expand(template: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            return Err(ExpandError::Unclosed(template.to_owned()));
        };
        let var = &rest[start + 2..start + end];
        out.push_str(&env(var).ok_or_else(|| ExpandError::Unset(var.to_owned()))?);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `text` cut to at most `max` characters, with `...` when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// `text` with every line longer than `width` characters broken at spaces; a continuation is
/// indented four spaces past its line's own indent. A word longer than the width stays whole.
pub(crate) fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = line.strip_suffix('\n').map_or((line, ""), |body| (body, "\n"));
        if body.chars().count() <= width {
            out.push_str(line);
            continue;
        }
        let indent = body.len() - body.trim_start().len();
        let hanging = " ".repeat(indent + 4);
        let mut current = body[..indent].to_owned();
        let mut fresh = true;
        for word in body[indent..].split(' ') {
            let wanted = current.chars().count() + usize::from(!fresh) + word.chars().count();
            if !fresh && wanted > width {
                out.push_str(current.trim_end());
                out.push('\n');
                current = hanging.clone();
                fresh = true;
            }
            if !fresh {
                current.push(' ');
            }
            current.push_str(word);
            fresh = false;
        }
        out.push_str(current.trim_end());
        out.push_str(newline);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn long_lines_wrap_at_spaces_with_a_hanging_indent() {
        assert_eq!(wrap("short\n", 10), "short\n");
        assert_eq!(wrap("  one two three four\n", 12), "  one two\n      three\n      four\n");
        assert_eq!(wrap("averyveryverylongword x", 8), "averyveryverylongword\n    x");
        for line in wrap(&"word ".repeat(40), 30).lines() {
            assert!(line.chars().count() <= 30, "{line:?}");
        }
    }
}
