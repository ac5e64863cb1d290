//! The CSV token and cost report: one row per turn, appended and flushed as each run finishes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use serde::{Deserialize, Serialize};

use super::ReportError;
use crate::model::ModelSpec;
use crate::record::{Reporter, RunOutcome, Status, TurnRecord};
use crate::usage::Usage;

/// The report's columns, in order: the names of [`ReportRow`]'s fields (a test holds them
/// together). The first fifteen are the contract; the rest add detail.
pub(crate) const COLUMNS: &[&str] = &[
    "run_id",
    "scenario",
    "model",
    "repetition",
    "turn",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_cost_usd",
    "output_cost_usd",
    "total_cost_usd",
    "requests",
    "tool_calls",
    "latency_ms",
    "cached_tokens",
    "reasoning_tokens",
    "unpriced",
    "error",
    "cache_write_tokens",
    "cache_hits",
    "judge_cost_usd",
    "user_cost_usd",
];

/// The columns a report must have to be read back: the fields of [`ReportRow`] without a
/// `serde(default)`; the others read as 0 when an older report lacks them.
pub(crate) const REQUIRED: &[&str] = &[
    "run_id",
    "scenario",
    "model",
    "repetition",
    "turn",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_cost_usd",
    "latency_ms",
];

/// One row of the report: one turn of a run, or a run without turns (`turn` empty). Written
/// with `csv::Writer::serialize` and read back (`runner report`) with `deserialize`. Columns
/// after `latency_ms` may be missing from a report an older runner wrote: they read as 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReportRow {
    #[serde(with = "cell::text")]
    pub run_id: String,
    #[serde(with = "cell::text")]
    pub scenario: String,
    #[serde(with = "cell::model")]
    pub model: ModelSpec,
    #[serde(deserialize_with = "cell::repetition")]
    pub repetition: u32,
    #[serde(with = "cell::turn")]
    pub turn: Option<u64>,
    /// `None`: the run never started (`not_started`).
    #[serde(with = "cell::status")]
    pub status: Option<Status>,
    #[serde(deserialize_with = "cell::whole")]
    pub prompt_tokens: u64,
    #[serde(deserialize_with = "cell::whole")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "cell::count")]
    pub total_tokens: u64,
    #[serde(default, with = "cell::some_usd")]
    pub input_cost_usd: f64,
    #[serde(default, with = "cell::some_usd")]
    pub output_cost_usd: f64,
    #[serde(with = "cell::usd")]
    pub total_cost_usd: f64,
    #[serde(default, deserialize_with = "cell::count")]
    pub requests: u64,
    #[serde(default, deserialize_with = "cell::count")]
    pub tool_calls: u64,
    #[serde(deserialize_with = "cell::whole")]
    pub latency_ms: u64,
    #[serde(default, deserialize_with = "cell::count")]
    pub cached_tokens: u64,
    #[serde(default, deserialize_with = "cell::count")]
    pub reasoning_tokens: u64,
    #[serde(default, with = "cell::flag")]
    pub unpriced: bool,
    #[serde(default, with = "cell::text")]
    pub error: String,
    #[serde(default, deserialize_with = "cell::count")]
    pub cache_write_tokens: u64,
    #[serde(default, deserialize_with = "cell::count")]
    pub cache_hits: u64,
    #[serde(default, with = "cell::some_usd")]
    pub judge_cost_usd: f64,
    /// What the simulated user cost for this turn's message; the last turn also carries the
    /// message that ended the conversation, so the column sums to the run's simulator cost.
    #[serde(default, with = "cell::some_usd")]
    pub user_cost_usd: f64,
}

