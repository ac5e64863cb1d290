//! A JSON Schema validator for the part of the language runner's own schemas use: `type`,
//! `enum`, `properties`, `required`, `additionalProperties: false`, `propertyNames`, `items`,
//! `minItems`, `minLength`, `pattern`, `minimum`, `maximum`, `exclusiveMinimum`, `oneOf`
//! and local `$ref`s (`#/$defs/NAME`). Keywords it does not know are ignored, as the
//! specification asks of annotations.

use serde_json::Value;

/// Every way `value` breaks `schema`, each as `PATH: what was expected`, where PATH is a
/// JSON Pointer into `value` (`/turns/0/user`; empty for the root).
pub(crate) fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "", &mut errors);
    errors
}

fn check(root: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else { return };
    let at = if path.is_empty() { "/" } else { path };
    macro_rules! fail {
        ($($message:tt)*) => { errors.push(format!("{at}: {}", format!($($message)*))) };
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        match resolve(root, reference) {
            Some(target) => check(root, target, value, path, errors),
            None => errors.push(format!("{path}: unresolvable $ref {reference}")),
        }
        return;
    }
    if let Some(expected) = schema.get("type")
        && !type_matches(expected, value)
    {
        fail!("expected {}, found {}", type_names(expected), kind(value));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let names: Vec<String> = options.iter().map(Value::to_string).collect();
        fail!("expected one of {}, found {value}", names.join(", "));
    }
    if let Some(number) = value.as_f64() {
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        if let Some(min) = bound("minimum").filter(|min| number < *min) {
            fail!("expected at least {min}, found {number}");
        }
        if let Some(max) = bound("maximum").filter(|max| number > *max) {
            fail!("expected at most {max}, found {number}");
        }
        if let Some(min) = bound("exclusiveMinimum").filter(|min| number <= *min) {
            fail!("expected more than {min}, found {number}");
        }
    }
    if let Some(text) = value.as_str() {
        if let Some(min) =
            schema.get("minLength").and_then(Value::as_u64).filter(|min| (text.chars().count() as u64) < *min)
        {
            fail!("expected at least {min} character(s)");
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text))
        {
            fail!("expected text matching {pattern}, found {text:?}");
        }
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options.iter().filter(|option| validate_at(root, option, value)).count();
        if matching != 1 {
            fail!("expected exactly one of {} alternatives to match, {matching} did", options.len());
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                fail!("expected `{name}`, which is required");
            }
        }
        for (name, item) in object {
            let item_path = format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"));
            if let Some(names) = schema.get("propertyNames") {
                check(root, names, &Value::String(name.clone()), &item_path, errors);
            }
            match properties.and_then(|p| p.get(name)) {
                Some(item_schema) => check(root, item_schema, item, &item_path, errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    let known: Vec<&str> = properties.into_iter().flat_map(|p| p.keys()).map(String::as_str).collect();
                    errors.push(format!("{item_path}: unknown field `{name}`, expected one of: {}", known.join(", ")));
                }
                None => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64).filter(|min| (items.len() as u64) < *min) {
            fail!("expected at least {min} item(s)");
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(root, item_schema, item, &format!("{path}/{i}"), errors);
            }
        }
    }
}

fn validate_at(root: &Value, schema: &Value, value: &Value) -> bool {
    let mut errors = Vec::new();
    check(root, schema, value, "", &mut errors);
    errors.is_empty()
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    root.pointer(reference.strip_prefix('#')?)
}

fn type_matches(expected: &Value, value: &Value) -> bool {
    match expected {
        Value::String(name) => is_type(name, value),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(|name| is_type(name, value)),
        _ => true,
    }
}

fn is_type(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0),
        _ => true,
    }
}

fn type_names(expected: &Value) -> String {
    match expected {
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        other => other.as_str().unwrap_or("?").to_owned(),
    }
}

