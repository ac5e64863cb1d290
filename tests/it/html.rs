//! `--html FILE`: one self-contained page, checked as a file and in a real browser (Debian's
//! `chromium`, headless: `--dump-dom` gives the DOM after the page's script ran).

use std::path::Path;
use std::process::Command;

use crate::Test;
use crate::run::assistant;

/// Two passing scenarios (one with a tool call), one failing, one erroring, and one whose
/// reply carries markup: five scenarios on two models.
const SUITE: &str = "name: hello
turns:
  - user: hello
    expect: {contains: Hello}
---
name: reverse
tools: [reverse_text]
turns:
  - user: reverse apple
    expect:
      tool_calls: [{name: reverse_text, arguments: {text: apple}}]
---
name: bad
turns:
  - user: hello
    expect: {contains: Goodbye}
---
name: broken
turns:
  - user: boom
---
name: inject-<i>x</i>
turns:
  - user: \"<script>alert(1)</script><img src=x onerror=alert(2)>\"
";

const MODELS: [&str; 4] = ["-m", "openai:gpt-4o-mini", "-m", "openai:gpt-4.1-nano"];

/// Headless Chromium as it runs on a closed network, with a fresh profile.
fn chromium(profile: &Path) -> Command {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    let binary = binary.expect("the HTML report's tests need Chromium: apt-get install chromium (.ci/run installs it)");
    let mut command = Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// The DOM of `page` (with `suffix`: a query or a fragment) after its script ran.
pub fn dom(page: &Path, suffix: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}{suffix}", page.canonicalize().unwrap().display());
    let output = chromium(profile.path()).arg("--dump-dom").arg(&url).output().unwrap();
    assert!(output.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The `data-i` of the runs table's row for `scenario` on `model`.
fn row_index(html: &str, scenario: &str, model: &str) -> String {
    let marker = format!("data-scenario=\"{scenario}\" data-model=\"{model}\" data-status=");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no row for {scenario} on {model}"));
    let before = &html[..at];
    let start = before.rfind("data-i=\"").unwrap() + 8;
    before[start..].split('"').next().unwrap().to_owned()
}

/// Rows of the runs table the DOM shows (not hidden by a filter).
fn visible_rows(dom: &str) -> usize {
    dom.matches("<tr data-i=").count() - hidden_rows(dom)
}

fn hidden_rows(dom: &str) -> usize {
    dom.split("<tr data-i=").skip(1).filter(|row| row.split('>').next().unwrap_or_default().contains(" hidden")).count()
}

#[test]
fn the_page_holds_everything_and_asks_for_nothing() {
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", SUITE)
        .args(["run", "s.yaml", "--html", "out/r.html", "--report", "r.csv"])
        .args(MODELS)
        .run();
    out.code(1);
    assert!(out.stdout.contains("html: out/r.html"), "{}", out.stdout);
    let html = std::fs::read_to_string(out.ws.path().join("out/r.html")).unwrap();

    // Self-contained: a policy that forbids any request, and nothing that would make one.
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none';"), "{html}");
    let (page, rest) = html.split_once("<script type=\"application/json\" id=\"runs-data\">").unwrap();
    let (data, code) = rest.split_once("</script>").unwrap();
    for needle in [
        "src=",
        "href=",
        "url(",
        "@import",
        "http://",
        "https://",
        "<link",
        "<iframe",
        "<img",
        "fetch(",
        "XMLHttpRequest",
    ] {
        assert!(!page.contains(needle) && !code.contains(needle), "the page contains {needle:?}");
    }
    // Markup from a run is text: escaped in the tables, \u003c in the conversations' data.
    assert!(page.contains("inject-&lt;i&gt;x&lt;/i&gt;"));
    assert!(!html.contains("<i>x</i>") && !html.contains("alert(1)</script>"));
    assert!(!data.contains('<'), "{data}");
    assert!(data.contains("\\u003cscript>alert(1)\\u003c/script>"), "{data}");
    assert_eq!(html.matches("<script").count(), 2, "the data and the code, nothing else");

    // The summary, a point and a latency box per model, the matrix, a row per run.
    assert!(html.contains("<p class=\"headline bad\" id=\"headline\">6 of 10 runs passed</p>"), "{html}");
    assert_eq!(html.matches("<g class=\"point\">").count(), 2);
    assert_eq!(html.matches("<g class=\"box\">").count(), 2);
    assert!(html.contains("<title>openai:gpt-4o-mini: pass rate 60.0% (3/5) [95% interval 23.1–88.2%], $"), "{html}");
    assert_eq!(html.matches("<tr data-scenario=").count(), 5, "a matrix row per scenario");
    assert_eq!(html.matches("class=\"cell passed\"").count(), 6);
    assert_eq!(html.matches("<tr data-i=").count(), 10);
    assert!(html.contains("turn 1: contains: reply does not contain &quot;Goodbye&quot;"), "{html}");
    assert!(html.contains("turn 1: model request failed: HTTP 500"), "{html}");
    // No staging file is left beside it.
    let left: Vec<_> = std::fs::read_dir(out.ws.path().join("out")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["r.html"]);
}

#[test]
fn in_chromium_a_run_opens_with_its_conversation_and_filters_apply() {
    let out = Test::new()
        .server(assistant)
        .file("s.yaml", SUITE)
        .args(["run", "s.yaml", "--html", "r.html"])
        .args(MODELS)
        .run();
    let page = out.ws.path().join("r.html");
    let html = std::fs::read_to_string(&page).unwrap();

    // As loaded: every row shown, the script ran to its end, no dialog open.
    let loaded = dom(&page, "");
    assert!(loaded.contains("data-ready-ms=\""), "the page's script did not finish");
    assert!(loaded.contains("10 of 10 runs"), "{loaded}");
    assert!(!loaded.contains("<dialog id=\"run\" aria-labelledby=\"run-title\" open"), "{loaded}");

    // A run opened (#run-N): its messages, the tool call with arguments, result and source,
    // the checks with details, and tokens and cost per request.
    let i = row_index(&html, "reverse", "openai:gpt-4o-mini");
    let opened = dom(&page, &format!("#run-{i}"));
    let dialog = opened.split("<dialog id=\"run\"").nth(1).unwrap().split("</dialog>").next().unwrap();
    assert!(dialog.starts_with(" aria-labelledby=\"run-title\" open"), "{dialog}");
    assert!(dialog.contains("reverse · openai:gpt-4o-mini · #1"), "{dialog}");
    assert!(dialog.contains("reverse apple"), "{dialog}");
    assert!(dialog.contains("tool call · reverse_text · builtin"), "{dialog}");
    assert!(dialog.contains("\"text\": \"apple\""), "{dialog}");
    assert!(dialog.contains("→ {\n  \"result\": \"elppa\"\n}"), "{dialog}");
    assert!(dialog.contains("Tool said: {\"result\":\"elppa\"}"), "{dialog}");
    assert!(dialog.contains("✓ tool_calls</b> called reverse_text({\"text\":\"apple\"})"), "{dialog}");
    assert!(dialog.contains("<td>20</td><td>8</td>"), "the first request's tokens: {dialog}");
    assert!(dialog.contains("log: logs/runs/"), "{dialog}");

    // The run whose reply carries markup shows it as text: no element was made from it.
    let i = row_index(&html, "inject-&lt;i&gt;x&lt;/i&gt;", "openai:gpt-4.1-nano");
    let injected = dom(&page, &format!("#run-{i}"));
    assert!(
        injected.contains("You said: &lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "{injected}"
    );
    assert_eq!(injected.matches("<script").count(), 2);
    assert!(!injected.contains("<img"));

    // Filters from the address: failed runs only (bad on both models).
    let failed = dom(&page, "?status=failed");
    assert!(failed.contains("2 of 10 runs"), "{failed}");
    assert_eq!(hidden_rows(&failed), 8);
    let one_model = dom(&page, "?model=openai:gpt-4.1-nano&q=B");
    assert!(one_model.contains("2 of 10 runs"), "bad and broken, the text matched without case: {one_model}");
    assert_eq!(visible_rows(&one_model), 2);
}

#[test]
fn runner_report_builds_the_page_from_reports_and_their_logs() {
    // The baseline: every scenario passed (bad's check asked for what the reply says).
    let passing = SUITE
        .replace("expect: {contains: Goodbye}", "expect: {contains: Hello}")
        .replace("  - user: boom\n", "  - user: hello\n");
    let before = Test::new()
        .server(assistant)
        .file("s.yaml", &passing)
        .args(["run", "s.yaml", "--report", "before.csv"])
        .args(MODELS)
        .run();
    before.success();
    let base = std::fs::read_to_string(before.ws.path().join("before.csv")).unwrap();
    let after = Test::new()
        .server(assistant)
        .file("s.yaml", SUITE)
        .file("before.csv", &base)
        .args(["run", "s.yaml", "--report", "after.csv"])
        .args(MODELS)
        .run();
    after.code(1);

    let report = |extra: &[&str]| {
        let mut command = after.ws.runner("http://127.0.0.1:9");
        command.args(["report", "after.csv", "--baseline", "before.csv", "--html", "page.html"]).args(extra);
        let out = crate::exec(&mut command);
        let html = std::fs::read_to_string(after.ws.path().join("page.html")).unwrap();
        (out, html)
    };
    let (out, html) = report(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.contains("html: page.html (10 of 10 conversations from the logs under logs/runs)"),
        "{}",
        out.stdout
    );
    assert_eq!(html.matches("<tr data-i=").count(), 10);
    assert!(!html.contains("data-missing"), "every conversation was found");
    // The baseline comparison: bad and broken regressed on both models.
    let baseline =
        html.split("<section id=\"baseline\" class=\"bad\">").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(baseline.contains("Regressions (passed before, not now): 4"), "{baseline}");
    assert!(baseline.contains("1/1 → 0/1</span> bad on openai:gpt-4o-mini"), "{baseline}");
    assert!(baseline.contains("<td>openai:gpt-4o-mini</td><td>100.0%</td><td><b>60.0%</b></td>"), "{baseline}");

    // Logs elsewhere: the page still has every run, and says where it looked.
    let (out, html) = report(&["--logs-dir", "nowhere"]);
    assert!(out.stdout.contains("(0 of 10 conversations from the logs under nowhere)"), "{}", out.stdout);
    assert_eq!(html.matches("data-missing=\"no log at nowhere/").count(), 10);
}