impl ReportRow {
    /// The row of a run without turns: zero tokens, zero cost, `turn` empty.
    fn without_turns(
        run_id: &str,
        scenario: &str,
        model: &ModelSpec,
        repetition: u32,
        status: Option<Status>,
        unpriced: bool,
        error: &str,
    ) -> Self {
        Self {
            run_id: run_id.to_owned(),
            scenario: scenario.to_owned(),
            model: model.clone(),
            repetition,
            turn: None,
            status,
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
            input_cost_usd: 0.0,
            output_cost_usd: 0.0,
            total_cost_usd: 0.0,
            requests: 0,
            tool_calls: 0,
            latency_ms: 0,
            cached_tokens: 0,
            reasoning_tokens: 0,
            unpriced,
            error: error.to_owned(),
            cache_write_tokens: 0,
            cache_hits: 0,
            judge_cost_usd: 0.0,
            user_cost_usd: 0.0,
        }
    }

    /// The rows of a run: one per turn, or one without a turn.
    pub(crate) fn of(outcome: &RunOutcome) -> Vec<Self> {
        let record = match outcome {
            RunOutcome::Finished(record) => record,
            RunOutcome::NotStarted(run) => {
                let row = Self::without_turns(
                    &run.run_id,
                    &run.scenario.name,
                    &run.model,
                    run.repetition,
                    None,
                    run.unpriced,
                    &run.reason,
                );
                return vec![row];
            }
        };
        let scenario = record.scenario.as_ref().map_or("", |s| s.name.as_str());
        // What no turn's own record holds (the simulated user's closing message, the judge
        // of the whole conversation) goes with the last turn, so each column sums to the run.
        let user_usd = |turn: &TurnRecord| turn.user_request.as_ref().map_or(0.0, |r| r.cost.total_usd);
        let user_rest = record.user_cost_usd() - record.turns.iter().map(user_usd).sum::<f64>();
        let judge_rest = record.judge.as_ref().map_or(0.0, |j| j.cost.total_usd);
        let last = record.turns.len();
        let turn_row = |turn: &TurnRecord| Self {
            run_id: record.run_id.clone(),
            scenario: scenario.to_owned(),
            model: record.model.spec.clone(),
            repetition: record.repetition,
            turn: Some(turn.index as u64),
            status: Some(turn.status),
            prompt_tokens: turn.usage.prompt_tokens,
            completion_tokens: turn.usage.completion_tokens,
            total_tokens: turn.usage.total_tokens,
            input_cost_usd: turn.cost.input_usd,
            output_cost_usd: turn.cost.output_usd,
            total_cost_usd: turn.cost.total_usd,
            requests: turn.requests.len() as u64,
            tool_calls: turn.tool_calls.len() as u64,
            latency_ms: turn.latency_ms,
            cached_tokens: turn.usage.cached_tokens,
            reasoning_tokens: turn.usage.reasoning_tokens,
            unpriced: record.cost.unpriced,
            error: turn.error.clone().unwrap_or_default(),
            cache_write_tokens: turn.usage.cache_write_tokens,
            cache_hits: turn.cache_hits() as u64,
            judge_cost_usd: turn.judge_cost_usd() + if turn.index == last { judge_rest } else { 0.0 },
            user_cost_usd: user_usd(turn) + if turn.index == last { user_rest.max(0.0) } else { 0.0 },
        };
        if record.turns.is_empty() {
            // A run that ended before its first turn still has its row, turn left empty.
            let error = record.error.as_deref().unwrap_or("");
            let (model, unpriced) = (&record.model.spec, record.cost.unpriced);
            let row = Self::without_turns(
                &record.run_id,
                scenario,
                model,
                record.repetition,
                Some(record.status),
                unpriced,
                error,
            );
            return vec![Self { user_cost_usd: record.user_cost_usd(), ..row }];
        }
        record.turns.iter().map(turn_row).collect()
    }

    /// The row's token counts.
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            cached_tokens: self.cached_tokens,
            cache_write_tokens: self.cache_write_tokens,
            ..Usage::new(self.prompt_tokens, self.completion_tokens)
        }
    }
}

