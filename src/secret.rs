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

/// A secret (an API key, a header value).
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Every secret a batch holds, and the environment variables that hold them: API keys,
/// endpoint and tool header values (whole, and the token inside `Bearer X`), credentials
/// written into a base URL. Built by settings (and the scenarios' tool declarations as they
/// load), shared by every provider, tool and writer: text from outside is redacted with it
/// wherever it lands, and tools start without its variables.
#[derive(Clone, Default)]
pub(crate) struct Secrets {
    inner: std::sync::Arc<std::sync::RwLock<Held>>,
}

#[derive(Default)]
struct Held {
    /// Longest first, so that a secret holding another is replaced whole.
    needles: Vec<String>,
    variables: Vec<String>,
}

impl Secrets {
    /// A list holding `values` (each as [`add`](Self::add) takes it).
    #[cfg(test)]
    pub(crate) fn of<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let secrets = Self::default();
        for value in values {
            secrets.add(value);
        }
        secrets
    }

    fn held(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, needle: &str) {
        let needle = needle.trim();
        if needle.len() < MIN_SECRET_LEN {
            return;
        }
        let mut held = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !held.needles.iter().any(|n| n == needle) {
            held.needles.push(needle.to_owned());
            held.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        }
    }

    /// A key or a header value: looked for whole, and the token in it (the `X` of `Bearer X`
    /// or `token=X`, each part of `a=X; b=Y`), so that a server quoting only the token is
    /// caught too. Other words of a value are not looked for: `My Application` would cut
    /// "Application" out of every reply.
    pub(crate) fn add(&self, value: &str) {
        self.push(value);
        for part in value.split([',', ';']) {
            let token = part.trim().rsplit(|c: char| c.is_whitespace() || c == '=').next().unwrap_or_default();
            self.push(token);
        }
    }

    /// A header's value, once `${VAR}` in its `template` is expanded: a secret when any of it
    /// came from the environment, or when the header's name says it carries a credential
    /// (`Authorization`, `*-Key`, `*Token*`, `*Secret*`, `Cookie`, ...). A value written out
    /// in a file that is committed (`Content-Type: application/json`) is no secret, and
    /// redacting it would cut it out of every reply that mentions it.
    pub(crate) fn add_header(&self, name: &str, template: &str, value: &str) {
        if names_a_credential(name) || template.contains("${") {
            self.add(value);
        }
    }

    /// The credentials written into a URL: the user and password of `user:pw@`, and the
    /// values of query parameters named like a credential (`api_key`, `token`, `sig`, ...).
    pub(crate) fn add_url(&self, url: &str) {
        let Ok(parsed) = reqwest::Url::parse(url.trim()) else {
            return;
        };
        self.push(parsed.username());
        if let Some(password) = parsed.password() {
            self.push(password);
        }
        for (name, value) in parsed.query_pairs() {
            if names_a_credential(&name) {
                self.add(&value);
            }
        }
    }

    /// An environment variable that holds a secret: tools start without it.
    pub(crate) fn add_variable(&self, name: &str) {
        let mut held = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !held.variables.iter().any(|v| v == name) {
            held.variables.push(name.to_owned());
        }
    }

    /// The variables tools start without.
    pub(crate) fn variables(&self) -> Vec<String> {
        self.held().variables.clone()
    }

    fn needles(&self) -> Vec<String> {
        self.held().needles.clone()
    }

    /// Whether `text` holds a secret, plainly or JSON-escaped.
    pub(crate) fn is_in(&self, text: &str) -> bool {
        let held = self.held();
        let decoded = (text.contains('\\') && !held.needles.is_empty()).then(|| unescape(text));
        held.needles
            .iter()
            .any(|key| text.contains(key.as_str()) || decoded.as_deref().is_some_and(|d| d.contains(key.as_str())))
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let held = self.held();
        if held.needles.is_empty() {
            return text.to_owned();
        }
        let mut plain = text.to_owned();
        for key in &held.needles {
            if plain.contains(key.as_str()) {
                plain = plain.replace(key.as_str(), MARK);
            }
        }
        if plain.contains('\\') {
            let decoded = unescape(&plain);
            if held.needles.iter().any(|key| decoded.contains(key.as_str())) {
                // Spelled with escapes: the decoded text, redacted, is what is kept.
                return held.needles.iter().fold(decoded, |text, key| text.replace(key.as_str(), MARK));
            }
        }
        plain
    }

    /// A value the model produced, as it is, or [`HELD_THE_KEY`] when it holds a secret.
    pub(crate) fn screen(&self, value: String) -> String {
        if self.is_in(&value) { HELD_THE_KEY.to_owned() } else { value }
    }

    /// A JSON value (a tool's result) with every string in it redacted, keys too.
    pub(crate) fn redact_value(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.held().needles.is_empty() {
            return value;
        }
        match value {
            Value::String(text) => Value::String(self.redact(&text)),
            Value::Array(items) => Value::Array(items.into_iter().map(|item| self.redact_value(item)).collect()),
            Value::Object(fields) => Value::Object(
                fields.into_iter().map(|(key, item)| (self.redact(&key), self.redact_value(item))).collect(),
            ),
            other => other,
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} held)", self.held().needles.len())
    }
}

/// Whether a header's or a query parameter's name says it carries a credential
/// (`Authorization`, `X-Api-Key`, `access_token`, `Cookie`, `sig`, ...).
fn names_a_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["auth", "key", "token", "secret", "cookie", "password", "passwd", "sig", "session", "credential"]
        .iter()
        .any(|part| name.contains(part))
}

