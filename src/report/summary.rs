//! The end-of-run summary: per model, runs passed / failed / errored, tokens, cost, latency.

use std::path::Path;

use super::Reporter;
use crate::record::{RunRecord, Status};
use crate::usage::Usage;

/// Figures of one model across its runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelStats {
    pub model: String,
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub usage: Usage,
    pub cost_usd: f64,
    pub unpriced: bool,
    /// Latency of every turn, in finishing order.
    pub turn_latencies_ms: Vec<u64>,
}

impl ModelStats {
    pub fn median_latency_ms(&self) -> Option<u64> {
        median(&self.turn_latencies_ms)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]).div_ceil(2) } else { sorted[mid] })
}

/// Collects per-model figures as runs finish.
#[derive(Debug, Default)]
pub struct Summary {
    models: Vec<ModelStats>,
}

impl Summary {
    pub fn models(&self) -> &[ModelStats] {
        &self.models
    }

    pub fn total_runs(&self) -> usize {
        self.models.iter().map(|m| m.runs).sum()
    }

    pub fn all_passed(&self) -> bool {
        self.models.iter().all(|m| m.passed == m.runs)
    }

    /// The table printed at the end of `runner run`.
    pub fn render(&self) -> String {
        let header = ["model", "runs", "passed", "failed", "errors", "prompt_tok", "completion_tok", "cost_usd", "median_ms"];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for m in &self.models {
            rows.push(vec![
                m.model.clone(),
                m.runs.to_string(),
                m.passed.to_string(),
                m.failed.to_string(),
                m.errors.to_string(),
                m.usage.prompt_tokens.to_string(),
                m.usage.completion_tokens.to_string(),
                if m.unpriced { "unpriced".to_owned() } else { format!("{:.6}", m.cost_usd) },
                m.median_latency_ms().map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            ]);
        }
        let mut out = super::render_table(&rows, &[0]);
        let (runs, passed) = (self.total_runs(), self.models.iter().map(|m| m.passed).sum::<usize>());
        let failed: usize = self.models.iter().map(|m| m.failed).sum();
        let errors: usize = self.models.iter().map(|m| m.errors).sum();
        out.push_str(&format!("\nresult: {passed} of {runs} runs passed ({failed} failed, {errors} with errors)\n"));
        if self.models.iter().any(|m| m.unpriced) {
            out.push_str("unpriced: models without a known price count as $0; add prices with --prices FILE or runner.yaml\n");
        }
        out
    }
}

impl Summary {
    /// The summary as a Markdown table (for `GITHUB_STEP_SUMMARY`).
    pub fn render_markdown(&self) -> String {
        let mut out = String::from("### runner\n\n| model | runs | passed | failed | errors | prompt tokens | completion tokens | cost (USD) | median turn (ms) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.models {
            let cost = if m.unpriced { "unpriced".to_owned() } else { format!("{:.6}", m.cost_usd) };
            let median = m.median_latency_ms().map_or_else(|| "-".to_owned(), |ms| ms.to_string());
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {cost} | {median} |\n",
                m.model, m.runs, m.passed, m.failed, m.errors, m.usage.prompt_tokens, m.usage.completion_tokens
            ));
        }
        out.push('\n');
        out
    }
}

impl Reporter for Summary {
    fn run_finished(&mut self, record: &RunRecord, _log: &Path) -> anyhow::Result<()> {
        let model = format!("{}:{}", record.model.provider, record.model.name);
        let index = match self.models.iter().position(|m| m.model == model) {
            Some(index) => index,
            None => {
                self.models.push(ModelStats { model, ..ModelStats::default() });
                self.models.len() - 1
            }
        };
        let stats = &mut self.models[index];
        stats.runs += 1;
        match record.status {
            Status::Passed => stats.passed += 1,
            Status::Failed => stats.failed += 1,
            Status::Error => stats.errors += 1,
        }
        stats.usage += record.usage;
        stats.cost_usd += record.cost.total_usd;
        stats.unpriced |= record.cost.unpriced;
        stats.turn_latencies_ms.extend(record.turns.iter().map(|t| t.latency_ms));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[1, 2, 3, 10]), Some(3));
    }
}
