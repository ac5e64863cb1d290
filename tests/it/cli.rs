//! The command line's own behaviour: a closed pipe, diagnostics on request.

use std::process::Command;

use crate::run::assistant;
use crate::Test;

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    for args in [&["tools"][..], &["schema"], &["models"]] {
        let out = crate::with_closed_stdout(Command::new(env!("CARGO_BIN_EXE_runner")).args(args));
        assert_eq!(out.code, 0, "runner {args:?}: {}", out.stderr);
        assert_eq!(out.stderr, "", "runner {args:?}");
    }
}

#[test]
fn diagnostics_show_with_v_and_never_hold_the_key() {
    let run = Test::new()
        .server(assistant)
        .file("a.yaml", "turns:\n  - user: hello\n")
        .args(["-v", "run", "a.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    run.success();
    assert!(run.stderr.contains("model resolved") && run.stderr.contains("run finished"), "{}", run.stderr);
    assert!(!run.stderr.contains(crate::KEY));

    let quiet = Test::new().server(assistant).file("a.yaml", "turns:\n  - user: hello\n").args(["run", "a.yaml", "-m", "openai:gpt-4o-mini"]).run();
    quiet.success();
    assert!(!quiet.stderr.contains("run finished"), "{}", quiet.stderr);
}
