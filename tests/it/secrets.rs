//! Every secret runner holds stays where it belongs, whatever a server or a tool does: no
//! credential follows a redirect to another origin (per provider, for endpoint headers and for
//! `http` tools); tools start without the provider variables; and every kind of secret
//! (keys, endpoint and tool header values and the token inside them, MCP headers,
//! credentials in a URL) echoed back, whole or in part, reaches no log, report, cache,
//! terminal or next request.

use serde_json::{Value, json};

use crate::server::{MockServer, Reply, Request, text, tool_calls};
use crate::{KEY, Outcome, Workspace, exec};

const ANTHROPIC_KEY: &str = "sk-ant-test-redirect-0c1d2e3f-never-written";
const AZURE_KEY: &str = "azure-key-redirect-5b6c7d8e-never-written";
const ORG: &str = "org-redirect-1234567890";
const TEAM: &str = "team-secret-redirect-abcdef12";

/// Every file runner wrote in the workspace (not the test's own inputs), and both outputs,
/// as one text.
fn everything(ws: &Workspace, out: &Outcome) -> String {
    let mut all = format!("{}\n{}\n", out.stdout, out.stderr);
    for (path, bytes) in written(ws) {
        all.push_str(&format!("{}\n{}", path.display(), String::from_utf8_lossy(&bytes)));
    }
    all
}

fn written(ws: &Workspace) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    ws.all_files().into_iter().filter(|(path, _)| !path.ends_with("s.yaml") && !path.ends_with("runner.yaml")).collect()
}

/// A server that answers every request with a 307 to `target` (another origin).
fn redirecting(target: &str) -> MockServer {
    let target = target.to_owned();
    MockServer::start(move |request| {
        Reply::bytes(307, Vec::new()).header("location", &format!("{target}{}", request.path))
    })
}

/// Whether any request `elsewhere` received carries one of `secrets` in a header.
fn leaked(elsewhere: &MockServer, secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for request in elsewhere.requests() {
        for (name, value) in &request.headers {
            if secrets.iter().any(|s| value.contains(s)) {
                found.push(format!("{name}: {value}"));
            }
        }
    }
    found
}

#[test]
fn no_credential_follows_a_redirect_to_another_origin_for_any_provider() {
    let elsewhere = MockServer::start(|_| text("you reached the other server", 1, 1));
    let entry = redirecting(&elsewhere.url());
    let secrets = [KEY, ANTHROPIC_KEY, AZURE_KEY, ORG, TEAM];
    let ws = Workspace::new();
    ws.write(
        "runner.yaml",
        &format!("endpoints:\n  team:\n    base_url: {}/v1\n    headers: {{X-Team: '${{TEAM_TOKEN}}'}}\n", entry.url()),
    );
    let cases: [(&str, Vec<(&str, String)>); 4] = [
        ("openai:gpt-4o-mini", vec![("OPENAI_ORG_ID", ORG.to_owned())]),
        (
            "anthropic:claude-haiku-4-5",
            vec![("ANTHROPIC_BASE_URL", entry.url()), ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_owned())],
        ),
        ("azure:my-gpt", vec![("AZURE_OPENAI_ENDPOINT", entry.url()), ("AZURE_OPENAI_API_KEY", AZURE_KEY.to_owned())]),
        ("team:some-model", vec![("TEAM_TOKEN", TEAM.to_owned())]),
    ];
    for (model, env) in cases {
        let mut command = ws.runner(&entry.url());
        for (name, value) in &env {
            command.env(name, value);
        }
        let out = exec(command.args(["ask", "--no-stream", "--tools", "none", "-m", model, "hi"]));
        assert_eq!(out.code, 1, "{model}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("HTTP 307") && out.stderr.contains("redirected to another origin"),
            "{model}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("other server"), "{model}: the redirect was followed");
        let all = everything(&ws, &out);
        assert!(secrets.iter().all(|secret| !all.contains(secret)), "{model}: a secret reached a file or the terminal");
    }
    assert!(elsewhere.requests().is_empty(), "a request reached the other origin: {:?}", leaked(&elsewhere, &secrets));
}

