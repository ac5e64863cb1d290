//! Reporters and exporters: what runs become once they end. Each reporter
//! ([`crate::record::Reporter`]) receives every run as it ends, so nothing waits for the end
//! and memory stays flat: the JSON logs, the CSV report, JUnit, the summary. `merge` reads
//! reports back.

pub(crate) mod csv;
pub(crate) mod json;
pub(crate) mod junit;
pub(crate) mod merge;
pub(crate) mod summary;

use std::path::Path;

/// Where the per-model summary of the report at `report` goes: `NAME.summary.csv` beside it.
pub(crate) fn summary_path(report: &Path) -> std::path::PathBuf {
    let name = report.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".csv").unwrap_or(&name);
    report.with_file_name(format!("{stem}.summary.csv"))
}

/// Rows as aligned text columns two spaces apart: the columns in `left` aligned left, the
/// others right; the first row is the header. Trailing spaces are trimmed.
pub(crate) fn render_table(rows: &[Vec<String>], left: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|col| rows.iter().filter_map(|r| r.get(col)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
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

/// `text` made safe as a file name: letters, digits, `-`, `_` and single dots kept, every
/// other character (separators, colons, control characters) replaced by `_`; never `..`,
/// never hidden, never empty, at most 100 bytes.
pub(crate) fn safe_file_name(text: &str) -> String {
    let mut name = String::with_capacity(text.len());
    for c in text.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '-' || c == '_' || (c == '.' && !name.ends_with('.'));
        name.push(if keep { c } else { '_' });
        if name.len() >= 100 {
            break;
        }
    }
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::safe_file_name;

    #[test]
    fn names_are_safe() {
        assert_eq!(safe_file_name("openai:gpt-4o-mini"), "openai_gpt-4o-mini");
        assert_eq!(safe_file_name("ollama:llama3.2:3b"), "ollama_llama3.2_3b");
        assert_eq!(safe_file_name("../../etc/passwd"), "_.__.__etc_passwd");
        assert_eq!(safe_file_name("a/b\\c\n\u{7}"), "a_b_c__");
        assert_eq!(safe_file_name(".hidden"), "_.hidden");
        assert_eq!(safe_file_name(""), "_");
        assert!(!safe_file_name("x..y").contains(".."));
        assert_eq!(safe_file_name(&"a".repeat(300)).len(), 100);
    }
}