/// A writer of report rows under the [`COLUMNS`] header, written at once (a report of no
/// runs still has its header).
pub(crate) fn writer<W: Write>(out: W) -> csv::Result<csv::Writer<W>> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    writer.write_record(COLUMNS)?;
    Ok(writer)
}

/// Writes report rows to any writer, a run's rows together, flushed as each run ends.
pub(crate) struct CsvReport<W: Write> {
    writer: csv::Writer<W>,
}

impl CsvReport<BufWriter<File>> {
    /// Creates `path` (and its directory) and writes the header. The file is locked while
    /// the report is written: a second runner writing the same report is refused instead of
    /// tearing its rows.
    pub(crate) fn create(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Opened without truncating: the lock must be held before anything is cut.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
            return Err(ReportError::Usage(format!(
                "{} is being written by another runner; give this run its own --report",
                path.display()
            ))
            .into());
        }
        if file.metadata().is_ok_and(|meta| meta.is_file()) {
            file.set_len(0).with_context(|| format!("cannot truncate {}", path.display()))?;
        }
        Self::new(BufWriter::new(file))
    }
}

impl<W: Write> CsvReport<W> {
    /// A report over `out`, its header written.
    pub(crate) fn new(out: W) -> anyhow::Result<Self> {
        let mut writer = writer(out)?;
        writer.flush()?;
        Ok(Self { writer })
    }
}

impl<W: Write> Reporter for CsvReport<W> {
    fn run_ended(&mut self, outcome: &RunOutcome) -> anyhow::Result<()> {
        for row in ReportRow::of(outcome) {
            self.writer.serialize(row)?;
        }
        // A run's rows reach the file together, before the next run is reported.
        self.writer.flush()?;
        Ok(())
    }
}

/// How a cell of a report is written and read back: text made inert for spreadsheets, dollars
/// short, whole numbers no larger than runner believes, `not_started` for a run's status.
pub(crate) mod cell {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::ModelSpec;
    use crate::record::{NOT_STARTED, Status};
    use crate::text::printable;

    fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        String::deserialize(deserializer)
    }

    /// A cell that does not hold what its column takes.
    #[derive(Debug, thiserror::Error)]
    #[error("expected {expected}, found `{}`", printable(found))]
    struct Unexpected {
        expected: &'static str,
        found: String,
    }

    /// A whole number from 0 to 2^53.
    fn whole_in(text: &str) -> Result<u64, Unexpected> {
        text.parse::<u64>()
            .ok()
            .filter(|&n| n <= crate::usage::MAX_BELIEVED)
            .ok_or_else(|| Unexpected { expected: "a whole number from 0 to 2^53", found: text.to_owned() })
    }

    /// An amount in dollars from 0 to a billion (no run's).
    fn amount_in(text: &str) -> Result<f64, Unexpected> {
        text.parse::<f64>()
            .ok()
            .filter(|usd| usd.is_finite() && (0.0..=1e9).contains(usd))
            .ok_or_else(|| Unexpected { expected: "an amount in dollars from 0 to 1e9", found: text.to_owned() })
    }

    /// A count: a whole number from 0 to 2^53.
    pub(crate) fn whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        whole_in(&read(deserializer)?).map_err(D::Error::custom)
    }

    /// A count in a column an older report may leave empty: empty is 0.
    pub(crate) fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = read(deserializer)?;
        if text.is_empty() { Ok(0) } else { whole_in(&text).map_err(D::Error::custom) }
    }

    pub(crate) fn repetition<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let text = read(deserializer)?;
        text.parse::<u32>().ok().ok_or_else(|| {
            D::Error::custom(format!("expected a whole number from 0 to 2^32 - 1, found `{}`", printable(&text)))
        })
    }

    /// Text from outside, made inert ([`super::text_cell`]) and read back whole.
    pub(crate) mod text {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&super::super::text_cell(text))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
            let cell = read(deserializer)?;
            Ok(super::super::text_from_cell(&cell).to_owned())
        }
    }

    /// A model as `PROVIDER:MODEL`, as text from outside.
    pub(crate) mod model {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(model: &ModelSpec, serializer: S) -> Result<S::Ok, S::Error> {
            text::serialize(&model.to_string(), serializer)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ModelSpec, D::Error> {
            let text = text::deserialize(deserializer)?;
            ModelSpec::from_key(&text).ok_or_else(|| {
                D::Error::custom(format!("expected a model as PROVIDER:MODEL, found `{}`", printable(&text)))
            })
        }
    }

    /// A turn's number; empty for a run without turns.
    pub(crate) mod turn {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(turn: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
            match turn {
                Some(turn) => serializer.serialize_u64(*turn),
                None => serializer.serialize_str(""),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
            let text = read(deserializer)?;
            if text.is_empty() {
                return Ok(None);
            }
            whole_in(&text).map(Some).map_err(D::Error::custom)
        }
    }

    /// A run's status, or `not_started`.
    pub(crate) mod status {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(status: &Option<Status>, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(status.map_or(NOT_STARTED, Status::as_str))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Status>, D::Error> {
            let text = read(deserializer)?;
            match Status::parse(&text) {
                Some(status) => Ok(Some(status)),
                None if text == NOT_STARTED => Ok(None),
                None => Err(D::Error::custom(format!(
                    "expected status passed, failed, error or not_started, found `{}`",
                    printable(&text)
                ))),
            }
        }
    }

    /// Dollars: written short ([`super::usd`]), read as an amount from 0 to a billion.
    pub(crate) mod usd {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(usd: &f64, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&super::super::usd(*usd))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
            amount_in(&read(deserializer)?).map_err(D::Error::custom)
        }
    }

    /// Dollars in a column an older report may leave empty: empty is 0.
    pub(crate) mod some_usd {
        use super::*;

        pub(crate) use super::usd::serialize;

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
            let text = read(deserializer)?;
            if text.is_empty() { Ok(0.0) } else { amount_in(&text).map_err(D::Error::custom) }
        }
    }

    /// `true` or `false`; anything else reads as `false`.
    pub(crate) mod flag {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(flag: &bool, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(if *flag { "true" } else { "false" })
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
            Ok(read(deserializer)? == "true")
        }
    }
}

/// A report row read by the names in `header`; what is wrong with it names its column.
pub(crate) fn read_row(record: &csv::StringRecord, header: &csv::StringRecord) -> Result<ReportRow, super::RowError> {
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error, MapAccessDeserializer};

    /// The row's cells under their column names, remembering the column being read.
    struct Cells<'a, I> {
        pairs: I,
        value: &'a str,
        column: &'a std::cell::Cell<&'a str>,
    }

    impl<'a, I: Iterator<Item = (&'a str, &'a str)>> serde::de::MapAccess<'a> for Cells<'a, I> {
        type Error = Error;

        fn next_key_seed<K: serde::de::DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
            let Some((column, value)) = self.pairs.next() else { return Ok(None) };
            self.column.set(column);
            self.value = value;
            seed.deserialize(column.into_deserializer()).map(Some)
        }

        fn next_value_seed<V: serde::de::DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Error> {
            seed.deserialize(self.value.into_deserializer())
        }
    }

    let column = std::cell::Cell::new("");
    let cells = Cells { pairs: header.iter().zip(record.iter()), value: "", column: &column };
    ReportRow::deserialize(MapAccessDeserializer::new(cells))
        .map_err(|err: Error| super::RowError::Cell { column: column.get().to_owned(), why: err.to_string() })
}

/// The most of a text a cell holds (an error's); past it the text is cut and marked.
pub(crate) const MAX_CELL: usize = 4096;

