//! What a scenario expects of a tool call's arguments: literals and `$` matchers.
//!
//! A literal matches an equal value: numbers as numbers (5 == 5.0), objects as subsets,
//! recursively, arrays element by element. A map whose keys start with `$` is a matcher:
//! `$one_of: [...]` (equal to one of; its items may be matchers), `$regex: "..."` (a string
//! the pattern finds a match in), `$any: true` (present, any value), `$absent: true` (not
//! present). A mismatch says which argument differs and how.

use regex::Regex;
use serde_json::Value;

/// An expected value.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// A number, string, boolean or null.
    Literal(Value),
    /// At least these keys, each matching.
    Object(Vec<(String, Pattern)>),
    /// Exactly this many elements, each matching.
    Array(Vec<Pattern>),
    OneOf(Vec<Pattern>),
    Regex(Regex),
    Any,
    Absent,
}

impl Pattern {
    /// Reads a pattern from its YAML/JSON value; an unknown `$` key or a malformed matcher is
    /// an error that says what was expected.
    pub fn parse(value: &Value) -> Result<Self, String> {
        match value {
            Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => {
                let mut entries = map.iter();
                let (Some((key, arg)), None) = (entries.next(), entries.next()) else {
                    return Err(format!("expected a matcher with one `$` key, found {}", Value::Object(map.clone())));
                };
                match key.as_str() {
                    "$one_of" => match arg {
                        Value::Array(items) if !items.is_empty() => {
                            Ok(Pattern::OneOf(items.iter().map(Pattern::parse).collect::<Result<_, _>>()?))
                        }
                        _ => Err(format!("expected `$one_of` to be a non-empty list, found {arg}")),
                    },
                    "$regex" => match arg {
                        Value::String(pattern) => Regex::new(pattern).map(Pattern::Regex).map_err(|err| {
                            let detail = err.to_string().lines().last().unwrap_or_default().trim().to_owned();
                            format!("expected a valid regular expression in `$regex`, `{pattern}` is not: {detail}")
                        }),
                        _ => Err(format!("expected `$regex` to be a string, found {arg}")),
                    },
                    "$any" | "$absent" if *arg == Value::Bool(true) => {
                        Ok(if key == "$any" { Pattern::Any } else { Pattern::Absent })
                    }
                    "$any" | "$absent" => Err(format!("expected `{key}: true`, found `{key}: {arg}`")),
                    other => Err(format!("unknown matcher `{other}`: expected $one_of, $regex, $any or $absent")),
                }
            }
            Value::Object(map) => Ok(Pattern::Object(
                map.iter().map(|(k, v)| Ok((k.clone(), Pattern::parse(v)?))).collect::<Result<_, String>>()?,
            )),
            Value::Array(items) => Ok(Pattern::Array(items.iter().map(Pattern::parse).collect::<Result<_, _>>()?)),
            literal => Ok(Pattern::Literal(literal.clone())),
        }
    }

    /// Whether `actual` (`None`: the key is not there) matches; `Err` says where and how it
    /// differs. `path` names the value (`arguments.to`).
    pub fn check(&self, actual: Option<&Value>, path: &str) -> Result<(), String> {
        match (self, actual) {
            (Pattern::Absent, None) | (Pattern::Any, Some(_)) => Ok(()),
            (Pattern::Absent, Some(value)) => Err(format!("`{path}` is {value}, expected it absent")),
            (Pattern::OneOf(items), _) => {
                if items.iter().any(|item| item.check(actual, path).is_ok()) {
                    Ok(())
                } else {
                    Err(format!("`{path}` is {}, expected one of {}", shown(actual), self.describe()))
                }
            }
            (_, None) => Err(format!("`{path}` is missing, expected {}", self.describe())),
            (Pattern::Regex(regex), Some(Value::String(text))) if regex.is_match(text) => Ok(()),
            (Pattern::Regex(regex), Some(value)) => {
                Err(format!("`{path}` is {value}, expected a string matching /{}/", regex.as_str()))
            }
            (Pattern::Literal(Value::Number(want)), Some(Value::Number(got))) if want.as_f64() == got.as_f64() => {
                Ok(())
            }
            (Pattern::Literal(want), Some(got)) if want == got => Ok(()),
            (Pattern::Literal(want), Some(got)) => Err(format!("`{path}` is {got}, expected {want}")),
            (Pattern::Object(entries), Some(Value::Object(got))) => {
                entries.iter().try_for_each(|(key, pattern)| pattern.check(got.get(key), &format!("{path}.{key}")))
            }
            (Pattern::Array(items), Some(Value::Array(got))) if items.len() == got.len() => items
                .iter()
                .zip(got)
                .enumerate()
                .try_for_each(|(i, (pattern, value))| pattern.check(Some(value), &format!("{path}[{i}]"))),
            (Pattern::Array(items), Some(got)) => {
                Err(format!("`{path}` is {got}, expected a list of {} item(s)", items.len()))
            }
            (Pattern::Object(_), Some(got)) => Err(format!("`{path}` is {got}, expected an object")),
        }
    }

