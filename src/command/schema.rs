//! `runner schema`: the JSON Schema of scenario files.

use super::EXIT_PASSED;

pub(crate) fn schema() -> anyhow::Result<u8> {
    super::print(&format!("{}\n", crate::scenario::SCHEMA.trim_end()))?;
    Ok(EXIT_PASSED)
}

#[cfg(test)]
mod tests {
    /// The schema `runner schema` prints, compiled with the crate that checks declared tools.
    fn scenario_schema() -> serde_json::Value {
        serde_json::from_str(crate::scenario::SCHEMA).expect("the schema is JSON")
    }

    /// Every way `document` breaks the scenario schema.
    fn validate(schema: &serde_json::Value, document: &serde_json::Value) -> Vec<String> {
        let validator = jsonschema::validator_for(schema).expect("the schema compiles");
        crate::tools::schema_problems(&validator, document)
    }

    /// Every document of a YAML file, as JSON values.
    fn documents(text: &str) -> Vec<serde_json::Value> {
        serde_saphyr::from_multiple::<serde_json::Value>(text).expect("valid YAML")
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
        let validator = crate::scenario::Validator::new(&registry, &crate::scenario::any_model);
        assert!(crate::scenario::parse_scenarios(full, "f.yaml", "f", &validator).is_ok());
        assert_eq!(validate(&schema, &documents(full)[0]), Vec::<String>::new());
        // The whole-conversation fields, and an agent program.
        let simulated = "name: sim\nsimulate:\n  model: openai:gpt-4o-mini\n  goal: g\n  persona: p\n  max_turns: 3\n\
                         expect:\n  ended: stop\n  max_turns: 4\n  called: [get_weather]\n  not_called: [reverse_text]\n  \
                         tool_calls_unordered: [{name: get_weather}]\n  contains: a\n  not_contains: b\n  regex: c\n  \
                         max_cost_usd: 0.5\n  judge: {rubric: r, model: openai:gpt-4o}\n";
        let agent =
            "name: agent\nagent:\n  command: [python3, a.py]\n  env: {A: b}\n  timeout_secs: 5\nturns:\n  - user: hi\n";
        for doc in [simulated, agent] {
            assert!(crate::scenario::parse_scenarios(doc, "f.yaml", "f", &validator).is_ok(), "{doc}");
            assert_eq!(validate(&schema, &documents(doc)[0]), Vec::<String>::new(), "{doc}");
        }
        // What the loader rejects, the schema rejects too.
        for bad in [
            "turns: []\n",
            "temperature: 3\nturns:\n  - user: hi\n",
            "colour: red\nturns:\n  - user: hi\n",
            "tools: [{name: two_kinds, result: 1, command: [x]}]\nturns:\n  - user: hi\n",
            "turns:\n  - user: hi\n    expect:\n      contain: x\n",
            "max_tokens: 0\nturns:\n  - user: hi\n",
            "simulate: {model: openai:x}\n",
            "simulate: {goal: g, model: openai:x}\nexpect: {ended: maybe}\n",
            "agent: {command: [a], shell: true}\nturns:\n  - user: hi\n",
            "turns:\n  - user: hi\n    expect:\n      ended: stop\n",
            "turns:\n  - user: hi\nexpect:\n  tool_calls: [{name: get_weather}]\n",
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
