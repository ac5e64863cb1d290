//! The README's own shell examples, run as a user would paste them: every `runner` command
//! in its code blocks and inline code that has no placeholder left in it, through `sh`, in a
//! workspace holding the shipped scenarios, against the scripted server. None may be a usage
//! error (exit 2) or a crash: a documented command must exist as documented.

use std::path::Path;

use crate::Workspace;
use crate::run::assistant;
use crate::server::{MockServer, as_stream};

/// The commands the README shows: `- run: ...` lines of its YAML blocks, lines of its shell
/// blocks and inline code spans that start with `runner` or pipe into it.
fn examples(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = None;
    for line in readme.lines() {
        if let Some(lang) = line.strip_prefix("```") {
            in_block = if in_block.is_some() { None } else { Some(lang.trim().to_owned()) };
            continue;
        }
        match in_block.as_deref() {
            Some("yaml") => {
                if let Some(command) = line.trim().strip_prefix("- run: ").or_else(|| line.trim().strip_prefix("run: "))
                {
                    commands.push(command.to_owned());
                }
            }
            Some("sh" | "bash") => {
                let command = line.split(" #").next().unwrap_or("").trim();
                if command.starts_with("runner ") || command.contains("| runner ") {
                    commands.push(command.to_owned());
                }
            }
            Some(_) => {}
            None => {
                for (i, span) in line.split('`').enumerate() {
                    // `runner report` in a sentence names a command; an example says more.
                    let mention = span.split_whitespace().count() <= 2;
                    if i % 2 == 1 && !mention && (span.starts_with("runner ") || span.contains("| runner ")) {
                        commands.push(span.to_owned());
                    }
                }
            }
        }
    }
    // Placeholders (`PATHS...`, `[PROMPT]`, `FILE`, `RUN_ID`, `...`) are syntax, not examples.
    let placeholder = |c: &str| {
        c.contains("...")
            || c.contains('[')
            || c.split(|ch: char| !ch.is_ascii_alphanumeric() && ch != '_')
                .any(|w| w.len() > 1 && w.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
    };
    commands.retain(|c| !placeholder(c));
    commands.dedup();
    commands
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn every_shell_example_in_the_readme_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = examples(&readme);
    assert!(commands.len() >= 6, "found only {commands:?}");
    println!("{} examples: {commands:#?}", commands.len());
    let server = MockServer::start(|request| as_stream(request, assistant(request)));
    let ws = Workspace::new();
    copy_dir(&root.join("scenarios"), &ws.path().join("scenarios"));
    ws.write("notes.txt", "line one\nline two\n");
    let bin = Path::new(env!("CARGO_BIN_EXE_runner")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for command in &commands {
        // The CI recipe's matrix: both shards, then the merge.
        let shards = if command.contains("${{ matrix.shard }}") { vec!["1", "2"] } else { vec![""] };
        for shard in shards {
            let command = command.replace("${{ matrix.shard }}", shard);
            let output = std::process::Command::new("sh")
                .args(["-c", &command])
                .current_dir(ws.path())
                .env("PATH", &path)
                .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
                .env("OPENAI_API_KEY", crate::KEY)
                .env("RUNNER_GEOCODING_URL", "http://127.0.0.1:9")
                .env("RUNNER_FORECAST_URL", "http://127.0.0.1:9")
                .env_remove("RUNNER_MODEL")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let code = output.status.code();
            assert!(
                matches!(code, Some(0 | 1)),
                "`{command}` exited with {code:?}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