#[test]
fn http_tools_follow_redirects_only_within_their_origin() {
    let token = "tool-token-redirect-0123456789";
    let elsewhere = MockServer::start(|_| Reply::json(200, json!({"reached": "elsewhere"})));
    let target = elsewhere.url();
    let tool_server = MockServer::start(move |request| match request.path.as_str() {
        "/away" => Reply::bytes(307, Vec::new()).header("location", &format!("{target}/steal")),
        "/moved" => Reply::bytes(307, Vec::new()).header("location", "/here"),
        "/here" => Reply::json(200, json!({"reached": "here", "auth": request.header("x-token").is_some()})),
        _ => Reply::json(404, json!({})),
    });
    let model = |request: &Request| {
        if request.last_message()["role"] == "tool" {
            return text(
                &format!("tool said {}", request.last_message()["content"].as_str().unwrap_or_default()),
                5,
                5,
            );
        }
        tool_calls(&[("c1", "lookup", json!({}))], 5, 5)
    };
    for (path, expected) in [("/away", None), ("/moved", Some(json!({"reached": "here", "auth": true})))] {
        let run = crate::Test::new()
            .server(model)
            .env("TOOL_TOKEN", token)
            .file(
                "s.yaml",
                &format!(
                    "name: s\ntools:\n  - name: lookup\n    http:\n      url: {}{path}\n      headers: {{X-Token: '${{TOOL_TOKEN}}'}}\nturns:\n  - user: go\n",
                    tool_server.url()
                ),
            )
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
            .run();
        let call = &run.logs()[0].1["turns"][0]["tool_calls"][0];
        match expected {
            None => assert!(call["error"].as_str().unwrap().contains("redirected to another origin"), "{call}"),
            Some(result) => assert_eq!(call["result"], result, "{call}"),
        }
    }
    assert!(
        elsewhere.requests().is_empty(),
        "the tool's request reached the other origin: {:?}",
        leaked(&elsewhere, &[token])
    );
}

/// The model: `env` makes it call the `env` tool; after a tool round it repeats the result.
fn env_model(request: &Request) -> Reply {
    let last = request.last_message();
    if last["role"] == "tool" {
        return text(&format!("Tool said: {}", last["content"].as_str().unwrap_or_default()), 5, 5);
    }
    tool_calls(&[("c1", "env", json!({}))], 5, 5)
}

#[test]
fn command_tools_and_mcp_servers_start_without_the_provider_keys() {
    let server_path = crate::test_server();
    let command_tool = "  - name: env\n    command: [env]\n";
    let mcp_tool = format!("  - mcp:\n      command: ['{server_path}']\n      include: [env]\n");
    for tools in [command_tool.to_owned(), mcp_tool] {
        let run = crate::Test::new()
            .server(env_model)
            .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
            .env("OPENAI_ORG_ID", ORG)
            .env("UNRELATED_SETTING", "kept-for-tools")
            .file("s.yaml", &format!("name: s\ntools:\n{tools}turns:\n  - user: env\n"))
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--cache", "cache"])
            .run();
        run.success();
        let result = run.logs()[0].1["turns"][0]["tool_calls"][0]["result"].to_string();
        assert!(result.contains("UNRELATED_SETTING=kept-for-tools"), "{result}");
        for var in ["OPENAI_API_KEY=", "ANTHROPIC_API_KEY=", "OPENAI_ORG_ID=", "OPENAI_BASE_URL="] {
            assert!(!result.contains(var), "{var} reached the tool: {result}");
        }
        let out = Outcome { code: run.code, stdout: run.stdout.clone(), stderr: run.stderr.clone() };
        let all = everything(&run, &out);
        for secret in [KEY, ANTHROPIC_KEY, ORG] {
            assert!(!all.contains(secret), "a secret reached a file or the terminal");
            assert!(
                !run.server().chat_bodies().iter().any(|b| b.to_string().contains(secret)),
                "a secret reached the model"
            );
        }
    }
}

