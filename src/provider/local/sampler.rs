//! Choosing the next token: greedy by default, or temperature and top-p with a seeded
//! random stream, always over an allowed set when decoding is constrained.

use crate::rng::unit;

/// Sampling settings of one request.
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    state: u64,
}

impl Sampler {
    /// Greedy when `temperature` is absent or 0.
    pub fn new(temperature: Option<f64>, top_p: Option<f64>, seed: u64) -> Self {
        Self { temperature: temperature.unwrap_or(0.0), top_p: top_p.unwrap_or(1.0), state: seed }
    }

    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        unit(self.state)
    }

    /// The next token among those `allowed` accepts (all when `None`), or `None` when
    /// `allowed` accepts no token at all.
    pub fn pick(&mut self, logits: &[f32], allowed: Option<&dyn Fn(u32) -> bool>) -> Option<u32> {
        let ok = |id: u32| allowed.is_none_or(|f| f(id));
        if self.temperature <= 0.0 {
            return best_allowed(logits, &ok);
        }
        // Candidates by logit, best first; check `allowed` lazily, stopping at 64 accepted.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let candidates: Vec<u32> = order.into_iter().filter(|&id| ok(id)).take(64).collect();
        let first = *candidates.first()?;
        let max = logits[first as usize] as f64;
        let weights: Vec<f64> =
            candidates.iter().map(|&id| ((logits[id as usize] as f64 - max) / self.temperature).exp()).collect();
        let total: f64 = weights.iter().sum();
        // Nucleus: the smallest prefix whose probability reaches top_p.
        let mut kept = 0;
        let mut mass = 0.0;
        for w in &weights {
            kept += 1;
            mass += w / total;
            if mass >= self.top_p {
                break;
            }
        }
        let kept_total: f64 = weights[..kept].iter().sum();
        let mut target = self.next_unit() * kept_total;
        for (i, w) in weights[..kept].iter().enumerate() {
            target -= w;
            if target <= 0.0 {
                return Some(candidates[i]);
            }
        }
        Some(candidates[kept - 1])
    }
}

/// The allowed token with the highest logit.
pub fn best_allowed(logits: &[f32], ok: &dyn Fn(u32) -> bool) -> Option<u32> {
    // Try the few best first (almost always enough), then scan everything.
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(33);
    for (id, &logit) in logits.iter().enumerate() {
        if best.len() < 32 || logit > best[best.len() - 1].0 {
            let at = best.partition_point(|(l, _)| *l >= logit);
            best.insert(at, (logit, id as u32));
            best.truncate(32);
        }
    }
    if let Some(&(_, id)) = best.iter().find(|(_, id)| ok(*id)) {
        return Some(id);
    }
    logits
        .iter()
        .enumerate()
        .filter(|(id, _)| ok(*id as u32))
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(id, _)| id as u32)
}

/// log(sum(exp(logits))) over the tokens `ok` accepts, minus the log-sum over all: the log
/// probability that the next token is one of them.
pub fn log_mass(logits: &[f32], ok: &dyn Fn(u32) -> bool) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let (mut all, mut some) = (0.0, 0.0);
    for (id, &logit) in logits.iter().enumerate() {
        let e = (logit as f64 - max).exp();
        all += e;
        if ok(id as u32) {
            some += e;
        }
    }
    (some / all).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_respects_the_allowed_set() {
        let logits = [0.1, 3.0, 2.0, -1.0];
        let mut sampler = Sampler::new(None, None, 0);
        assert_eq!(sampler.pick(&logits, None), Some(1));
        assert_eq!(sampler.pick(&logits, Some(&|id| id != 1)), Some(2));
        assert_eq!(sampler.pick(&logits, Some(&|_| false)), None);
    }

    #[test]
    fn sampling_is_reproducible_by_seed() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(Some(1.0), Some(0.9), seed);
            (0..20).map(|_| s.pick(&logits, None).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn log_mass_of_everything_is_zero() {
        let logits = [1.0, 2.0, 3.0];
        assert!(log_mass(&logits, &|_| true).abs() < 1e-12);
        let p = log_mass(&logits, &|id| id == 2).exp();
        assert!((p - 0.665_240_955_8).abs() < 1e-9);
    }
}
