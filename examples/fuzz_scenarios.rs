//! A mutation fuzzer for scenario loading, on stable Rust: it mutates the shipped scenarios
//! and test fixtures (bytes flipped, YAML tokens inserted, ranges deleted or repeated, files
//! spliced) and feeds every result to the loader, which must return scenarios or errors and
//! never panic or hang. A panicking input is saved under `fuzz-crashes/` and the exit code
//! is 1.
//!
//! `cargo run --release --example fuzz_scenarios -- [SECONDS] [SEED]` (see scripts/fuzz.sh).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use runner::rng::mix64;
use runner::scenario::{Validator, parse_scenarios};
use runner::tools::ToolRegistry;

/// Pieces of YAML syntax worth inserting: they reach the parser's less travelled paths.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "!tag ",
    "\n",
    "\t",
    "  ",
    "\"",
    "'",
    "#",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "? ",
    "%YAML 1.2\n",
    "\\u0000",
    "\u{feff}",
    "\u{1F600}",
    "~",
    "null",
    "1e999",
    "-0",
    "0x1F",
    ".nan",
    "turns:",
    "user: ",
    "expect:",
    "tool_calls:",
    "arguments: ",
    "regex: '('",
    "max_tokens: 0",
    "temperature: -1",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            2 if !input.is_empty() => {
                let end = (at + rng.below(64)).min(input.len());
                input.drain(at.min(end)..end);
            }
            3 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + rng.below(128)).min(input.len());
                let piece: Vec<u8> = input[start..end].to_vec();
                for _ in 0..=rng.below(8) {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len());
                input.splice(at..at, other[start..].iter().copied());
            }
            _ => input.insert(at, rng.next() as u8),
        }
    }
    input.truncate(256 * 1024);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for dir in ["scenarios", "tests/fixtures"] {
        for entry in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "yaml") {
                corpus.push(std::fs::read(entry.path()).expect("readable corpus file"));
            }
        }
    }
    assert!(!corpus.is_empty(), "no corpus files found");

    let registry = ToolRegistry::builtin();
    let check_model = |model: &str| {
        runner::provider::ModelSpec::from_key(model)
            .ok_or_else(|| runner::provider::ModelError::Unknown(model.to_owned()))
    };
    let validator = Validator::new(&registry, &check_model);
    // The loader's own panics are what is looked for; keep the default hook quiet.
    std::panic::set_hook(Box::new(|_| {}));

    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut accepted, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut messages = HashSet::new();
    while Instant::now() < deadline {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &corpus);
        let text = String::from_utf8_lossy(&input).into_owned();
        let started = Instant::now();
        // The validator holds no state a panic could leave half-changed.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            parse_scenarios(&text, "fuzz.yaml", "fuzz", &validator).map(|s| s.len())
        }));
        let took = started.elapsed();
        slowest = slowest.max(took);
        runs += 1;
        match outcome {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(errors)) => {
                // Count kinds of error: the message's first words, without position or quoted text.
                let first = errors.0.first().map(std::string::ToString::to_string).unwrap_or_default();
                let message = first.split_once(": ").map_or("", |(_, message)| message);
                let kind: String = message
                    .split(['`', '"', ':', '(', ','])
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect();
                messages.insert(kind.trim().to_owned());
            }
            Err(_) => {
                std::fs::create_dir_all("fuzz-crashes").expect("create fuzz-crashes");
                let path = format!("fuzz-crashes/crash-{:016x}.yaml", mix64(runs ^ seed));
                std::fs::write(&path, &input).expect("save the crashing input");
                eprintln!("PANIC on input saved to {path} (seed {seed}, run {runs})");
                std::process::exit(1);
            }
        }
        if took > Duration::from_secs(2) {
            std::fs::create_dir_all("fuzz-crashes").expect("create fuzz-crashes");
            let path = format!("fuzz-crashes/slow-{:016x}.yaml", mix64(runs ^ seed));
            std::fs::write(&path, &input).expect("save the slow input");
            eprintln!("SLOW: {took:?} on input saved to {path} (seed {seed})");
            std::process::exit(1);
        }
    }
    println!(
        "fuzzed scenario loading for {seconds} s (seed {seed}): {runs} inputs ({:.0}/s), {accepted} loaded, {} kinds of error, 0 panics, slowest {:.1} ms",
        runs as f64 / seconds as f64,
        messages.len(),
        slowest.as_secs_f64() * 1000.0
    );
}
