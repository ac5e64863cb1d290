//! API keys: never printed, never serialized, and looked for in everything a server sends
//! back, so that an echo never reaches a log, a report or the terminal.
//!
//! Text (a reply, an error body) has the key replaced by `[redacted]`, also where a JSON body
//! spells it with `\u` escapes. Values the model produced as data (tool call arguments, ids,
//! names, finish reasons) are never rewritten piecewise, which would corrupt them: one that
//! holds the key is replaced whole by [`HELD_THE_KEY`]. Keys shorter than [`MIN_SECRET_LEN`]
//! (the placeholders local servers take: `EMPTY`, `ollama`, `x`) are too common to be
//! secrets and are not looked for at all.

/// Shortest key redaction looks for.
pub(crate) const MIN_SECRET_LEN: usize = 8;
/// What a value the model produced becomes when it holds the key.
pub(crate) const HELD_THE_KEY: &str = "[redacted: this value held the API key]";

const MARK: &str = "[redacted]";

/// A secret (an API key).
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The key, when it is long enough to look for.
    fn needle(&self) -> Option<&str> {
        (self.0.len() >= MIN_SECRET_LEN).then_some(self.0.as_str())
    }

    /// Whether `text` holds the key, plainly or JSON-escaped.
    pub(crate) fn is_in(&self, text: &str) -> bool {
        self.needle().is_some_and(|key| text.contains(key) || (text.contains('\\') && unescape(text).contains(key)))
    }

    /// `text` with every occurrence of the key replaced by `[redacted]`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let Some(key) = self.needle() else { return text.to_owned() };
        let plain = text.replace(key, MARK);
        if plain.contains('\\') {
            let decoded = unescape(&plain);
            if decoded.contains(key) {
                // Spelled with escapes: the decoded text, redacted, is what is kept.
                return decoded.replace(key, MARK);
            }
        }
        plain
    }

    /// A value the model produced, as it is, or [`HELD_THE_KEY`] when it holds the key.
    pub(crate) fn screen(&self, value: String) -> String {
        if self.is_in(&value) { HELD_THE_KEY.to_owned() } else { value }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Redacts text that arrives in pieces (a streamed reply on its way to the terminal): a key
/// split across two pieces is caught, because the tail that could begin the key is held back
/// until the next piece shows whether it does.
pub(crate) struct StreamRedactor<'a> {
    key: Option<&'a str>,
    pending: String,
}

impl<'a> StreamRedactor<'a> {
    pub(crate) fn new(secret: Option<&'a Secret>) -> Self {
        Self { key: secret.and_then(Secret::needle), pending: String::new() }
    }

    /// Takes the next piece; returns what is safe to show now.
    pub(crate) fn push(&mut self, piece: &str) -> String {
        let Some(key) = self.key else { return piece.to_owned() };
        self.pending.push_str(piece);
        if self.pending.contains(key) {
            self.pending = self.pending.replace(key, MARK);
        }
        // Hold back the longest tail that is a beginning of the key.
        let mut hold = 0;
        for len in (1..key.len().min(self.pending.len() + 1)).rev() {
            let start = self.pending.len() - len;
            if self.pending.is_char_boundary(start) && key.starts_with(&self.pending[start..]) {
                hold = len;
                break;
            }
        }
        let split = self.pending.len() - hold;
        let rest = self.pending.split_off(split);
        std::mem::replace(&mut self.pending, rest)
    }