/// The JSON type of `value`, as JSON Schema names it.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::validate;

    fn scenario_schema() -> serde_json::Value {
        serde_json::from_str(crate::scenario::SCHEMA).expect("the schema is JSON")
    }

    /// Every document of a YAML file, as JSON values.
    fn documents(text: &str) -> Vec<serde_json::Value> {
        serde_saphyr::from_multiple::<serde_json::Value>(text).expect("valid YAML")
    }

    #[test]
    fn keywords() {
        let schema = json!({
            "type": "object", "additionalProperties": false, "required": ["a"],
            "properties": {
                "a": {"type": "integer", "minimum": 1, "maximum": 3},
                "b": {"type": "array", "minItems": 1, "items": {"enum": ["x", "y"]}},
                "c": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                "d": {"type": "number", "exclusiveMinimum": 0},
                "e": {"$ref": "#/$defs/e"}
            },
            "$defs": {"e": {"type": "string", "pattern": "^[a-z]+:.+$", "minLength": 3}}
        });
        assert!(validate(&schema, &json!({"a": 2, "b": ["x"], "c": "s", "d": 0.5, "e": "p:q"})).is_empty());
        let errors = validate(&schema, &json!({"a": 4.5, "b": [], "c": 1, "d": 0, "e": "P", "z": 1}));
        let text = errors.join("\n");
        for expected in [
            "/a: expected integer, found number",
            "/b: expected at least 1 item(s)",
            "/c: expected exactly one of 2 alternatives to match, 0 did",
            "/d: expected more than 0, found 0",
            "/e: expected at least 3 character(s)",
            "/e: expected text matching",
            "/z: unknown field `z`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(
            validate(&schema, &json!({"b": ["w"]})),
            vec!["/: expected `a`, which is required", "/b/0: expected one of \"x\", \"y\", found \"w\""]
        );
    }

    #[test]
    fn shipped_scenarios_reference_and_satisfy_the_schema() {
        let schema = scenario_schema();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut files = 0;
        for entry in
            std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            assert!(
                text.starts_with("# yaml-language-server: $schema=../schema/scenario.schema.json\n"),
                "{}",
                entry.path().display()
            );
            for document in documents(&text) {
                assert_eq!(validate(&schema, &document), Vec::<String>::new(), "{}", entry.path().display());
            }
            files += 1;
        }
        assert!(files >= 3);
    }

    #[test]
    fn schema_and_loader_agree_on_every_field() {
        let schema = scenario_schema();
        // Every field the loader reads, in one document.
        let full = "name: full\ndescription: d\nmodel: openai:gpt-4o-mini\nsystem: s\ntemperature: 0.5\ntop_p: 0.9\nmax_tokens: 10\nseed: 1\n\
                    tools: [get_weather, reverse_text]\ntool_results:\n  get_weather: {city: Paris}\nmax_tool_rounds: 2\nturns:\n  - user: hi\n    expect:\n      \
                    tool_calls:\n        - name: get_weather\n          arguments: {city: {$one_of: [Paris, Rome]}, days: {$any: true}}\n      \
                    tool_calls_unordered: [{name: reverse_text}]\n      called: [get_weather, {name: reverse_text, arguments: {text: {$regex: a}}}]\n      \
                    not_called: [get_random_number]\n      contains: [a, b]\n      not_contains: c\n      regex: 'x.'\n      \
                    max_cost_usd: 0.1\n      max_latency_ms: 100\n";
        let registry = crate::tools::ToolRegistry::builtin();
        let check_model = |_: &str| Ok(());
        let validator = crate::scenario::Validator::new(&registry, &check_model);
        assert!(crate::scenario::parse_scenarios(full, "f.yaml", "f", &validator).is_ok());
        assert_eq!(validate(&schema, &documents(full)[0]), Vec::<String>::new());
        // What the loader rejects, the schema rejects too.
        for bad in [
            "turns: []\n",
            "temperature: 3\nturns:\n  - user: hi\n",
            "colour: red\nturns:\n  - user: hi\n",
            "tools: [{name: two_kinds, result: 1, command: [x]}]\nturns:\n  - user: hi\n",
            "turns:\n  - user: hi\n    expect:\n      contain: x\n",
            "max_tokens: 0\nturns:\n  - user: hi\n",
        ] {
            assert!(
                crate::scenario::parse_scenarios(bad, "b.yaml", "b", &validator).is_err(),
                "loader accepts {bad:?}"
            );
            assert!(!validate(&schema, &documents(bad)[0]).is_empty(), "schema accepts {bad:?}");
        }
    }

    #[test]
    fn the_scenario_schema_is_valid_against_the_draft_2020_12_metaschema() {
        let schema = scenario_schema();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
        if let Err(err) = jsonschema::meta::validate(&schema) {
            panic!("schema/scenario.schema.json is not a valid JSON Schema: {err}");
        }
        // And the same crate agrees with this validator on the shipped scenarios.
        let validator = jsonschema::validator_for(&schema).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for entry in
            std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        {
            for document in documents(&std::fs::read_to_string(entry.path()).unwrap()) {
                assert!(validator.is_valid(&document), "{}", entry.path().display());
            }
        }
    }

    #[test]
    fn tool_enum_lists_every_builtin() {
        let schema = scenario_schema();
        let listed: Vec<&str> = schema["properties"]["tools"]["items"]["oneOf"][0]["examples"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let builtin: Vec<String> = crate::tools::ToolRegistry::builtin().iter().map(|t| t.name().to_owned()).collect();
        assert_eq!(listed, builtin);
    }
}
