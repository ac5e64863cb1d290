//! Retrying remote requests, and not hammering an endpoint that says it is busy.
//!
//! [`RetryPolicy`] decides how long to wait before the next attempt: what the server asked
//! for (`retry-after-ms`, `Retry-After` in seconds or as an HTTP date), else exponential
//! backoff with jitter, capped. [`Limiter`] bounds the requests in flight to one endpoint:
//! unbounded until the endpoint answers 429, then halved at each 429 and raised again by one
//! per round of successes (additive increase, multiplicative decrease, as TCP does), so a
//! suite converges on what the endpoint accepts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;
use tokio::sync::Notify;

/// Longest wait runner accepts from a server's `Retry-After`.
pub(crate) const MAX_SERVER_DELAY: Duration = Duration::from_secs(60);

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt; 0 sends each request once.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Longest backoff (when the server gives no delay).
    pub max_delay: Duration,
    /// Whether a time-out to a server on this machine or a private network is retried. Off
    /// unless retries were asked for (`--max-retries`, `max_retries:`): such a server
    /// (llama.cpp's, Ollama) often serves one request at a time and goes on generating the
    /// abandoned one, so a retry only queues behind it.
    pub retry_local_timeouts: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            retry_local_timeouts: false,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): the server's `asked` delay when it gave
    /// one (at most [`MAX_SERVER_DELAY`]), else `base_delay x 2^(retry-1)` capped at
    /// `max_delay`, scaled by `jitter` in [0.5, 1] so clients that failed together do not
    /// retry together.
    pub(crate) fn delay(&self, retry: u32, asked: Option<Duration>, jitter: f64) -> Duration {
        if let Some(asked) = asked {
            return asked.min(MAX_SERVER_DELAY);
        }
        let doubled = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        doubled.min(self.max_delay).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// The delay a response asks for: `retry-after-ms` (milliseconds, OpenAI's), else
/// `Retry-After` as seconds or an HTTP date. A proxy's prefixed forms count too (LiteLLM
/// passes an upstream `Retry-After` on as `llm_provider-retry-after`); the plain names win.
pub(crate) fn asked_delay(headers: &HeaderMap) -> Option<Duration> {
    let header = |suffix: &str| {
        let value = headers.get(suffix).or_else(|| {
            headers
                .iter()
                .find(|(name, _)| name.as_str().strip_suffix(suffix).is_some_and(|prefix| prefix.ends_with(['-', '_'])))
                .map(|(_, value)| value)
        });
        value.and_then(|v| v.to_str().ok()).map(str::trim)
    };
    if let Some(ms) =
        header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(when.timestamp()).ok()?);
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// A number in [0, 1), different at every call (SplitMix64 over a counter seeded by the clock).
pub(crate) fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ seed;
    crate::rng::unit(n)
}

/// Bounds the requests in flight to one endpoint (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    state: Mutex<LimiterState>,
    released: Notify,
}

#[derive(Debug, Default)]
struct LimiterState {
    /// `None`: no bound (no 429 seen, or fully recovered).
    limit: Option<f64>,
    in_flight: usize,
    /// When the limit was last cut: a 429 to a request sent before it says nothing new.
    cut_at: Option<Instant>,
    /// The highest number in flight seen; recovery stops bounding above it.
    peak: usize,
}

/// A place in flight; given back when dropped.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    pub started: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.limiter.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.in_flight -= 1;
        drop(state);
        self.limiter.released.notify_waiters();
    }
}