    /// What is still held back, at the end of the text.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// `text` with JSON string escapes (`\uXXXX`, surrogate pairs, `\/`, `\"`, `\\`) decoded;
/// anything that is not a valid escape is kept as it is.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('u') => {
                chars.next();
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16) {
                    Ok(unit) if hex.len() == 4 => {
                        for _ in 0..4 {
                            chars.next();
                        }
                        let decoded = if (0xD800..0xDC00).contains(&unit) {
                            // A high surrogate: its low half follows as \uXXXX.
                            let rest: String = chars.clone().take(6).collect();
                            let low = rest.strip_prefix("\\u").and_then(|h| u32::from_str_radix(h, 16).ok()).filter(|l| (0xDC00..0xE000).contains(l));
                            low.and_then(|low| {
                                for _ in 0..6 {
                                    chars.next();
                                }
                                char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                            })
                        } else {
                            char::from_u32(unit)
                        };
                        out.push(decoded.unwrap_or('\u{FFFD}'));
                    }
                    _ => out.push_str("\\u"),
                }
            }
            Some(escaped @ ('/' | '"' | '\\')) => {
                chars.next();
                out.push(escaped);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-test-CANARY1234567890";

    fn secret(key: &str) -> Secret {
        Secret::new(key.to_owned())
    }

    #[test]
    fn short_or_common_keys_rewrite_nothing() {
        for key in ["1", "e", "x", "EMPTY", "ollama"] {
            let s = secret(key);
            assert_eq!(s.redact(r#"{"x": 12, "y": 30} text"#), r#"{"x": 12, "y": 30} text"#, "key {key}");
            assert_eq!(s.screen("call_1".into()), "call_1");
            assert!(!s.is_in("EMPTY ollama x 1 e"));
        }
    }

    #[test]
    fn plain_and_escaped_echoes_are_redacted() {
        let s = secret(KEY);
        assert_eq!(s.redact(&format!("Bearer {KEY} is wrong")), "Bearer [redacted] is wrong");
        let escaped: String = KEY.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let body = format!(r#"{{"error": "bad key {escaped}"}}"#);
        assert!(s.is_in(&body));
        let redacted = s.redact(&body);
        assert!(!redacted.contains(KEY) && !unescape(&redacted).contains(KEY), "{redacted}");
        assert!(redacted.contains("[redacted]"));
        // Mixed: some characters escaped, some not.
        let mixed = format!("key: \\u0073k{}", &KEY[2..]);
        assert!(!unescape(&s.redact(&mixed)).contains(KEY));
    }

    #[test]
    fn model_values_are_replaced_whole_never_rewritten() {
        let s = secret(KEY);
        assert_eq!(s.screen(format!(r#"{{"token": "{KEY}"}}"#)), HELD_THE_KEY);
        assert_eq!(s.screen(r#"{"x": 12}"#.to_owned()), r#"{"x": 12}"#);
    }

    #[test]
    fn a_key_split_across_pieces_never_shows() {
        let s = secret(KEY);
        for cut in 1..KEY.len() {
            let text = format!("before {KEY} after");
            let at = "before ".len() + cut;
            let mut redactor = StreamRedactor::new(Some(&s));
            let mut shown = String::new();
            for piece in [&text[..at - 3], &text[at - 3..at], &text[at..]] {
                shown.push_str(&redactor.push(piece));
            }
            shown.push_str(&redactor.finish());
            assert_eq!(shown, "before [redacted] after", "cut at {cut}");
        }
        // Text that only looks like the start of the key is shown once the next piece says so.
        let mut redactor = StreamRedactor::new(Some(&s));
        assert_eq!(redactor.push("an sk-"), "an ");
        assert_eq!(redactor.push("ip"), "sk-ip");
        assert_eq!(redactor.finish(), "");
    }

    /// Property: a key anywhere in any text, the text cut anywhere, never shows; everything
    /// else shows unchanged. 2,000 random texts.
    #[test]
    fn no_split_of_any_text_shows_the_key() {
        let s = secret(KEY);
        let mut state = 7u64;
        let mut next = |bound: u64| {
            state = crate::rng::mix64(state.wrapping_add(0x9E37_79B9_7F4A_7C15));
            state % bound
        };
        let alphabet: Vec<char> = "sk-test-CANRY0123 aé漢".chars().collect();
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..next(60) {
                if next(15) == 0 {
                    text.push_str(KEY);
                } else {
                    text.push(alphabet[next(alphabet.len() as u64) as usize]);
                }
            }
            let chars: Vec<char> = text.chars().collect();
            let mut redactor = StreamRedactor::new(Some(&s));
            let mut shown = String::new();
            let mut from = 0;
            while from < chars.len() {
                let to = (from + 1 + next(12) as usize).min(chars.len());
                shown.push_str(&redactor.push(&chars[from..to].iter().collect::<String>()));
                from = to;
            }
            shown.push_str(&redactor.finish());
            assert_eq!(shown, text.replace(KEY, MARK), "{text:?}");
        }
    }

    #[test]
    fn unescape_decodes_json_escapes() {
        assert_eq!(unescape(r#"a\u0062c \/ \" \\ \ud83d\ude00 \uzz"#), "abc / \" \\ \u{1F600} \\uzz");
    }
}
