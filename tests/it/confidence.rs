//! Comparing models with confidence. A table-driven server decides, per model and scenario,
//! how many of the three repetitions pass; every figure of the summary CSV, from `runner run`
//! and from `runner report` over its CSV, matches the reference that
//! `scripts/stats_reference.py` computed with scipy (to 4 decimals). Then the sentences,
//! `--target-pass-rate`, `--compare-to`, pass@k's JSON, the baseline's interval and the HTML's
//! error bars in headless Chromium.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::server::{Reply, Request, text};
use crate::{Test, read_csv};

/// Per model, how many of the 3 repetitions of scenario s1..s8 pass (the script's TABLE).
const TABLE: [(&str, [usize; 8]); 3] =
    [("a", [3, 2, 3, 1, 0, 3, 2, 3]), ("b", [3, 3, 3, 2, 2, 3, 3, 3]), ("c", [1, 0, 2, 1, 0, 1, 1, 2])];

const PRICES: &str =
    "openai:a: {input: 1, output: 2}\nopenai:b: {input: 3, output: 6}\nopenai:c: {input: 0.5, output: 1}\n";

// Printed by `scripts/stats_reference.py` (scipy 1.17.1).
const EXPECTED: &[(&str, &str, f64)] = &[
    ("openai:a", "pass_rate", 0.7083333333333334),
    ("openai:a", "pass_rate_low", 0.5083230633550337),
    ("openai:a", "pass_rate_high", 0.8508535180303913),
    ("openai:a", "pass_at_n", 0.875),
    ("openai:a", "pass_all_n", 0.5),
    ("openai:b", "pass_rate", 0.9166666666666666),
    ("openai:b", "pass_rate_low", 0.7415119780678932),
    ("openai:b", "pass_rate_high", 0.9768411847029566),
    ("openai:b", "pass_at_n", 1.0),
    ("openai:b", "pass_all_n", 0.75),
    ("openai:b", "pass_diff", 0.20833333333333331),
    ("openai:b", "pass_diff_low", 0.000993509788650121),
    ("openai:b", "pass_diff_high", 0.41567315687801654),
    ("openai:b", "pass_diff_p", 0.049173714204803425),
    ("openai:b", "cost_diff_usd", 0.009399999999999999),
    ("openai:b", "cost_diff_p", 0.0009796561487442563),
    ("openai:c", "pass_rate", 0.3333333333333333),
    ("openai:c", "pass_rate_low", 0.17972190327297752),
    ("openai:c", "pass_rate_high", 0.5329368316186824),
    ("openai:c", "pass_at_n", 0.75),
    ("openai:c", "pass_all_n", 0.0),
    ("openai:c", "pass_diff", -0.375),
    ("openai:c", "pass_diff_low", -0.607559551490551),
    ("openai:c", "pass_diff_high", -0.142440448509449),
    ("openai:c", "pass_diff_p", 0.006602655927244424),
    ("openai:c", "cost_diff_usd", -0.00235),
    ("openai:c", "cost_diff_p", 0.0009796561487442563),
];

/// Scenarios s1..s8, each one turn `case <i>` that passes when the reply says PASS.
fn cases() -> String {
    (1..=8)
        .map(|i| format!("name: s{i}\nturns:\n  - user: case {i}\n    expect:\n      contains: PASS\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Answers the n-th request for (model, scenario i) with PASS while n is within the table's
/// count, else FAIL; 1000 * i prompt tokens and 100 completion tokens.
fn table_server() -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let served: Arc<Mutex<HashMap<(String, usize), usize>>> = Arc::default();
    move |request| {
        let model = request.json()["model"].as_str().unwrap_or_default().to_owned();
        let i: usize = request.last_user().trim_start_matches("case ").parse().expect("a case number");
        let passes = TABLE.iter().find(|(name, _)| *name == model).map(|(_, row)| row[i - 1]).expect("a known model");
        let n = {
            let mut served = served.lock().unwrap();
            let count = served.entry((model, i)).or_default();
            *count += 1;
            *count
        };
        text(if n <= passes { "PASS" } else { "FAIL" }, 1000 * i as u64, 100)
    }
}

fn row<'a>(rows: &'a [HashMap<String, String>], model: &str) -> &'a HashMap<String, String> {
    rows.iter().find(|r| r["model"] == model).unwrap_or_else(|| panic!("no summary row for {model}"))
}