impl Limiter {
    /// Waits for a place in flight.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let room = state.limit.is_none_or(|limit| (state.in_flight as f64) < limit.floor().max(1.0));
                if room {
                    state.in_flight += 1;
                    state.peak = state.peak.max(state.in_flight);
                    return Permit { limiter: self.clone(), started: Instant::now() };
                }
            }
            released.await;
        }
    }

    /// The endpoint answered 429 to the request holding `permit`: halve what is in flight,
    /// once per round (429s to requests sent before the last cut are not counted again).
    pub(crate) fn throttled(&self, permit: &Permit) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.cut_at.is_some_and(|cut| permit.started < cut) {
            return;
        }
        let current = state.limit.map_or(state.in_flight as f64, |limit| limit.min(state.in_flight as f64));
        state.limit = Some((current / 2.0).floor().max(1.0));
        state.cut_at = Some(Instant::now());
    }

    /// A request succeeded: raise the bound by about one per round of successes; lift it
    /// once it passes the most ever in flight.
    pub(crate) fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(limit) = state.limit {
            let raised = limit + 1.0 / limit;
            state.limit = (raised <= state.peak as f64).then_some(raised);
        }
        drop(state);
        self.released.notify_waiters();
    }

    /// The current bound, `None` when unbounded.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> Option<usize> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).limit.map(|l| l.floor() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::from_static(name), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, None, 1.0), Duration::from_millis(500));
        assert_eq!(policy.delay(1, None, 0.0), Duration::from_millis(250));
        assert_eq!(policy.delay(3, None, 1.0), Duration::from_secs(2));
        assert_eq!(policy.delay(30, None, 1.0), Duration::from_secs(20));
        assert_eq!(policy.delay(2, Some(Duration::from_millis(1234)), 0.0), Duration::from_millis(1234));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3600)), 0.0), MAX_SERVER_DELAY);
        let spread: std::collections::BTreeSet<u64> =
            (0..50).map(|_| policy.delay(2, None, jitter()).as_millis() as u64).collect();
        assert!(spread.len() > 10 && spread.iter().all(|ms| (500..=1000).contains(ms)), "{spread:?}");
    }

    #[test]
    fn server_delays() {
        assert_eq!(asked_delay(&headers(&[("retry-after-ms", "150")])), Some(Duration::from_millis(150)));
        assert_eq!(asked_delay(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(
            asked_delay(&headers(&[("retry-after-ms", "20"), ("retry-after", "9")])),
            Some(Duration::from_millis(20))
        );
        let later = chrono::Utc::now() + chrono::Duration::seconds(30);
        let date = asked_delay(&headers(&[("retry-after", &later.to_rfc2822())])).unwrap();
        assert!((Duration::from_secs(28)..=Duration::from_secs(30)).contains(&date), "{date:?}");
        assert_eq!(asked_delay(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), Some(Duration::ZERO));
        assert_eq!(asked_delay(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(asked_delay(&HeaderMap::new()), None);
        // A proxy's prefixed names (LiteLLM's), the plain one first when both are there.
        assert_eq!(asked_delay(&headers(&[("llm_provider-retry-after", "4")])), Some(Duration::from_secs(4)));
        assert_eq!(asked_delay(&headers(&[("llm_provider-retry-after-ms", "70")])), Some(Duration::from_millis(70)));
        assert_eq!(
            asked_delay(&headers(&[("x-retry-after", "1"), ("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(asked_delay(&headers(&[("noretry-after", "5")])), None);
    }

    #[tokio::test]
    async fn limiter_halves_on_429_and_recovers_on_success() {
        let limiter = Arc::new(Limiter::default());
        let permits: Vec<Permit> = futures::future::join_all((0..8).map(|_| limiter.acquire())).await;
        assert_eq!(limiter.limit(), None);
        limiter.throttled(&permits[0]);
        assert_eq!(limiter.limit(), Some(4));
        // Other 429s to requests sent before the cut do not cut again.
        limiter.throttled(&permits[1]);
        assert_eq!(limiter.limit(), Some(4));
        drop(permits);
        // Four may be in flight now; a fifth waits until one is given back.
        let four: Vec<Permit> = futures::future::join_all((0..4).map(|_| limiter.acquire())).await;
        let fifth = tokio::time::timeout(Duration::from_millis(50), limiter.acquire()).await;
        assert!(fifth.is_err(), "a fifth request must wait");
        // A 429 after the cut cuts again.
        limiter.throttled(&four[0]);
        assert_eq!(limiter.limit(), Some(2));
        drop(four);
        for _ in 0..200 {
            limiter.succeeded();
        }
        assert_eq!(limiter.limit(), None, "recovered past the peak: unbounded again");
    }
}
