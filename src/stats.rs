//! The maths a comparison rests on: the Wilson interval of a pass rate, the paired t-test
//! (with its interval and the scenarios a difference would need), and the unbiased pass@k
//! and pass^k estimates. Student's t distribution is `statrs`'s; every figure here is checked
//! against scipy in the tests below (`scripts/stats_reference.py` prints the reference).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// The standard normal's 97.5th percentile: a two-sided 95% interval is ±`Z95` standard errors.
pub(crate) const Z95: f64 = 1.959_963_984_540_054;

/// A two-sided 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The 95% Wilson score interval of `passed` successes in `trials`; `None` without a trial.
/// Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or `trials`
/// successes.
pub(crate) fn wilson(passed: usize, trials: usize) -> Option<Interval> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = passed as f64 / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval { low: (centre - half).max(0.0), high: (centre + half).min(1.0) })
}

/// The paired t-test of differences (one per item, each item's own two figures subtracted):
/// their mean, spread, 95% interval and two-sided p-value, with `n - 1` degrees of freedom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Paired {
    /// Items paired.
    pub n: usize,
    pub mean: f64,
    /// The differences' sample standard deviation (0 for one item).
    pub sd: f64,
    /// `None` for one item: one difference has no spread to build an interval from.
    /// `[mean, mean]` when every difference is the same.
    pub interval: Option<Interval>,
    /// `None` for one item, or when every difference is the same (no spread: the t statistic
    /// is undefined, whatever the mean).
    pub p: Option<f64>,
}

impl Paired {
    /// The test over `differences`; `None` when there is none.
    pub(crate) fn of(differences: &[f64]) -> Option<Self> {
        let n = differences.len();
        if n == 0 {
            return None;
        }
        let mean = differences.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Some(Self { n, mean, sd: 0.0, interval: None, p: None });
        }
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = variance.sqrt();
        // Differences equal to rounding are equal: no spread.
        if sd <= 1e-12 * mean.abs().max(1.0) {
            return Some(Self { n, mean, sd: 0.0, interval: Some(Interval { low: mean, high: mean }), p: None });
        }
        let se = sd / (n as f64).sqrt();
        let t = student(n - 1);
        let half = t.inverse_cdf(0.975) * se;
        let p = 2.0 * t.cdf(-(mean / se).abs());
        Some(Self { n, mean, sd, interval: Some(Interval { low: mean - half, high: mean + half }), p: Some(p) })
    }

    /// The difference is told apart from none at the 5% level.
    pub(crate) fn significant(&self) -> bool {
        self.p.is_some_and(|p| p < 0.05)
    }

    /// About how many items a paired t-test needs to tell a true difference of `delta` from
    /// none at 80% power (two-sided, 5%), if the differences spread as these do: the smallest
    /// n with n >= ((t(0.975, n-1) + t(0.8, n-1)) * sd / delta)^2. `None` without a spread.
    pub(crate) fn items_to_detect(&self, delta: f64) -> Option<usize> {
        if self.sd <= 0.0 || delta <= 0.0 {
            return None;
        }
        let ratio = (self.sd / delta).powi(2);
        // The normal approximation is a lower bound; walk up from it.
        let mut n = ((7.84 * ratio).floor() as usize).max(2);
        loop {
            let t = student(n - 1);
            let needed = (t.inverse_cdf(0.975) + t.inverse_cdf(0.8)).powi(2) * ratio;
            if n as f64 >= needed || n >= 1_000_000 {
                return Some(n);
            }
            n += 1;
        }
    }
}

fn student(degrees: usize) -> StudentsT {
    StudentsT::new(0.0, 1.0, degrees as f64).expect("a positive whole number of degrees of freedom")
}