/// Every figure of `rows` is the reference's to 4 decimals.
fn assert_reference(rows: &[HashMap<String, String>], source: &str) {
    for (model, column, expected) in EXPECTED {
        let cell = &row(rows, model)[*column];
        let value: f64 = cell.parse().unwrap_or_else(|_| panic!("{source}: {model} {column} = {cell:?}"));
        assert!((value - expected).abs() < 5e-5, "{source}: {model} {column} = {value}, scipy says {expected}");
    }
    for model in ["openai:b", "openai:c"] {
        let r = row(rows, model);
        assert_eq!((r["compared_to"].as_str(), r["scenarios_paired"].as_str()), ("openai:a", "8"), "{source}");
    }
    let a = row(rows, "openai:a");
    assert_eq!((a["compared_to"].as_str(), a["pass_diff"].as_str(), a["repetitions"].as_str()), ("", "", "3"));
}

#[test]
fn every_figure_matches_scipy_in_the_run_and_in_the_report() {
    let run = Test::new()
        .server(table_server())
        .file("cases.yaml", &cases())
        .file("prices.yaml", PRICES)
        .args(["run", "cases.yaml", "--repeat", "3", "--prices", "prices.yaml", "-j", "6"])
        .args(["-m", "openai:a", "-m", "openai:b", "-m", "openai:c", "--target-pass-rate", "0.5"])
        .args(["--html", "page.html"])
        .run();
    run.code(1);
    assert_eq!(run.server().chat_bodies().len(), 72);
    assert_reference(&run.summary_rows(), "runner run");

    // The sentences: b is better (p just under 0.05), c is worse; cost per run with its test.
    let out = &run.stdout;
    assert!(
        out.contains(
            "openai:b vs openai:a: pass rate +20.8 points [0.1, 41.6], p = 0.049: better over 8 scenarios; cost per run x3.0 (+$0.009400 [+$0.005304, +$0.013496], p < 0.001)"
        ),
        "{out}"
    );
    assert!(
        out.contains("openai:c vs openai:a: pass rate -37.5 points [-60.8, -14.2], p = 0.007: worse over 8 scenarios"),
        "{out}"
    );
    assert!(out.contains("repetitions: openai:b: pass@3 100.0%, pass^3 75.0%"), "{out}");
    // a (lower bound 50.8%) and b (74.2%) reach 50%; a is cheaper.
    assert!(
        out.contains("target 50.0%: openai:a is the cheapest model whose pass rate reaches 50.0% with 95% confidence (lower bound 50.8%, $0.004700 per run)"),
        "{out}"
    );

    // pass@k and pass^k for every k, beside the summary.
    let summary = run.report_file(true);
    let json_path =
        summary.with_file_name(summary.file_name().unwrap().to_string_lossy().replace(".summary.csv", ".pass_k.json"));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let c = json["models"].as_array().unwrap().iter().find(|m| m["model"] == "openai:c").unwrap();
    // c: 8 of 24 runs pass (pass@1 = 1/3); pass@2 = mean of 1 - C(3-c,2)/C(3,2) = (2/3+0+1+2/3+0+2/3+2/3+1)/8.
    assert_eq!(c["repetitions"], 3);
    assert!((c["pass_at_k"]["1"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-6, "{c}");
    assert!((c["pass_at_k"]["2"].as_f64().unwrap() - 4.666_666_666_666_667 / 8.0).abs() < 1e-6, "{c}");
    assert!((c["pass_all_k"]["2"].as_f64().unwrap() - (2.0 / 3.0) / 8.0).abs() < 1e-6, "{c}");

    // runner report over the CSV: the same figures; no model reaches 95% and b comes closest.
    let report = run.report_file(false);
    let report = report.strip_prefix(run.path()).unwrap().display().to_string();
    let again = run
        .then()
        .args(["report", &report, "--prices", "prices.yaml", "--summary", "merged.csv", "--compare-to", "openai:a"])
        .args(["--target-pass-rate", "0.95"])
        .run();
    again.code(1);
    assert_reference(&read_csv(&again.path().join("merged.csv")), "runner report");
    assert!(again.path().join("merged.pass_k.json").exists());
    assert!(
        again.stdout.contains(
            "target 95.0%: no model reaches 95.0% with 95% confidence; the closest is openai:b (lower bound 74.2%)"
        ),
        "{}",
        again.stdout
    );
}

#[test]
fn the_baseline_gives_each_model_s_change_its_interval_and_the_page_its_error_bars() {
    let first = Test::new()
        .server(table_server())
        .file("cases.yaml", &cases())
        .file("prices.yaml", PRICES)
        .args(["run", "cases.yaml", "--repeat", "3", "--prices", "prices.yaml", "-m", "openai:a", "-m", "openai:b"])
        .args(["--report", "before.csv", "--html", "page.html", "--target-pass-rate", "0.7"])
        .run();
    first.code(1);

    // In Chromium, each model's error bar spans its interval on the chart's pass-rate axis.
    let rows = read_csv(&first.path().join("before.summary.csv"));
    let page = first.path().join("page.html");
    let measured = first.path().join("measured.html");
    let probe = "<script>
const grid = [...document.querySelectorAll('#cost-chart line.grid')].map(l => l.getBoundingClientRect().top);
const rate = y => (grid[0] - y) / (grid[0] - grid[4]);
const bars = [...document.querySelectorAll('#cost-chart .error-bar')].map(g => {
  const r = g.querySelector('line').getBoundingClientRect();
  return {model: g.dataset.model, low: rate(r.bottom), high: rate(r.top)};
});
const out = document.createElement('pre'); out.id = 'measured'; out.textContent = JSON.stringify(bars);
document.body.append(out);
</script>";
    let html = std::fs::read_to_string(&page).unwrap().replace("</body>", &format!("{probe}</body>"));
    std::fs::write(&measured, html).unwrap();
    let dom = crate::html::dom(&measured, "");
    let json =
        dom.split("<pre id=\"measured\">").nth(1).and_then(|rest| rest.split("</pre>").next()).expect("the probe ran");
    let bars: Vec<serde_json::Value> = serde_json::from_str(&json.replace("&quot;", "\"")).unwrap();
    assert_eq!(bars.len(), 2, "{json}");
    for bar in &bars {
        let row = row(&rows, bar["model"].as_str().unwrap());
        for (end, column) in [("low", "pass_rate_low"), ("high", "pass_rate_high")] {
            let (drawn, figure) = (bar[end].as_f64().unwrap(), row[column].parse::<f64>().unwrap());
            assert!(
                (drawn - figure).abs() < 0.01,
                "{}: {end} drawn at {drawn}, the summary says {figure}",
                row["model"]
            );
        }
    }
    assert!(dom.contains("<td>50.8–85.1%</td>"), "the models table shows a's interval");
    assert!(
        dom.contains("openai:b vs openai:a: pass rate +20.8 points [0.1, 41.6], p = 0.049: better over 8 scenarios")
    );
    assert!(dom.contains("target 70.0%: openai:b is the cheapest model"));

    // The same batch again on a alone, where every run now fails: a's change against the
    // baseline, paired over its 8 scenarios, with scipy's interval (kept within -100 points).
    let again = first
        .then()
        .args(["run", "cases.yaml", "--repeat", "3", "--prices", "prices.yaml", "-m", "openai:a"])
        .args(["--report", "after.csv", "--baseline", "before.csv"])
        .run();
    again.code(1);
    let line = again.stdout.lines().find(|l| l.starts_with("openai:a ")).expect("a's row against the baseline");
    let line = again.stdout.lines().filter(|l| l.starts_with("openai:a ")).nth(1).unwrap_or(line);
    assert!(
        line.contains("70.8%") && line.contains("0.0%") && line.contains("-70.8 [-100.0, -39.5]"),
        "{}",
        again.stdout
    );
}

#[test]
fn compare_to_names_the_reference_and_must_be_one_of_the_models() {
    let run = Test::new()
        .server(table_server())
        .file("cases.yaml", &cases())
        .args(["run", "cases.yaml", "-m", "openai:a", "-m", "openai:c", "--compare-to", "openai:c"])
        .run();
    run.code(1);
    let rows = run.summary_rows();
    assert_eq!(row(&rows, "openai:a")["compared_to"], "openai:c");
    assert_eq!(row(&rows, "openai:c")["compared_to"], "");
    // One repetition: no pass@n, and the per-scenario fractions are 0 or 1.
    assert_eq!(row(&rows, "openai:a")["pass_at_n"], "");
    // 7 of 8 against 6 of 8, one scenario apart: scipy says [-17.1, 42.1], p = 0.35; 395 scenarios for 5 points.
    assert!(
        run.stdout.contains("openai:a vs openai:c: pass rate +12.5 points [-17.1, 42.1], p = 0.35: within noise over 8 scenarios; about 395 would tell 5 points apart (80% power)"),
        "{}",
        run.stdout
    );

    let refused = Test::new()
        .server(table_server())
        .file("cases.yaml", &cases())
        .args(["run", "cases.yaml", "-m", "openai:a", "--compare-to", "openai:b"])
        .run();
    refused.code(2);
    assert!(
        refused.stderr.contains("--compare-to openai:b: not a model of these runs (they are openai:a)"),
        "{}",
        refused.stderr
    );
    assert!(refused.server().chat_bodies().is_empty());
}