/// Redacts text that arrives in pieces (a streamed reply on its way to the terminal): a
/// secret split across two pieces is caught, because the tail that could begin one is held
/// back until the next piece shows whether it does.
pub(crate) struct StreamRedactor {
    keys: Vec<String>,
    pending: String,
}

impl StreamRedactor {
    pub(crate) fn new(secrets: &Secrets) -> Self {
        Self { keys: secrets.needles(), pending: String::new() }
    }

    /// Takes the next piece; returns what is safe to show now.
    pub(crate) fn push(&mut self, piece: &str) -> String {
        if self.keys.is_empty() {
            return piece.to_owned();
        }
        self.pending.push_str(piece);
        for key in &self.keys {
            if self.pending.contains(key.as_str()) {
                self.pending = self.pending.replace(key.as_str(), MARK);
            }
        }
        // Hold back the longest tail that is a beginning of a secret.
        let longest = self.keys.first().map_or(0, String::len);
        let mut hold = 0;
        for len in (1..longest.min(self.pending.len() + 1)).rev() {
            let start = self.pending.len() - len;
            if self.pending.is_char_boundary(start)
                && self.keys.iter().any(|key| key.len() > len && key.starts_with(&self.pending[start..]))
            {
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
                            let low = rest
                                .strip_prefix("\\u")
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .filter(|l| (0xDC00..0xE000).contains(l));
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

    fn secret(key: &str) -> Secrets {
        Secrets::of([key])
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
            let mut redactor = StreamRedactor::new(&s);
            let mut shown = String::new();
            for piece in [&text[..at - 3], &text[at - 3..at], &text[at..]] {
                shown.push_str(&redactor.push(piece));
            }
            shown.push_str(&redactor.finish());
            assert_eq!(shown, "before [redacted] after", "cut at {cut}");
        }
        // Text that only looks like the start of the key is shown once the next piece says so.
        let mut redactor = StreamRedactor::new(&s);
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
            let mut redactor = StreamRedactor::new(&s);
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
    fn every_kind_of_secret_is_found_whole_and_in_part() {
        let secrets = Secrets::default();
        secrets.add("sk-ant-KEY-0123456789");
        secrets.add("Bearer tok-HEADER-abcdef");
        secrets.add("X-Team-Secret-987654");
        secrets
            .add_url("https://alice:pw-URL-secret-42@example.test/v1?api_key=qs-KEY-77777777&api-version=2024-10-21");
        for (text, gone) in [
            ("echo sk-ant-KEY-0123456789", "sk-ant-KEY-0123456789"),
            ("bad token tok-HEADER-abcdef", "tok-HEADER-abcdef"),
            ("Authorization: Bearer tok-HEADER-abcdef", "tok-HEADER-abcdef"),
            ("team X-Team-Secret-987654!", "X-Team-Secret-987654"),
            ("login with pw-URL-secret-42", "pw-URL-secret-42"),
            ("?api_key=qs-KEY-77777777", "qs-KEY-77777777"),
        ] {
            assert!(secrets.is_in(text), "{text}");
            let redacted = secrets.redact(text);
            assert!(!redacted.contains(gone) && redacted.contains("[redacted]"), "{text} -> {redacted}");
        }
        // A plain header written in a file is no secret; one from the environment, or named
        // like a credential, is.
        secrets.add_header("Content-Type", "application/json", "application/json");
        secrets.add_header("X-Title", "${APP_TITLE}", "title-from-the-environment");
        secrets.add_header("X-Api-Key", "literal-key-in-the-file", "literal-key-in-the-file");
        assert!(!secrets.is_in("send application/json"));
        secrets.add("Team Application Nightly-Build-7");
        assert!(!secrets.is_in("an Application"), "only the token of a value is looked for alone");
        secrets.add("sid=cookie-one-123456; theme=cookie-two-654321");
        assert!(secrets.is_in("cookie-one-123456") && secrets.is_in("cookie-two-654321"));
        assert!(secrets.is_in("title-from-the-environment") && secrets.is_in("literal-key-in-the-file"));
        // The API version is no credential, and short words are no secrets.
        assert_eq!(secrets.redact("api-version=2024-10-21 alice Bearer"), "api-version=2024-10-21 alice Bearer");
        let value = serde_json::json!({"env": ["K=sk-ant-KEY-0123456789"], "tok-HEADER-abcdef": 1});
        let text = secrets.redact_value(value).to_string();
        assert!(!secrets.is_in(&text), "{text}");
    }

    #[test]
    fn a_stream_holds_back_the_start_of_any_secret() {
        let secrets = Secrets::of(["first-secret-AAAA", "second-secret-BBBB"]);
        let mut redactor = StreamRedactor::new(&secrets);
        let mut shown = String::new();
        for piece in ["x second-sec", "ret-BB", "BB and first-", "secret-AAAA."] {
            shown.push_str(&redactor.push(piece));
        }
        shown.push_str(&redactor.finish());
        assert_eq!(shown, "x [redacted] and [redacted].");
    }

    #[test]
    fn unescape_decodes_json_escapes() {
        assert_eq!(unescape(r#"a\u0062c \/ \" \\ \ud83d\ude00 \uzz"#), "abc / \" \\ \u{1F600} \\uzz");
    }
}