/// C(n, k) as a float (exact for the sizes repetitions come in).
fn choose(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The unbiased estimate of pass@k from `passed` of `n` repetitions: the chance that at least
/// one of k repetitions drawn from them passes, 1 - C(n-c, k)/C(n, k). `None` for k > n or k 0.
pub(crate) fn pass_at_k(n: usize, passed: usize, k: usize) -> Option<f64> {
    (k >= 1 && k <= n).then(|| 1.0 - choose(n - passed.min(n), k) / choose(n, k))
}

/// The unbiased estimate of pass^k: the chance that all of k repetitions pass,
/// C(c, k)/C(n, k). `None` for k > n or k 0.
pub(crate) fn pass_all_k(n: usize, passed: usize, k: usize) -> Option<f64> {
    (k >= 1 && k <= n).then(|| choose(passed.min(n), k) / choose(n, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every reference value below was printed by `scripts/stats_reference.py` (scipy 1.17.1):
    // the Wilson formula with scipy's norm.ppf(0.975), scipy.stats.ttest_rel, t.ppf, and
    // math.comb for pass@k.

    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn wilson_matches_the_reference() {
        assert_eq!(wilson(0, 0), None);
        for (passed, trials, low, high) in REFERENCE_WILSON {
            let interval = wilson(*passed, *trials).unwrap();
            close(interval.low, *low);
            close(interval.high, *high);
        }
    }

    #[test]
    fn paired_t_matches_ttest_rel() {
        for (differences, mean, low, high, p) in REFERENCE_PAIRED {
            let paired = Paired::of(differences).unwrap();
            close(paired.mean, *mean);
            let interval = paired.interval.unwrap();
            close(interval.low, *low);
            close(interval.high, *high);
            close(paired.p.unwrap(), *p);
        }
    }

    #[test]
    fn degenerate_pairs_say_so_instead_of_nan() {
        assert_eq!(Paired::of(&[]), None);
        let one = Paired::of(&[0.5]).unwrap();
        assert_eq!((one.n, one.mean, one.interval, one.p), (1, 0.5, None, None));
        let same = Paired::of(&[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(same.interval, Some(Interval { low: 1.0, high: 1.0 }));
        assert_eq!((same.p, same.significant(), same.items_to_detect(0.05)), (None, false, None));
        let none = Paired::of(&[0.0, 0.0]).unwrap();
        assert_eq!((none.mean, none.p), (0.0, None));
    }

    #[test]
    fn items_to_detect_matches_the_t_iteration() {
        for (sd, needed) in REFERENCE_POWER {
            let paired = Paired { n: 2, mean: 0.0, sd: *sd, interval: None, p: None };
            assert_eq!(paired.items_to_detect(0.05), Some(*needed), "sd {sd}");
        }
    }

    #[test]
    fn pass_at_k_and_pass_all_k_are_the_unbiased_estimates() {
        for (n, c, k, at, all) in REFERENCE_PASS_K {
            close(pass_at_k(*n, *c, *k).unwrap(), *at);
            close(pass_all_k(*n, *c, *k).unwrap(), *all);
        }
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_all_k(3, 1, 0), None);
        // k = 1 is the plain pass rate.
        close(pass_at_k(5, 2, 1).unwrap(), 0.4);
        close(pass_all_k(5, 2, 1).unwrap(), 0.4);
    }

    const REFERENCE_WILSON: &[(usize, usize, f64, f64)] = &[
        (0, 1, 0.0, 0.7934506856227626),
        (1, 1, 0.20654931437723745, 1.0),
        (0, 10, 0.0, 0.2775327998628892),
        (10, 10, 0.7224672001371107, 0.9999999999999999),
        (17, 20, 0.6395811352592431, 0.9476312541037835),
        (5, 20, 0.11186170140766569, 0.468700877618744),
        (1, 3, 0.06149194472039615, 0.7923403991979523),
        (45, 60, 0.6276792992295218, 0.8422347746994333),
        (150, 200, 0.6856590168795417, 0.8049183199318249),
    ];
    const REFERENCE_PAIRED: &[(&[f64], f64, f64, f64, f64)] = &[
        (
            &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
            0.625,
            0.19231806632026222,
            1.0576819336797378,
            0.01120143255409014,
        ),
        (
            &[0.5, 0.0, 1.0, 0.3333333333333333, -0.3333333333333333, 0.0, 0.6666666666666666, 0.5, 0.25, 0.0],
            0.29166666666666663,
            0.011703737394467784,
            0.5716295959388655,
            0.042830530934111447,
        ),
        (
            &[-1.0, 0.0, 0.0, -1.0, 0.0, -0.5],
            -0.4166666666666667,
            -0.9325650716056699,
            0.0992317382723365,
            0.09251500555042763,
        ),
        (&[0.1, 0.2], 0.15000000000000002, -0.48531023680873475, 0.7853102368087348, 0.20483276469913342),
        (
            &[0.00012, 0.00031, -4e-05, 0.00022, 0.00018],
            0.000158,
            -3.988381759587284e-06,
            0.00031998838175958727,
            0.053643437280863834,
        ),
    ];
    const REFERENCE_POWER: &[(f64, usize)] =
        &[(0.05, 10), (0.1, 34), (0.2, 128), (0.3, 285), (0.5, 787), (0.4472135954999579, 630), (1.0, 3142)];
    const REFERENCE_PASS_K: &[(usize, usize, usize, f64, f64)] = &[
        (5, 2, 1, 0.4, 0.4),
        (5, 2, 2, 0.7, 0.1),
        (5, 2, 3, 0.9, 0.0),
        (5, 2, 4, 1.0, 0.0),
        (5, 2, 5, 1.0, 0.0),
        (10, 3, 3, 0.7083333333333333, 0.008333333333333333),
        (3, 3, 2, 1.0, 1.0),
        (3, 0, 2, 0.0, 0.0),
        (4, 2, 2, 0.8333333333333334, 0.16666666666666666),
        (4, 2, 3, 1.0, 0.0),
    ];
}
