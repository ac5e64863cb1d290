//! Hostile cache trees: `runner cache prune` and `stats` pointed at a folder that is not only
//! a cache (a project, links to other folders, foreign JSON, folders and FIFOs at entry
//! paths) count and delete only what is provably an entry; `run --cache` never writes
//! through a link, never hangs on a FIFO and never reads a device; a cache that cannot take
//! entries is refused before anything is sent.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::run::assistant;
use crate::server::MockServer;
use crate::{Workspace, exec};

const HELLO: &str = "name: greet\nturns:\n  - user: hello\n";

/// A valid entry of key `key`, recorded `days` ago.
fn entry(key: &str, days: i64) -> String {
    json!({
        "key": key, "provider": "openai", "base_url": null, "model": "gpt-4o-mini", "request": {},
        "response": {"content": "hi", "tool_calls": [], "finish_reason": "stop"}, "usage": null,
        "recorded_at": (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339(), "runner_version": "0"
    })
    .to_string()
}

fn key(n: u8) -> String {
    format!("ab{}", format!("{n:02x}").repeat(31))
}

/// Sets a file's modification time `days` back (what a careless prune keys on).
fn age(path: &Path, days: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(days * 86_400)).unwrap();
}

#[test]
fn prune_and_stats_touch_only_what_is_provably_an_entry() {
    let ws = Workspace::new();
    let root = ws.path().join("project");
    // A project mistaken for a cache: two-letter folders with old JSON files in them.
    for (path, text) in [
        ("config/app.json", "{\"db\": 1}"),
        (".vscode/settings.json", "{}"),
        ("ab/notes.json", "{}"),
        ("ab/readme.txt", "x"),
    ] {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        age(&file, 400);
    }
    // An old entry (goes), a new one (stays), a file named like an entry holding another key
    // (stays), a folder at an entry path (stays, and does not stop the prune).
    let (old, new, liar, folder) = (key(1), key(2), key(3), key(4));
    std::fs::write(root.join(format!("ab/{old}.json")), entry(&old, 400)).unwrap();
    std::fs::write(root.join(format!("ab/{new}.json")), entry(&new, 1)).unwrap();
    std::fs::write(root.join(format!("ab/{liar}.json")), entry(&key(9), 400)).unwrap();
    std::fs::create_dir_all(root.join(format!("ab/{folder}.json"))).unwrap();
    // A link to another folder that holds an old entry of its own: never followed.
    let outside = ws.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let far = format!("cd{}", "5".repeat(62));
    std::fs::write(outside.join(format!("{far}.json")), entry(&far, 400)).unwrap();
    symlink(&outside, root.join("cd")).unwrap();
    // A link at an entry path to an old entry elsewhere: not an entry, never deleted through.
    let linked = key(5);
    std::fs::write(outside.join("target.json"), entry(&linked, 400)).unwrap();
    symlink(outside.join("target.json"), root.join(format!("ab/{linked}.json"))).unwrap();

    let out = exec(ws.runner("http://127.0.0.1:9").args(["cache", "stats", "project"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("project: 2 entries"), "{}", out.stdout);
    assert!(out.stdout.contains("other file(s), folder(s) or link(s) are not cache entries"), "{}", out.stdout);

    let out = exec(ws.runner("http://127.0.0.1:9").args(["cache", "prune", "project", "--older-than", "30d"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("removed 1 entries"), "{}", out.stdout);
    assert!(!root.join(format!("ab/{old}.json")).exists());
    for kept in ["config/app.json", ".vscode/settings.json", "ab/notes.json", "ab/readme.txt"] {
        assert!(root.join(kept).exists(), "{kept} was deleted");
    }
    for kept in [&new, &liar, &folder, &linked] {
        assert!(std::fs::symlink_metadata(root.join(format!("ab/{kept}.json"))).is_ok(), "{kept} was deleted");
    }
    assert!(
        outside.join(format!("{far}.json")).exists() && outside.join("target.json").exists(),
        "a link was followed"
    );
}

#[test]
fn an_age_past_any_calendar_is_a_usage_error() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("cache")).unwrap();
    for age in ["9000000000000s", "99999999999999999999d", "400000w"] {
        let out = exec(ws.runner("http://127.0.0.1:9").args(["cache", "prune", "cache", "--older-than", age]));
        assert_eq!(out.code, 2, "{age}: {}", out.stderr);
        assert!(
            out.stderr.contains("at most 1000 years") || out.stderr.contains("is not an age"),
            "{age}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{age}: {}", out.stderr);
    }
    let out = exec(ws.runner("http://127.0.0.1:9").args(["cache", "prune", "cache", "--older-than", "36500d"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Records `HELLO` once into `cache`; returns the entry's path.
fn recorded(ws: &Workspace, server: &MockServer) -> std::path::PathBuf {
    ws.write("s.yaml", HELLO);
    let out = exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--cache", "cache"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut files = Vec::new();
    for shard in std::fs::read_dir(ws.path().join("cache")).unwrap().flatten() {
        files.extend(std::fs::read_dir(shard.path()).unwrap().flatten().map(|f| f.path()));
    }
    assert_eq!(files.len(), 1);
    files.remove(0)
}

#[test]
fn a_link_at_an_entry_path_is_replaced_never_written_through() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    let path = recorded(&ws, &server);
    let victim = ws.path().join("bashrc");
    std::fs::write(&victim, "export PATH=/usr/bin\n").unwrap();
    std::fs::remove_file(&path).unwrap();
    symlink(&victim, &path).unwrap();
    // The link is no entry (a miss), and the answer stored replaces the link itself.
    let out = exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--cache",
        "cache",
        "--refresh",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "export PATH=/usr/bin\n");
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file(), "the entry is a regular file again");
    // A shard that is a link to another folder is not written into.
    let elsewhere = ws.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let shard = path.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&shard).unwrap();
    symlink(&elsewhere, &shard).unwrap();
    let out = exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--cache", "cache"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "an entry went through the linked shard");
}

#[test]
fn fifos_and_devices_at_entry_paths_neither_hang_nor_fill_memory() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    let path = recorded(&ws, &server);
    for kind in ["fifo", "dev-zero"] {
        let _ = std::fs::remove_file(&path);
        match kind {
            "fifo" => assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success()),
            _ => symlink("/dev/zero", &path).unwrap(),
        }
        let started = Instant::now();
        let out =
            exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--cache", "cache"]));
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file(), "{kind}: replaced by a regular file");
        let stored: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(stored["response"]["content"], "Hello there!", "{kind}: a miss, then stored");
        // And the tools that only read the cache do not hang on one either.
        let _ = std::fs::remove_file(&path);
        if kind == "fifo" {
            assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        } else {
            symlink("/dev/zero", &path).unwrap();
        }
        for args in [&["cache", "stats", "cache"][..], &["cache", "prune", "cache", "--older-than", "1d"]] {
            let out = exec(ws.runner(&server.url()).args(args));
            assert_eq!(out.code, 0, "{kind} {args:?}: {}", out.stderr);
        }
        let out = exec(ws.runner(&server.url()).args([
            "run",
            "s.yaml",
            "-m",
            "openai:gpt-4o-mini",
            "--cache",
            "cache",
            "--replay",
        ]));
        assert_eq!(out.code, 1, "{kind}: a miss under --replay: {}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(60), "{kind}: took {:?}", started.elapsed());
    }
}

#[test]
fn a_cache_that_cannot_take_entries_is_refused_before_anything_is_sent() {
    let server = MockServer::start(assistant);
    let ws = Workspace::new();
    ws.write("s.yaml", HELLO);
    ws.write("not-a-folder", "a file where the cache folder would be");
    let out =
        exec(ws.runner(&server.url()).args(["run", "s.yaml", "-m", "openai:gpt-4o-mini", "--cache", "not-a-folder"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("the cache not-a-folder cannot take new entries"), "{}", out.stderr);
    assert!(server.chat_bodies().is_empty(), "a request was sent");
    // --replay only reads: a cache it cannot write to is fine (every request a miss here).
    let out = exec(ws.runner(&server.url()).args([
        "run",
        "s.yaml",
        "-m",
        "openai:gpt-4o-mini",
        "--cache",
        "not-a-folder",
        "--replay",
    ]));
    assert_eq!(out.code, 1, "{}", out.stderr);
}
