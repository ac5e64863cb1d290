//! runner on a real terminal: each command run under a pseudo-terminal (util-linux's
//! `script`), as a person runs it. The first line it shows is its own, never a library's
//! complaint, and with `NO_COLOR` nothing is coloured.

use std::process::{Command, Stdio};

use crate::server::MockServer;
use crate::{KEY, Workspace};

/// What `runner ARGS` shows on a terminal, with `input` typed (then end of input).
fn on_terminal(ws: &Workspace, server: &MockServer, args: &str, input: &str, no_color: bool) -> String {
    on_terminal_of(ws, server, args, input, no_color, None)
}

/// The same on a terminal `columns` wide.
fn on_terminal_of(
    ws: &Workspace,
    server: &MockServer,
    args: &str,
    input: &str,
    no_color: bool,
    columns: Option<u16>,
) -> String {
    let runner = env!("CARGO_BIN_EXE_runner");
    let size = columns.map_or_else(String::new, |columns| format!("stty cols {columns} rows 50; "));
    let mut command = Command::new("script");
    command
        .current_dir(ws.path())
        .args(["-qec", &format!("{size}'{runner}' {args}"), "/dev/null"])
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", KEY)
        .env("TERM", "xterm-256color")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if no_color {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let mut child = command.spawn().expect("util-linux's script runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).replace('\r', "")
}

#[test]
fn every_command_begins_with_its_own_words_on_a_terminal() {
    let server = MockServer::start(|request| crate::server::as_stream(request, crate::run::assistant(request)));
    let ws = Workspace::new();
    ws.write("s.yaml", "name: greet\nturns:\n  - user: hello\n    expect: {contains: Hello}\n");
    let commands = [
        ("run s.yaml -m openai:gpt-4o-mini", "", "1 of 1 runs passed"),
        ("check s.yaml", "", "1 scenario(s)"),
        ("models", "", "model"),
        ("ask -m openai:gpt-4o-mini --tools none hello", "", "Hello there!"),
        ("chat -m openai:gpt-4o-mini --tools none", "hello\n", "Hello there!"),
    ];
    for no_color in [true, false] {
        for (args, input, expected) in commands {
            let shown = on_terminal(&ws, &server, args, input, no_color);
            let first = shown.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
            assert!(!shown.contains("tracing-subscriber") && !shown.contains("ansi crate feature"), "{args}: {shown}");
            assert!(!first.to_ascii_lowercase().contains("warn"), "{args}: the first line is a warning: {first}");
            assert!(shown.contains(expected), "{args}: {shown}");
            if no_color {
                assert!(!shown.contains("\u{1b}[3"), "{args}: coloured under NO_COLOR: {shown:?}");
            }
        }
    }
}

#[test]
fn on_an_80_column_terminal_the_summary_fits_and_a_file_gets_every_column() {
    let server = MockServer::start(crate::run::assistant);
    let ws = Workspace::new();
    ws.write("s.yaml", "name: greet\nturns:\n  - user: hello\n    expect: {contains: Hello}\n---\nname: bye\nturns:\n  - user: bye\n    expect: {contains: Goodbye}\n");
    let args = "run s.yaml -m openai:gpt-4o-mini -m openai:gpt-4.1-nano --logs-dir l --report r.csv";
    let shown = on_terminal_of(&ws, &server, args, "", true, Some(80));
    // What stays on the screen: each line after the progress bar's last erase.
    for line in shown.lines().map(|l| l.rsplit("\u{1b}[2K").next().unwrap_or(l)) {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line:?}\n{shown}");
    }
    let header = shown
        .lines()
        .find_map(|l| l.rsplit("\u{1b}[2K").next().filter(|l| l.starts_with("model ")))
        .expect("the model table");
    assert!(
        header.contains("95% interval") && header.contains("turn p50") && !header.contains("prompt_tok"),
        "{shown}"
    );
    assert!(shown.contains("vs openai:gpt-4o-mini:"), "the comparison, wrapped: {shown}");
    // Piped, the same summary keeps every column.
    let piped = crate::exec(ws.runner(&server.url()).args(args.split(' ')));
    assert!(
        piped.stdout.lines().any(|l| l.starts_with("model ") && l.contains("prompt_tok") && l.chars().count() > 80)
    );
}
