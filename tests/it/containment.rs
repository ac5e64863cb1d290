//! Processes a tool starts end with it, even those that leave its process group (`setsid`):
//! counted by their ids after the run. A `command` tool's `timeout_secs` bounds the whole call
//! once. Running out of file descriptors is the machine's error, not the model's failure.

use std::time::Duration;

use serde_json::json;

use crate::server::{Reply, Request, text, tool_calls};
use crate::{Test, Workspace, pids, running, test_server, wait_for};

/// The model: calls `spawn` once; after the tool round it answers.
fn model(request: &Request) -> Reply {
    if request.last_message()["role"] == "tool" {
        return text("done", 5, 5);
    }
    tool_calls(&[("c1", "spawn", json!({}))], 5, 5)
}

#[test]
fn a_command_tool_s_escaped_children_end_with_the_call() {
    // Two children leave the group (a new session each); one more stays in it. The call
    // ends normally in one case, by its time-out in the other.
    for (ending, timeout) in [("echo '{\"ok\": true}'", 30), ("sleep 30", 1)] {
        let script = format!(
            "setsid sleep 300 & echo $! >> pids.txt; setsid sh -c 'sleep 301' & echo $! >> pids.txt; sleep 302 & echo $! >> pids.txt; {ending}"
        );
        let run = Test::new()
            .server(model)
            .file(
                "s.yaml",
                &format!(
                    "name: s\ntools:\n  - name: spawn\n    timeout_secs: {timeout}\n    command: [sh, -c, \"{}\"]\nturns:\n  - user: go\n",
                    script.replace('"', "\\\"")
                ),
            )
            .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
            .run();
        run.success();
        let pids = pids(&run);
        assert_eq!(pids.len(), 3, "{ending}: {pids:?}");
        wait_for(|| pids.iter().all(|&pid| !running(pid)));
    }
}

#[test]
fn an_mcp_server_s_escaped_child_ends_with_its_run() {
    let run = Test::new()
        .server(|request: &Request| {
            if request.last_message()["role"] == "tool" {
                return text("done", 5, 5);
            }
            tool_calls(&[("c1", "echo", json!({"message": "hi"}))], 5, 5)
        })
        .file(
            "s.yaml",
            &format!(
                "name: s\ntools:\n  - mcp:\n      command: ['{}', --pid-file, pids.txt, --escaping-child, --with-child]\nturns:\n  - user: go\n",
                test_server()
            ),
        )
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    let pids = pids(&run);
    assert_eq!(pids.len(), 3, "the server, its child and its escaped child: {pids:?}");
    wait_for(|| pids.iter().all(|&pid| !running(pid)));
}

#[test]
fn a_command_s_timeout_bounds_the_whole_call_once() {
    // The command closes its output at once and goes on: the time-out counts from the start.
    let run = Test::new()
        .server(model)
        .file("s.yaml", "name: s\ntools:\n  - name: spawn\n    timeout_secs: 2\n    command: [sh, -c, 'exec >&-; sleep 20']\nturns:\n  - user: go\n")
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    let call = &run.logs()[0].1["turns"][0]["tool_calls"][0];
    assert!(call["error"].as_str().unwrap().contains("did not finish within 2s"), "{call}");
    let ms = call["duration_ms"].as_u64().unwrap();
    assert!((1900..3500).contains(&ms), "killed after {ms} ms, not 2 s");
}

#[test]
fn concurrency_is_bounded_by_the_open_files_limit() {
    // A hard limit of 100 open files, which runner cannot raise: -j 50 would need far more,
    // so runner says so and runs as many at once as the limit allows; every run passes
    // instead of failing for want of descriptors.
    let ws = Workspace::new();
    let server = crate::server::MockServer::start(model);
    ws.write(
        "s.yaml",
        "name: s\ntools:\n  - name: spawn\n    command: [sh, -c, 'cat /dev/null']\nturns:\n  - user: go\n",
    );
    let runner = env!("CARGO_BIN_EXE_runner");
    let out = crate::exec(
        std::process::Command::new("sh")
            .current_dir(ws.path())
            .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
            .env("OPENAI_API_KEY", crate::KEY)
            .args([
                "-c",
                &format!("ulimit -n 100 && exec '{runner}' run s.yaml -m openai:gpt-4o-mini -j 50 --repeat 6"),
            ]),
    );
    assert!(
        out.stderr.contains("-j 50 needs up to 800 open files and the limit is 100 (ulimit -n): running 2 at once"),
        "{}",
        out.stderr
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ws.logs().len(), 6);
    assert!(server.max_in_flight() <= 2, "{} in flight", server.max_in_flight());
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
fn kill_9_of_runner_ends_the_servers_it_started() {
    // A stdio "server" that ignores the end of its input and never answers: only the
    // parent-death signal can end it once runner is killed.
    let ws = Workspace::new();
    let server = crate::server::MockServer::start(model);
    ws.write(
        "s.yaml",
        "name: s\ntools:\n  - mcp:\n      command: [sh, -c, 'echo $$ >> pids.txt; exec sleep 600']\n      startup_timeout_secs: 60\nturns:\n  - user: go\n",
    );
    let mut child = ws
        .runner(&server.url())
        .args(["run", "s.yaml", "-m", "openai:gpt-4o-mini"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| !pids(&ws).is_empty());
    std::thread::sleep(Duration::from_millis(200));
    let pids = pids(&ws);
    assert!(running(pids[0]));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(|| !running(pids[0]));
}
