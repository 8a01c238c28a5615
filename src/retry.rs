//! When to try again: which answers are transient, how long to back off (exponential, with jitter, never less
//! than the server's `Retry-After`), and when to give up.

use crate::error::{shorten, SyncError};
use crate::fly_api::error_detail;
use crate::http::Response;

/// First backoff step; Fly's limits are per second, so waiting less than about half a second is wasted.
pub const BASE_DELAY_MS: u64 = 500;
pub const MAX_DELAY_MS: u64 = 8_000;
/// Attempts per call, first one included.
pub const MAX_ATTEMPTS: u32 = 5;
/// A rate-limited call is not failing, only early: it may try this many times (still inside the budget), so a
/// burst of Function runs sharing one app's Machines API limits gets through instead of giving up.
pub const MAX_RATE_LIMITED_ATTEMPTS: u32 = 20;

/// What one answer means for the call that got it: success with what was read from it (`T`), try again, or
/// give up.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<T> {
    Success(T),
    /// Try again, not before `min_delay_ms` (from `Retry-After`) if given.
    Retry { error: SyncError, min_delay_ms: Option<u64>, rate_limited: bool },
    Fail(SyncError),
}

/// The generic reading of an answer (success carries the body); callers special-case statuses that mean
/// something for them (409 on a lease, 404 on a release, 408 on a restart) before falling back to this.
pub fn classify<'r>(response: &'r Response, what: &str, now_ms: u64) -> Verdict<&'r str> {
    match response {
        Response::Timeout => Verdict::Retry { error: SyncError::retryable(format!("{what}: timed out")), min_delay_ms: None, rate_limited: false },
        Response::Network { message } => Verdict::Retry {
            error: SyncError::retryable(format!("{what}: network error: {}", shorten(message, 160))),
            min_delay_ms: None,
            rate_limited: false,
        },
        Response::Http { status, body, .. } => {
            let status = *status;
            if (200..300).contains(&status) {
                return Verdict::Success(body.as_str());
            }
            let detail = error_detail(body);
            let msg = |kind: &str| format!("{what}: HTTP {status} {kind}{detail}");
            match status {
                408 | 429 | 500..=599 => Verdict::Retry {
                    error: SyncError::retryable(msg(if status == 429 { "rate limited" } else { "transient error" })),
                    min_delay_ms: retry_after_ms(response, now_ms),
                    rate_limited: status == 429,
                },
                401 | 403 => Verdict::Fail(SyncError::fatal(msg("credentials refused"))),
                404 => Verdict::Fail(SyncError::fatal(msg("not found"))),
                _ => Verdict::Fail(SyncError::fatal(msg("refused"))),
            }
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, in ms from now.
pub fn retry_after_ms(response: &Response, now_ms: u64) -> Option<u64> {
    let value = response.header(crate::http::RETRY_AFTER)?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000).min(3_600_000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(at_ms.saturating_sub(now_ms).min(3_600_000))
}

/// Delay before attempt `attempt + 1` (after `attempt` failures): "equal jitter" — half fixed, half random —
/// so concurrent callers spread out but none retries immediately.
pub fn backoff_ms(attempt: u32, rng: &mut fastrand::Rng, min_delay_ms: Option<u64>) -> u64 {
    let step = BASE_DELAY_MS.saturating_mul(1u64 << attempt.saturating_sub(1).min(16)).min(MAX_DELAY_MS);
    let jittered = step / 2 + rng.u64(0..=step / 2);
    match min_delay_ms {
        // Honour the server; a little jitter on top keeps a burst of 429s from retrying in lockstep.
        Some(min) => min.max(jittered.min(min + 250)) + rng.u64(0..=100),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(status: u16, name: &str, value: &str) -> Response {
        Response::Http { status, headers: vec![(name.into(), value.into())], body: String::new() }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&Response::json(200, "[]"), "list", 0), Verdict::Success("[]"));
        assert!(matches!(classify(&Response::json(429, "{}"), "list", 0), Verdict::Retry { rate_limited: true, .. }));
        assert!(matches!(classify(&Response::json(503, "{}"), "list", 0), Verdict::Retry { rate_limited: false, .. }));
        assert!(matches!(classify(&Response::Timeout, "list", 0), Verdict::Retry { .. }));
        let Verdict::Fail(e) = classify(&Response::json(401, r#"{"error":"Authenticate: token validation error"}"#), "list machines", 0) else {
            panic!()
        };
        assert_eq!(e.message, "list machines: HTTP 401 credentials refused: Authenticate: token validation error");
        assert!(matches!(classify(&Response::json(422, "{}"), "x", 0), Verdict::Fail(_)));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(retry_after_ms(&with_header(429, "Retry-After", "3"), 0), Some(3000));
        // Thu, 01 Jan 2026 00:00:10 GMT is 10 s after 1767225600000 ms
        assert_eq!(retry_after_ms(&with_header(429, "retry-after", "Thu, 01 Jan 2026 00:00:10 GMT"), 1_767_225_600_000), Some(10_000));
        assert_eq!(retry_after_ms(&with_header(429, "retry-after", "soon"), 0), None);
        assert_eq!(retry_after_ms(&Response::json(429, ""), 0), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 1..8 {
            let step = (BASE_DELAY_MS << (attempt - 1)).min(MAX_DELAY_MS);
            for _ in 0..50 {
                let d = backoff_ms(attempt, &mut rng, None);
                assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d}");
            }
        }
        for _ in 0..50 {
            let d = backoff_ms(1, &mut rng, Some(2000));
            assert!((2000..=2350).contains(&d), "{d}");
        }
        let spread: std::collections::BTreeSet<u64> = (0..20).map(|_| backoff_ms(3, &mut rng, None)).collect();
        assert!(spread.len() > 10, "jitter spreads retries: {spread:?}");
    }
}
