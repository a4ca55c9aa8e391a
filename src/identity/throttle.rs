//! Limits on authentication: token buckets per source address and per user
//! name, Keystone's lockout settings, and the password pool's size.
//!
//! Every password or secret check takes one token from the bucket of the
//! client's address and one from the bucket of the user it names; a
//! successful check gives both back, so in effect the buckets count
//! failures, and a client that keeps failing gets 429 before any hash is
//! computed. Buckets live in memory only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// Authentication limits, from `yunhe serve`'s flags.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Failed checks a user name may burst; 0 turns the per-user limit off.
    pub user_burst: u32,
    /// Failed checks per second a user name earns back.
    pub user_per_second: f64,
    /// Failed checks a source address may burst; 0 turns the limit off.
    pub source_burst: u32,
    /// Failed checks per second a source address earns back.
    pub source_per_second: f64,
    /// Keystone's `lockout_failure_attempts`: failed password checks in a
    /// row that lock a user; 0 turns lockout off.
    pub lockout_failure_attempts: u32,
    /// Keystone's `lockout_duration` in seconds; 0 locks until an admin
    /// updates the user.
    pub lockout_duration: u64,
    /// Keystone's `unique_last_password_count`: a self-service password
    /// change may not reuse the current or the previous count-1 passwords;
    /// 0 turns the check off.
    pub unique_last_password_count: u32,
    /// Argon2 worker threads.
    pub hash_workers: usize,
    /// Password checks that may wait for a worker before 429.
    pub hash_queue_depth: usize,
    /// Seconds between purges of expired tokens.
    pub token_purge_interval: u64,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            user_burst: 10,
            user_per_second: 1.0,
            source_burst: 100,
            source_per_second: 10.0,
            lockout_failure_attempts: 6,
            lockout_duration: 1800,
            unique_last_password_count: 0,
            hash_workers: default_hash_workers(),
            hash_queue_depth: 32,
            token_purge_interval: 600,
        }
    }
}

/// One worker per core, at most 4 (each holds 19 MiB while hashing).
pub fn default_hash_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

impl AuthLimits {
    /// True when a user with `failures` failed checks, the last at
    /// `last_failure` (Unix seconds), is locked out at `now`.
    pub fn is_locked(&self, failures: u32, last_failure: Option<i64>, now: i64) -> bool {
        if self.lockout_failure_attempts == 0 || failures < self.lockout_failure_attempts {
            return false;
        }
        if self.lockout_duration == 0 {
            return true;
        }
        let until = last_failure
            .unwrap_or(0)
            .saturating_add(self.lockout_duration as i64);
        until > now
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by a string (an address or a user name).
pub struct Buckets {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before full ones are forgotten.
const PRUNE_AT: usize = 10_000;
/// Buckets kept at most; beyond, every bucket is forgotten (fails open).
const HARD_CAP: usize = 100_000;
/// Longest key kept (user names are at most 255 characters).
const MAX_KEY: usize = 600;

impl Buckets {
    pub fn new(burst: u32, per_second: f64) -> Buckets {
        Buckets {
            burst: f64::from(burst),
            per_second: if per_second > 0.0 { per_second } else { 0.0 },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.burst > 0.0
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
    }

    /// Takes one token for `key`, or says after how many seconds one will be there.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        let key: String = key.chars().take(MAX_KEY).collect();
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(&key) {
            let (burst, per_second) = (self.burst, self.per_second);
            buckets.retain(|_, b| {
                let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
                b.tokens + elapsed * per_second < burst
            });
            if buckets.len() >= HARD_CAP {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        if self.per_second <= 0.0 {
            return Err(3600);
        }
        let wait = ((1.0 - bucket.tokens) / self.per_second).ceil();
        Err((wait as u64).max(1))
    }

    /// Gives back the token a successful check took.
    pub fn give_back(&self, key: &str) {
        if !self.enabled() {
            return;
        }
        let key: String = key.chars().take(MAX_KEY).collect();
        if let Ok(mut buckets) = self.buckets.lock()
            && let Some(bucket) = buckets.get_mut(&key)
        {
            let now = Instant::now();
            self.refill(bucket, now);
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }
}

/// The per-source and per-user buckets of one server.
pub struct AuthThrottle {
    sources: Buckets,
    users: Buckets,
}

/// The keys one check took tokens under; give them back on success.
#[derive(Debug, Clone)]
pub struct Reservation {
    source: String,
    user: Option<String>,
}

impl AuthThrottle {
    pub fn new(limits: &AuthLimits) -> AuthThrottle {
        AuthThrottle {
            sources: Buckets::new(limits.source_burst, limits.source_per_second),
            users: Buckets::new(limits.user_burst, limits.user_per_second),
        }
    }

    /// Takes a token for the source and (if any) the user; on refusal
    /// returns the seconds to wait.
    pub fn reserve(&self, source: &ClientAddr, user: Option<String>) -> Result<Reservation, u64> {
        let source = source.key();
        self.sources.take(&source)?;
        if let Some(user) = &user
            && let Err(wait) = self.users.take(user)
        {
            self.sources.give_back(&source);
            return Err(wait);
        }
        Ok(Reservation { source, user })
    }

    /// Gives back what a successful check took.
    pub fn release(&self, reservation: &Reservation) {
        self.sources.give_back(&reservation.source);
        if let Some(user) = &reservation.user {
            self.users.give_back(user);
        }
    }
}

/// The address of the client, when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    fn key(&self) -> String {
        match self.0 {
            Some(IpAddr::V6(v6)) => {
                // One bucket per /64: a host usually owns a whole one.
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(ip) => ip.to_string(),
            None => "unknown".into(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_after_its_burst_and_gives_a_wait() {
        let buckets = Buckets::new(3, 1.0);
        for _ in 0..3 {
            assert!(buckets.take("a").is_ok());
        }
        assert_eq!(buckets.take("a"), Err(1));
        assert!(buckets.take("b").is_ok(), "keys are independent");
        buckets.give_back("a");
        assert!(buckets.take("a").is_ok(), "a success gives its token back");
    }

    #[test]
    fn zero_burst_is_off() {
        let buckets = Buckets::new(0, 1.0);
        for _ in 0..100 {
            assert!(buckets.take("a").is_ok());
        }
    }

    #[test]
    fn lockout_follows_keystone() {
        let limits = AuthLimits {
            lockout_failure_attempts: 3,
            lockout_duration: 10,
            ..AuthLimits::default()
        };
        assert!(!limits.is_locked(2, Some(100), 100));
        assert!(limits.is_locked(3, Some(100), 105));
        assert!(!limits.is_locked(3, Some(100), 110), "the duration passed");
        let forever = AuthLimits {
            lockout_duration: 0,
            ..limits.clone()
        };
        assert!(forever.is_locked(3, Some(100), 1_000_000));
        let off = AuthLimits {
            lockout_failure_attempts: 0,
            ..limits
        };
        assert!(!off.is_locked(100, Some(100), 100));
    }
}
