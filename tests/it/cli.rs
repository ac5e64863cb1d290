//! The command line's own behaviour: a closed pipe, diagnostics on request.

use std::process::Command;

use crate::Test;
use crate::run::assistant;

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
fn two_reports_in_one_file_are_refused_before_anything_runs() {
    let run = Test::new()
        .server(assistant)
        .file("a.yaml", "turns:\n  - user: hello\n")
        .args(["run", "a.yaml", "-m", "openai:gpt-4o-mini", "--report", "out.xml", "--junit", "out.xml"])
        .run();
    run.code(2);
    assert!(run.stderr.contains("--report and --junit both name out.xml"), "{}", run.stderr);
    assert!(run.server().chat_bodies().is_empty(), "nothing was sent");
    assert!(!run.path().join("out.xml").exists());
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let bash = Test::new().args(["completions", "bash"]).run();
    bash.success();
    for word in ["_runner()", "--only-failed", "--baseline", "--cache", "--min-pass-rate", "completions"] {
        assert!(bash.stdout.contains(word), "{word} missing from the bash completions");
    }
    let zsh = bash.then().args(["completions", "zsh"]).run();
    assert!(zsh.stdout.starts_with("#compdef runner"), "{}", &zsh.stdout[..zsh.stdout.len().min(200)]);
    zsh.then().args(["completions", "tcsh"]).run().code(2);
    let man = Test::new().args(["man"]).run();
    man.success();
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH runner"),
        "{}",
        &man.stdout[..man.stdout.len().min(300)]
    );
    for word in ["Exit codes", "completions", "runner\\-run", "\\-\\-config"] {
        assert!(man.stdout.contains(word), "{word} missing from the man page");
    }
}