/// Text from outside (a scenario or model name, an error) as a CSV cell: one that a
/// spreadsheet would run as a formula (a leading `=`, `+`, `-`, `@`, tab or carriage return)
/// gets a leading `'`, as OWASP advises, and so does one that already begins with `'`, so that
/// [`text_from_cell`] gives back exactly what was written. Cut at [`MAX_CELL`] bytes.
pub(crate) fn text_cell(text: &str) -> std::borrow::Cow<'_, str> {
    let text: std::borrow::Cow<'_, str> = if text.len() > MAX_CELL {
        let mut end = MAX_CELL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes in all)", &text[..end], text.len()).into()
    } else {
        text.into()
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) { format!("'{text}").into() } else { text }
}

/// A text cell as [`text_cell`] wrote it, read back.
pub(crate) fn text_from_cell(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

/// A dollar amount with 10 decimals, trailing zeros dropped (`0.000046`, `0`).
pub(crate) fn usd(value: f64) -> String {
    let text = format!("{value:.10}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_row_is_its_columns_and_reads_back_whole() {
        let model = ModelSpec::from_key("openai:gpt-4o-mini").unwrap();
        let row = ReportRow {
            turn: Some(2),
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            input_cost_usd: 0.1,
            output_cost_usd: 0.2,
            total_cost_usd: 0.3,
            requests: 2,
            tool_calls: 1,
            latency_ms: 120,
            cached_tokens: 4,
            reasoning_tokens: 3,
            cache_write_tokens: 2,
            cache_hits: 1,
            judge_cost_usd: 0.05,
            ..ReportRow::without_turns("r1", "=s, 'quoted'", &model, 3, Some(Status::Failed), true, "-bad\nline")
        };
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(&row).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next(), Some(COLUMNS.join(",").as_str()));
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let back: ReportRow = reader.deserialize().next().unwrap().unwrap();
        assert_eq!(back, row);
        // A report with only the required columns reads the others as 0.
        let old = format!("{}\nr,s,a:b,1,,not_started,0,0,0,0\n", REQUIRED.join(","));
        let back: ReportRow = csv::Reader::from_reader(old.as_bytes()).deserialize().next().unwrap().unwrap();
        assert_eq!(back, ReportRow::without_turns("r", "s", &ModelSpec::from_key("a:b").unwrap(), 1, None, false, ""));
    }

    #[test]
    fn a_run_never_started_is_one_row_with_its_reason() {
        use crate::model::ModelSpec;
        use crate::record::{NotStarted, ScenarioRef};
        let mut report = CsvReport::new(Vec::new()).unwrap();
        let run = NotStarted {
            run_id: "r1".into(),
            scenario: ScenarioRef { name: "s".into(), file: "s.yaml".into() },
            model: ModelSpec::from_key("openai:gpt-4o-mini").unwrap(),
            repetition: 2,
            unpriced: false,
            reason: "budget, reached".into(),
        };
        report.run_ended(&RunOutcome::NotStarted(run)).unwrap();
        let text = String::from_utf8(report.writer.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "r1,s,openai:gpt-4o-mini,2,,not_started,0,0,0,0,0,0,0,0,0,0,0,false,\"budget, reached\",0,0,0,0"
        );
    }

    #[test]
    fn formulas_are_neutralised_and_read_back() {
        for text in
            ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "'quoted", "'=both", "plain", "a=b", ""]
        {
            let cell = text_cell(text);
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "{text:?} -> {cell:?}");
            assert_eq!(text_from_cell(&cell), text);
        }
        let long = "x".repeat(MAX_CELL * 3);
        let cell = text_cell(&long);
        assert!(
            cell.len() < MAX_CELL + 40 && cell.ends_with(&format!("({} bytes in all)", MAX_CELL * 3)),
            "{}",
            cell.len()
        );
    }

    #[test]
    fn dollars_are_exact_enough_and_short() {
        assert_eq!(usd(0.0), "0");
        assert_eq!(usd(46e-6), "0.000046");
        assert_eq!(usd(0.1 + 0.2), "0.3");
        assert_eq!(usd(12.5), "12.5");
    }
}
