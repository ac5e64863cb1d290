//! Small, fast, reproducible randomness: SplitMix64, shared by the tools' random stream, the
//! embedded model's sampler, retry jitter and generated call ids.

/// SplitMix64's output function: a well-spread 64-bit hash of `z`.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from 53 bits of `mix64(n)`.
pub(crate) fn unit(n: u64) -> f64 {
    (mix64(n) >> 11) as f64 / (1u64 << 53) as f64
}

/// A seed that differs from process to process (when `--seed` is not given).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_stays_in_range_and_spreads() {
        let values: Vec<f64> = (0..1000).map(unit).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
        assert_ne!(mix64(1), mix64(2));
    }
}