    /// The pattern as it reads in a message.
    fn describe(&self) -> String {
        match self {
            Pattern::Literal(value) => value.to_string(),
            Pattern::Object(entries) => format!(
                "{{{}}}",
                entries.iter().map(|(k, p)| format!("{k}: {}", p.describe())).collect::<Vec<_>>().join(", ")
            ),
            Pattern::Array(items) => {
                format!("[{}]", items.iter().map(Pattern::describe).collect::<Vec<_>>().join(", "))
            }
            Pattern::OneOf(items) => {
                format!("[{}]", items.iter().map(Pattern::describe).collect::<Vec<_>>().join(", "))
            }
            Pattern::Regex(regex) => format!("/{}/", regex.as_str()),
            Pattern::Any => "any value".to_owned(),
            Pattern::Absent => "absent".to_owned(),
        }
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "absent".to_owned(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(pattern: Value, actual: Value) -> Result<(), String> {
        Pattern::parse(&pattern).unwrap().check(Some(&actual), "arguments")
    }

    #[test]
    fn literals_match_as_numbers_subsets_and_elements() {
        assert!(check(json!({"x": 5}), json!({"x": 5.0, "y": 1})).is_ok());
        assert!(check(json!({"a": {"b": [1, "two"]}}), json!({"a": {"b": [1, "two"], "c": 3}})).is_ok());
        assert_eq!(
            check(json!({"a": {"b": 1}}), json!({"a": {"b": 2}})),
            Err("`arguments.a.b` is 2, expected 1".to_owned())
        );
        assert_eq!(
            check(json!({"l": [1, 2]}), json!({"l": [1, 2, 3]})),
            Err("`arguments.l` is [1,2,3], expected a list of 2 item(s)".to_owned())
        );
        assert_eq!(
            check(json!({"city": "Paris"}), json!({})),
            Err("`arguments.city` is missing, expected \"Paris\"".to_owned())
        );
    }

    #[test]
    fn matchers_and_their_negatives() {
        let pattern = json!({
            "from": "SFO",
            "to": {"$one_of": ["JFK", "EWR"]},
            "date": {"$regex": "^2026-"},
            "passengers": {"$any": true},
            "cabin": {"$absent": true},
            "seats": {"$one_of": [1, {"$absent": true}]}
        });
        let good = json!({"from": "SFO", "to": "EWR", "date": "2026-03-01", "passengers": 2});
        assert!(check(pattern.clone(), good.clone()).is_ok());
        let with = |key: &str, value: Value| {
            let mut v = good.clone();
            v[key] = value;
            v
        };
        assert_eq!(
            check(pattern.clone(), with("to", json!("LAX"))),
            Err("`arguments.to` is \"LAX\", expected one of [\"JFK\", \"EWR\"]".to_owned())
        );
        assert_eq!(
            check(pattern.clone(), with("date", json!("2025-12-31"))),
            Err("`arguments.date` is \"2025-12-31\", expected a string matching /^2026-/".to_owned())
        );
        assert_eq!(
            check(pattern.clone(), with("cabin", json!("first"))),
            Err("`arguments.cabin` is \"first\", expected it absent".to_owned())
        );
        assert!(check(pattern.clone(), with("seats", json!(1.0))).is_ok());
        assert!(
            check(pattern.clone(), with("seats", json!(2)))
                .unwrap_err()
                .contains("`arguments.seats` is 2, expected one of [1, absent]")
        );
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("passengers");
        assert_eq!(check(pattern, missing), Err("`arguments.passengers` is missing, expected any value".to_owned()));
    }

    #[test]
    fn malformed_matchers_are_refused() {
        assert!(Pattern::parse(&json!({"$oneof": [1]})).unwrap_err().contains("unknown matcher `$oneof`"));
        assert!(Pattern::parse(&json!({"$one_of": 1})).unwrap_err().contains("non-empty list"));
        assert!(Pattern::parse(&json!({"$regex": "("})).unwrap_err().contains("valid regular expression"));
        assert!(Pattern::parse(&json!({"$any": false})).unwrap_err().contains("`$any: true`"));
        assert!(Pattern::parse(&json!({"$any": true, "x": 1})).unwrap_err().contains("one `$` key"));
        assert!(Pattern::parse(&json!({"a": [{"$nope": 1}]})).unwrap_err().contains("unknown matcher `$nope`"));
    }
}
