//! The command line's own behaviour: a closed pipe, diagnostics on request.

use std::process::Command;

use crate::run::assistant;
use crate::{Test, Workspace, exec};

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

    let quiet = Test::new()
        .server(assistant)
        .file("a.yaml", "turns:\n  - user: hello\n")
        .args(["run", "a.yaml", "-m", "openai:gpt-4o-mini"])
        .run();
    quiet.success();
    assert!(!quiet.stderr.contains("run finished"), "{}", quiet.stderr);
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let ws = Workspace::new();
    let bash = exec(ws.runner("http://127.0.0.1:9").args(["completions", "bash"]));
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    for word in ["_runner()", "--only-failed", "--baseline", "--cache", "--min-pass-rate", "completions"] {
        assert!(bash.stdout.contains(word), "{word} missing from the bash completions");
    }
    let zsh = exec(ws.runner("http://127.0.0.1:9").args(["completions", "zsh"]));
    assert!(zsh.stdout.starts_with("#compdef runner"), "{}", &zsh.stdout[..zsh.stdout.len().min(200)]);
    assert_eq!(exec(ws.runner("http://127.0.0.1:9").args(["completions", "tcsh"])).code, 2);
    let man = exec(ws.runner("http://127.0.0.1:9").args(["man"]));
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH runner"),
        "{}",
        &man.stdout[..man.stdout.len().min(300)]
    );
    for word in ["Exit codes", "completions", "runner\\-run", "\\-\\-config"] {
        assert!(man.stdout.contains(word), "{word} missing from the man page");
    }
}
