//! Per-user API rate limits, as Nova's "limits" describe rate limiting: a
//! token bucket per caller, refilled at `--api-rate-limit` requests per
//! second up to `--api-rate-burst`; a request that finds its bucket empty is
//! answered 429 with `Retry-After` (seconds) and a body in the format of the
//! service its path names.
//!
//! The caller is its Keystone token (a hash of `X-Auth-Token`) once identity
//! has validated that token (a lookup in its in-memory validation cache, no
//! database read); before that, and without a token, it is the source
//! address (an IPv6 source by its /64). So made-up tokens cannot buy fresh
//! buckets: they all drain their source's. Memory is bounded: at most [`MAX_TRACKED_KEYS`]
//! buckets; beyond, full (idle) buckets are dropped first, then the least
//! recently used. `/healthz` is never limited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::json_response;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

/// Buckets kept at most (about 64 bytes each).
pub const MAX_TRACKED_KEYS: usize = 16_384;

/// The limits of `yunhe serve`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per second each caller may make on average; 0 turns limits off.
    pub per_second: f64,
    /// Requests a caller may make at once after being idle.
    pub burst: f64,
}

impl Default for RateLimitConfig {
    /// Generous enough that tempest and the test suites never meet it.
    fn default() -> Self {
        RateLimitConfig {
            per_second: 200.0,
            burst: 400.0,
        }
    }
}

/// Who a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Caller {
    /// The first 16 bytes of SHA-256 of the Keystone token.
    Token([u8; 16]),
    /// A source address (IPv6 cut to its /64).
    Source(IpAddr),
    /// No source address known (the application served without one).
    Unknown,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// What the limiter asks of the identity service: whether it validated a token (a lookup in
/// its in-memory validation cache), and the bucket key of such a token. A trait, so that
/// `http` needs nothing from `identity` (which builds on `http`); server.rs implements it.
pub trait ValidatedTokens: Send + Sync {
    /// The bucket key of `token` when identity has validated it, else None.
    fn validated_key(&self, token: &str) -> Option<[u8; 16]>;
}

/// The buckets of every caller.
pub struct RateLimiter {
    config: RateLimitConfig,
    max_keys: usize,
    buckets: Mutex<HashMap<Caller, Bucket>>,
    /// Tells which tokens are valid (None: every request counts by source).
    identity: Option<Arc<dyn ValidatedTokens>>,
}

impl RateLimiter {
    /// A limiter with `config`, or None when limits are off.
    pub fn new(
        config: RateLimitConfig,
        max_keys: usize,
        identity: Option<Arc<dyn ValidatedTokens>>,
    ) -> Option<Arc<RateLimiter>> {
        if config.per_second <= 0.0 || !config.per_second.is_finite() {
            return None;
        }
        Some(Arc::new(RateLimiter {
            config: RateLimitConfig {
                per_second: config.per_second,
                burst: config.burst.max(1.0),
            },
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
            identity,
        }))
    }

    /// The limiter of `yunhe serve`'s configuration (None when off).
    pub fn configured(
        config: RateLimitConfig,
        identity: Arc<dyn ValidatedTokens>,
    ) -> Option<Arc<RateLimiter>> {
        RateLimiter::new(config, MAX_TRACKED_KEYS, Some(identity))
    }

    /// Who `req` counts against: its token once identity validated it, else
    /// its source.
    fn caller_of(&self, req: &Request) -> Caller {
        let token = req
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok());
        if let (Some(token), Some(identity)) = (token, &self.identity)
            && let Some(key) = identity.validated_key(token)
        {
            return Caller::Token(key);
        }
        source_of(req)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Caller, Bucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one request from `caller`'s bucket; Err(wait) when it is empty,
    /// with the time until the next request is allowed.
    fn admit(&self, caller: Caller, now: Instant) -> Result<(), Duration> {
        let RateLimitConfig { per_second, burst } = self.config;
        let mut buckets = self.lock();
        if !buckets.contains_key(&caller) && buckets.len() >= self.max_keys {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(caller).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Makes room: drops the buckets that have refilled (the same as no
    /// bucket), and if that is not enough the least recently used eighth.
    fn evict(&self, buckets: &mut HashMap<Caller, Bucket>, now: Instant) {
        let RateLimitConfig { per_second, burst } = self.config;
        buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_second < burst
        });
        if buckets.len() < self.max_keys {
            return;
        }
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.last).collect();
        let cut = (ages.len() / 8).max(1) - 1;
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let cutoff = *oldest_kept;
        buckets.retain(|_, b| b.last > cutoff);
    }
}

