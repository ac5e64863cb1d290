//! Reporters and exporters: what runs become once they end. Each reporter
//! ([`crate::record::Reporter`]) receives every run as it ends, so nothing waits for the end
//! and memory stays flat: the JSON logs, the CSV report, JUnit, the summary. `merge` reads
//! reports back.

pub(crate) mod baseline;
pub(crate) mod confidence;
pub(crate) mod csv;
pub(crate) mod failures;
pub(crate) mod html;
pub(crate) mod json;
pub(crate) mod junit;
pub(crate) mod merge;
pub(crate) mod summary;
pub(crate) mod trace;

use std::path::Path;

pub(crate) use crate::text::{escape_markup, printable};

/// What goes wrong reading or writing reports.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    /// A report that is not one runner can read, or a file the user named twice or that
    /// another runner writes: the user's to fix (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A row that cannot be read or merged, at FILE:LINE.
    #[error("{file}:{line}: {why}")]
    Row { file: String, line: u64, why: Box<RowError> },
}

/// A report row that cannot be read, or that cannot join the rows read before it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RowError {
    /// A cell that does not hold what its column takes (`column` is empty when the row as a
    /// whole is wrong).
    #[error("{}{why}", if column.is_empty() { String::new() } else { format!("in `{column}`: ") })]
    Cell { column: String, why: String },
    #[error(
        "run {scenario} / {model} / repetition {repetition} is also in {} (run {run_id}); merge the shards of one run, not overlapping runs",
        other.display()
    )]
    Overlap {
        scenario: String,
        model: crate::model::ModelSpec,
        repetition: u32,
        other: std::path::PathBuf,
        run_id: String,
    },
    #[error("turn {turn} of run {scenario} / {model} / repetition {repetition} appears twice (a duplicated row)")]
    Twice { turn: u64, scenario: String, model: crate::model::ModelSpec, repetition: u32 },
}

impl ReportError {
    /// The process exit code this error ends a command with.
    pub(crate) fn code(&self) -> u8 {
        match self {
            ReportError::Usage(_) | ReportError::Row { .. } => crate::exit::EXIT_USAGE,
        }
    }
}

/// Where the per-model summary of the report at `report` goes: `NAME.summary.csv` beside it.
pub(crate) fn summary_path(report: &Path) -> std::path::PathBuf {
    let name = report.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".csv").unwrap_or(&name);
    report.with_file_name(format!("{stem}.summary.csv"))
}

/// Where every pass@k and pass^k goes: `NAME.pass_k.json` beside the summary `NAME.summary.csv`
/// (or beside any other summary file).
pub(crate) fn pass_k_path(summary: &Path) -> std::path::PathBuf {
    let name = summary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".summary.csv").or_else(|| name.strip_suffix(".csv")).unwrap_or(&name);
    summary.with_file_name(format!("{stem}.pass_k.json"))
}

/// Text for a Markdown table cell: everything Markdown or HTML would read (`|`, `*`, `[`,
/// `!`, `<`, `$` (GitHub's math), ...) escaped, line breaks and control characters as spaces, so that a name can
/// neither break the table, start a heading, nor render an image or a link.
pub(crate) fn markdown_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '!' | '~' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A name (a model's) as a Markdown code span in a table cell: backticks cannot end the span
/// and `|` cannot end the cell.
pub(crate) fn markdown_code(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c == '`' {
                '\''
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    format!("`{}`", clean.replace('|', "\\|"))
}

/// Rows as aligned text columns two spaces apart: the columns in `left` aligned left, the
/// others right; the first row is the header. Trailing spaces are trimmed.
pub(crate) fn render_table(rows: &[Vec<String>], left: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|col| rows.iter().filter_map(|r| r.get(col)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (col, cell) in row.iter().enumerate() {
            if col > 0 {
                line.push_str("  ");
            }
            let width = widths[col];
            if left.contains(&col) {
                line.push_str(&format!("{cell:<width$}"));
            } else {
                line.push_str(&format!("{cell:>width$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{escape_markup, markdown_cell, markdown_code, printable};

    #[test]
    fn hostile_names_stay_inside_their_markdown_cell() {
        for hostile in [
            "a|b",
            "x\n# Heading",
            "![img](http://x/y.png)",
            "[link](javascript:1)",
            "<img src=x>",
            "`code`|",
            "**bold** _it_",
        ] {
            let cell = markdown_cell(hostile);
            // No unescaped pipe, no line break, no markup character left bare.
            let bare =
                cell.char_indices().filter(|&(i, c)| "|[]!<>`*_\n".contains(c) && !cell[..i].ends_with('\\')).count();
            assert_eq!(bare, 0, "{hostile:?} -> {cell:?}");
        }
        assert_eq!(markdown_cell("weather-paris: ok"), "weather-paris: ok");
        assert_eq!(markdown_code("openai:gpt|x`y"), "`openai:gpt\\|x'y`");
        assert_eq!(printable("ok\u{1b}[2J"), "ok\\u{1b}[2J");
    }

    #[test]
    fn escapes_markup_and_drops_forbidden_characters() {
        assert_eq!(escape_markup("a<b & \"c\" 'd'>\u{1}"), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
        assert_eq!(escape_markup("line\nnext"), "line\nnext");
    }
}
