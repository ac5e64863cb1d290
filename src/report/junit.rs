//! JUnit XML (`--junit FILE`): one test suite per model, one test case per run, failed
//! checks as failures, errors as errors, with timings. Read by CI systems' test reporters.

use std::fmt::Write as _;

use super::escape_markup;
use crate::record::{Reporter, RunOutcome, RunRecord, Status};

/// What a test case keeps of a run (the records themselves are not held).
struct Case {
    name: String,
    classname: String,
    file: String,
    seconds: f64,
    /// `None`: never started (a skipped case).
    status: Option<Status>,
    /// Failure or error text.
    detail: String,
    message: String,
}

/// Collects runs as they finish; [`Junit::render`] writes the document.
#[derive(Default)]
pub(crate) struct Junit {
    /// (model, cases), in the order models first finished a run.
    suites: Vec<(String, Vec<Case>)>,
}

impl Reporter for Junit {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        let (model, case) = match outcome {
            RunOutcome::Finished(record) => (record.model.spec.to_string(), Self::finished(record)),
            RunOutcome::NotStarted(run) => {
                let model = run.model.to_string();
                let case = Case {
                    name: format!("{} #{}", run.scenario.name, run.repetition),
                    classname: format!("{model}.{}", run.scenario.name),
                    file: run.scenario.file.clone(),
                    seconds: 0.0,
                    status: None,
                    detail: String::new(),
                    message: format!("not started: {}", run.reason),
                };
                (model, case)
            }
        };
        self.push(model, case);
        Ok(())
    }
}

impl Junit {
    fn finished(record: &RunRecord) -> Case {
        let (message, detail) = match record.status {
            Status::Passed => (String::new(), String::new()),
            Status::Failed => {
                let mut lines = Vec::new();
                for turn in &record.turns {
                    for check in turn.checks.iter().filter(|c| !c.passed) {
                        lines.push(format!("turn {}: {}: {}", turn.index, check.check, check.detail));
                    }
                }
                for check in record.checks.iter().filter(|c| !c.passed) {
                    lines.push(format!("conversation: {}: {}", check.check, check.detail));
                }
                (format!("{} check(s) failed", lines.len()), lines.join("\n"))
            }
            Status::Error => {
                let error = record.error.clone().unwrap_or_else(|| "error".to_owned());
                (error.lines().next().unwrap_or_default().to_owned(), error)
            }
        };
        let (scenario, file) = record.scenario.as_ref().map_or(("", ""), |s| (s.name.as_str(), s.file.as_str()));
        Case {
            name: format!("{scenario} #{}", record.repetition),
            classname: format!("{}.{scenario}", record.model.spec),
            file: file.to_owned(),
            seconds: record.duration_ms as f64 / 1000.0,
            status: Some(record.status),
            detail,
            message,
        }
    }

    fn push(&mut self, model: String, case: Case) {
        match self.suites.iter_mut().find(|(m, _)| *m == model) {
            Some((_, cases)) => cases.push(case),
            None => self.suites.push((model, vec![case])),
        }
    }

    /// The XML document.
    pub(crate) fn render(&self) -> String {
        let count = |cases: &[Case], status: Option<Status>| cases.iter().filter(|c| c.status == status).count();
        let all: Vec<&Case> = self.suites.iter().flat_map(|(_, cases)| cases).collect();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"runner\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            all.len(),
            all.iter().filter(|c| c.status == Some(Status::Failed)).count(),
            all.iter().filter(|c| c.status == Some(Status::Error)).count(),
            all.iter().filter(|c| c.status.is_none()).count(),
            all.iter().map(|c| c.seconds).sum::<f64>()
        );
        for (model, cases) in &self.suites {
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
                escape_markup(model),
                cases.len(),
                count(cases, Some(Status::Failed)),
                count(cases, Some(Status::Error)),
                count(cases, None),
                cases.iter().map(|c| c.seconds).sum::<f64>()
            );
            for case in cases {
                let _ = write!(
                    out,
                    "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" time=\"{:.3}\"",
                    escape_markup(&case.name),
                    escape_markup(&case.classname),
                    escape_markup(&case.file),
                    case.seconds
                );
                let (element, status) = match case.status {
                    Some(Status::Passed) => {
                        out.push_str("/>\n");
                        continue;
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                            escape_markup(&case.message)
                        );
                        continue;
                    }
                    Some(status @ Status::Failed) => ("failure", status),
                    Some(status @ Status::Error) => ("error", status),
                };
                let _ = writeln!(
                    out,
                    ">\n      <{element} message=\"{}\" type=\"{}\">{}</{element}>\n    </testcase>",
                    escape_markup(&case.message),
                    status.as_str(),
                    escape_markup(&case.detail)
                );
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}