/// The caller of a request that carries no (known) token.
fn source_of(req: &Request) -> Caller {
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => match addr.ip() {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                Caller::Source(IpAddr::from(octets))
            }
            IpAddr::V6(v6) => Caller::Source(IpAddr::V4(
                v6.to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            )),
            v4 => Caller::Source(v4),
        },
        None => Caller::Unknown,
    }
}

/// Middleware: answers 429 once the caller's bucket is empty.
pub async fn limit(State(limiter): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let caller = limiter.caller_of(&req);
    if let Err(wait) = limiter.admit(caller, Instant::now()) {
        return too_many_requests(&req, wait);
    }
    next.run(req).await
}

/// The 429 in the format of the service the path names.
fn too_many_requests(req: &Request, wait: Duration) -> Response {
    let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
    let message = "This request was rate-limited.";
    let path = req.uri().path();
    let status = StatusCode::TOO_MANY_REQUESTS;
    let mut response = if path.starts_with("/compute") || path.starts_with("/volume") {
        json_response(
            status,
            &json!({"overLimit": {"code": 429, "message": message, "retryAfter": retry_after.to_string()}}),
        )
    } else if path.starts_with("/identity") {
        json_response(
            status,
            &json!({"error": {"code": 429, "title": "Too Many Requests", "message": message}}),
        )
    } else if path.starts_with("/network") {
        json_response(
            status,
            &json!({"NeutronError": {"type": "OverLimit", "message": message, "detail": ""}}),
        )
    } else if path.starts_with("/image") {
        glance_page(req, message)
    } else {
        let mut r = Response::new(Body::from(format!("429 Too Many Requests\n\n{message}\n")));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        r
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// webob's 429, as Glance renders errors: JSON for clients that accept it,
/// else the HTML page.
fn glance_page(req: &Request, message: &str) -> Response {
    let status = StatusCode::TOO_MANY_REQUESTS;
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return json_response(
            status,
            &json!({"message": message, "code": "429 Too Many Requests", "title": "Too Many Requests"}),
        );
    }
    let page = format!(
        "<html>\n <head>\n  <title>429 Too Many Requests</title>\n </head>\n <body>\n  <h1>429 Too Many Requests</h1>\n  {message}<br /><br />\n\n\n\n </body>\n</html>"
    );
    let mut response = Response::new(Body::from(page));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: f64, max_keys: usize) -> Arc<RateLimiter> {
        RateLimiter::new(RateLimitConfig { per_second, burst }, max_keys, None).expect("limits on")
    }

    #[test]
    fn zero_turns_limits_off() {
        assert!(
            RateLimiter::new(
                RateLimitConfig {
                    per_second: 0.0,
                    burst: 10.0
                },
                10,
                None
            )
            .is_none()
        );
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let l = limiter(10.0, 3.0, 100);
        let t0 = Instant::now();
        let who = Caller::Unknown;
        for _ in 0..3 {
            assert!(l.admit(who, t0).is_ok());
        }
        let wait = l.admit(who, t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.admit(who, t0 + Duration::from_millis(100)).is_ok());
        assert!(l.admit(who, t0 + Duration::from_millis(110)).is_err());
        assert!(l.admit(who, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn tracked_keys_stay_bounded() {
        let l = limiter(1.0, 5.0, 64);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = l.admit(Caller::Source(ip), t0 + Duration::from_micros(u64::from(i)));
            assert!(l.lock().len() <= 64);
        }
        // The most recent caller is still tracked (and charged).
        let last = Caller::Source(IpAddr::from(9_999u32.to_be_bytes()));
        assert!(l.lock().contains_key(&last));
    }
}