#[test]
fn every_kind_of_secret_echoed_whole_or_in_part_is_redacted_everywhere() {
    let tool_token = "tok-echo-HEADER-0a1b2c3d4e";
    let query_key = "qs-echo-KEY-5f6a7b8c9d";
    let url_password = "pw-echo-URL-77aa88bb99";
    let team = "team-echo-HEADER-fedcba98";
    let mcp_token = "mcp-echo-TOKEN-13572468";
    // The tool server quotes every header and the query string back, and a bare token.
    let echo = MockServer::start(move |request| {
        let headers: Vec<String> = request.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let token = request.header("authorization").unwrap_or_default().trim_start_matches("Bearer ").to_owned();
        match request.path.split('?').next().unwrap_or_default() {
            "/mcp" => Reply::bytes(500, format!("bad token {token}; headers {}", headers.join(" ")).into_bytes()),
            _ => Reply::json(
                400,
                json!({"error": format!("bad token {token}"), "headers": headers, "query": request.path}),
            ),
        }
    });
    // The model server quotes the endpoint header and its basic credentials in its reply.
    let model = MockServer::start(move |request: &Request| {
        let last = request.last_message();
        if last["role"] == "tool" {
            let echoed = format!(
                "{} / team {} / auth {}",
                last["content"].as_str().unwrap_or_default(),
                request.header("x-team").unwrap_or_default(),
                request.header("authorization").unwrap_or_default()
            );
            return text(&echoed, 5, 5);
        }
        tool_calls(&[("c1", "lookup", json!({}))], 5, 5)
    });
    let ws = Workspace::new();
    let base = model.url().replace("http://", &format!("http://user:{url_password}@"));
    ws.write(
        "runner.yaml",
        &format!("endpoints:\n  team:\n    base_url: {base}/v1\n    headers: {{X-Team: '${{TEAM_TOKEN}}'}}\n"),
    );
    ws.write(
        "s.yaml",
        &format!(
            "name: s\ntools:\n  - name: lookup\n    http:\n      url: {}/lookup?api_key={query_key}\n      headers: {{Authorization: 'Bearer ${{TOOL_TOKEN}}'}}\nturns:\n  - user: go\n---\nname: m\ntools:\n  - mcp:\n      url: {}/mcp\n      headers: {{Authorization: 'Bearer ${{MCP_TOKEN}}'}}\nturns:\n  - user: go\n",
            echo.url(),
            echo.url()
        ),
    );
    let out = exec(
        ws.runner(&model.url())
            .env("TOOL_TOKEN", tool_token)
            .env("TEAM_TOKEN", team)
            .env("MCP_TOKEN", mcp_token)
            .args(["run", "s.yaml", "-m", "team:m", "--cache", "cache", "--html", "page.html", "--junit", "junit.xml"]),
    );
    let logs = ws.logs();
    assert_eq!(logs.len(), 2, "{}", out.stderr);
    // `runner models` shows the endpoint's address without its password.
    let models = exec(ws.runner(&model.url()).env("TEAM_TOKEN", team).args(["models"]));
    assert_eq!(models.code, 0, "{}", models.stderr);
    assert!(models.stdout.contains("http://user:[redacted]@127.0.0.1"), "{}", models.stdout);
    assert!(!models.stdout.contains(url_password));
    // The tool's error and the model's echo were recorded, redacted.
    let names: Vec<&String> = logs.iter().map(|(n, _)| n).collect();
    let s = &logs.iter().find(|(_, log)| log["scenario"]["name"] == "s").unwrap_or_else(|| panic!("{names:?}")).1;
    let error = s["turns"][0]["tool_calls"][0]["error"].as_str().unwrap_or_else(|| panic!("{s}"));
    assert!(error.contains("bad token [redacted]"), "{error}");
    assert!(s["turns"][0]["reply"].as_str().unwrap().contains("team [redacted]"), "{}", s["turns"][0]["reply"]);
    let m = &logs.iter().find(|(_, log)| log["scenario"]["name"] == "m").unwrap().1;
    assert!(m["error"].as_str().unwrap().contains("HTTP 500"), "{}", m["error"]);
    let all = everything(&ws, &out);
    for secret in [tool_token, query_key, url_password, team, mcp_token] {
        let files: Vec<String> = written(&ws)
            .into_iter()
            .filter(|(_, b)| String::from_utf8_lossy(b).contains(secret))
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert!(!all.contains(secret), "{secret} reached a file or the terminal: {files:?}");
        let sent: Vec<Value> = model.chat_bodies();
        assert!(!sent.iter().any(|b| b.to_string().contains(secret)), "{secret} reached the model's next request");
    }
}
