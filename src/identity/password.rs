//! Password hashing with Argon2id (memory-hard), in PHC string format, on a
//! small pool of dedicated threads.
//!
//! Every Argon2 computation of the server (checking a password or an
//! application credential secret, hashing a new one) runs here, never on the
//! async runtime and never inside a database transaction. The pool has a
//! fixed number of worker threads, each owning one reusable Argon2 memory
//! block (19 MiB with the default parameters), so the memory hashing can use
//! is `workers x 19 MiB` however many clients ask at once; a worker keeps its
//! block while jobs wait and frees it before it sleeps (serve maps
//! allocations this large straight from the kernel, see
//! `server::return_large_frees`, so the memory really goes back). Jobs wait in a
//! bounded queue; when it is full the caller gets [`PasswordError::Busy`]
//! (the HTTP layer answers 429) instead of piling up.
//!
//! Unknown users are checked against a dummy hash with the same parameters,
//! so answering takes as long whether the name exists or not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, TryLockError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use rand::Rng;

/// Errors of the password pool.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every worker is busy and the queue is full.
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    /// The worker threads are gone (the server is stopping).
    #[error("the password workers stopped")]
    Stopped,
    /// Hashing a new password failed.
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// A worker thread could not be started.
    #[error("cannot start a password worker: {0}")]
    Spawn(std::io::Error),
}

/// Longest password or secret accepted (Keystone's `max_password_length`).
pub const MAX_SECRET_LEN: usize = 4096;

/// Largest Argon2 memory (in 1 KiB blocks) a stored hash may ask for: 64 MiB.
const MAX_BLOCKS: usize = 64 * 1024;

enum Work {
    Verify { secret: String, stored: String },
    Hash { secret: String },
}

enum Done {
    Verified(bool),
    Hashed(Result<String, PasswordError>),
}

struct Job {
    work: Work,
    reply: tokio::sync::oneshot::Sender<Done>,
}

/// The bounded Argon2 pool.
pub struct PasswordPool {
    jobs: SyncSender<Job>,
    /// A PHC string with the default parameters that no secret matches.
    dummy: String,
    /// Jobs queued or running.
    pending: Arc<AtomicUsize>,
    /// Workers plus queue depth: more pending jobs than this cannot be.
    capacity: usize,
}

impl PasswordPool {
    /// Starts `workers` threads (at least 1) behind a queue of `queue_depth` jobs.
    pub fn start(workers: usize, queue_depth: usize) -> Result<PasswordPool, PasswordError> {
        let workers = workers.max(1);
        let queue_depth = queue_depth.max(1);
        let (jobs, receiver) = sync_channel::<Job>(queue_depth);
        let receiver = Arc::new(Mutex::new(receiver));
        let pending = Arc::new(AtomicUsize::new(0));
        for index in 0..workers {
            let receiver = receiver.clone();
            let pending = pending.clone();
            std::thread::Builder::new()
                .name(format!("yunhe-argon2-{index}"))
                .spawn(move || worker(&receiver, &pending))
                .map_err(PasswordError::Spawn)?;
        }
        Ok(PasswordPool {
            jobs,
            dummy: dummy_hash(),
            pending,
            capacity: workers + queue_depth,
        })
    }

    /// Fails with `Busy` when the pool is surely full, so a flood is
    /// refused before it costs a database read.
    pub fn check_room(&self) -> Result<(), PasswordError> {
        if self.pending.load(Ordering::Relaxed) >= self.capacity {
            return Err(PasswordError::Busy);
        }
        Ok(())
    }

    async fn run(&self, work: Work) -> Result<Done, PasswordError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.jobs.try_send(Job { work, reply }) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => PasswordError::Busy,
                TrySendError::Disconnected(_) => PasswordError::Stopped,
            });
        }
        answer.await.map_err(|_| PasswordError::Stopped)
    }

    /// True when `secret` matches `stored`. With `stored = None` (unknown
    /// user, user without a password) the dummy hash is computed instead
    /// and the answer is false, in the same time.
    pub async fn verify(&self, secret: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy).to_string();
        let mut secret = secret.to_string();
        if secret.len() > MAX_SECRET_LEN {
            // Still do the work of a check, on a secret that cannot match.
            secret.truncate(0);
            let done = self
                .run(Work::Verify {
                    secret,
                    stored: self.dummy.clone(),
                })
                .await?;
            let _ = done;
            return Ok(false);
        }
        match self.run(Work::Verify { secret, stored }).await? {
            Done::Verified(ok) => Ok(ok && known),
            Done::Hashed(_) => Ok(false),
        }
    }

    /// Hashes a new secret with a fresh salt and the default parameters.
    pub async fn hash(&self, secret: &str) -> Result<String, PasswordError> {
        if secret.len() > MAX_SECRET_LEN {
            return Err(PasswordError::Hashing(format!(
                "a password may have at most {MAX_SECRET_LEN} bytes"
            )));
        }
        match self
            .run(Work::Hash {
                secret: secret.to_string(),
            })
            .await?
        {
            Done::Hashed(result) => result,
            Done::Verified(_) => Err(PasswordError::Hashing("unexpected answer".into())),
        }
    }
}

/// Hashes a secret on the calling thread, for start-up code (bootstrap)
/// that runs before the server takes requests.
pub fn hash(secret: &str) -> Result<String, PasswordError> {
    hash_with(&mut Vec::new(), secret)
}

/// One worker: takes jobs until the pool is dropped, reusing its Argon2 memory.
fn worker(receiver: &Mutex<Receiver<Job>>, pending: &AtomicUsize) {
    // Hashing yields the CPU to the rest of the control plane: a login
    // flood must not slow down unrelated requests.
    // SAFETY: gettid and setpriority only read their integer arguments and
    // change this thread's scheduling priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t, 10);
    }
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            // Another worker holding the queue is waiting in `recv` for a
            // job: this one may sleep behind it, so it gives its block back
            // first (a lock held for a mere `try_recv` costs a remap at worst).
            let guard = match receiver.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::WouldBlock) => {
                    memory = Vec::new();
                    let Ok(guard) = receiver.lock() else { return };
                    guard
                }
                Err(TryLockError::Poisoned(_)) => return,
            };
            match guard.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {
                    // No job waits: give the block back to the system before
                    // sleeping, so serve's memory after a burst of logins
                    // falls back to its base. Mapping it afresh costs a few
                    // milliseconds against the hash's tens.
                    memory = Vec::new();
                    match guard.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
            }
        };
        let done = match job.work {
            Work::Verify { secret, stored } => {
                Done::Verified(verify_with(&mut memory, &secret, &stored))
            }
            Work::Hash { secret } => Done::Hashed(hash_with(&mut memory, &secret)),
        };
        // Keep at most the default size between jobs.
        let default_blocks = Params::DEFAULT.block_count();
        if memory.len() > default_blocks {
            memory.truncate(default_blocks);
            memory.shrink_to_fit();
        }
        pending.fetch_sub(1, Ordering::Relaxed);
        let _ = job.reply.send(done);
    }
}

/// The memory for `params`, grown in place when needed.
fn blocks_for<'a>(memory: &'a mut Vec<Block>, params: &Params) -> Option<&'a mut [Block]> {
    let count = params.block_count();
    if count > MAX_BLOCKS {
        return None;
    }
    if memory.len() < count {
        memory.resize(count, Block::default());
    }
    memory.get_mut(..count)
}

fn verify_with(memory: &mut Vec<Block>, secret: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let Some(blocks) = blocks_for(memory, &params) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(secret.as_bytes(), salt.as_ref(), out, blocks)
        .is_err()
    {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(out).is_ok_and(|computed| computed == *expected)
}

fn hash_with(memory: &mut Vec<Block>, secret: &str) -> Result<String, PasswordError> {
    let failed = |e: &dyn std::fmt::Display| PasswordError::Hashing(e.to_string());
    let params = Params::DEFAULT;
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let blocks = blocks_for(memory, &params)
        .ok_or_else(|| PasswordError::Hashing("parameters too large".into()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(secret.as_bytes(), &salt_bytes, &mut out, blocks)
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt_bytes).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// A PHC string with the default parameters, a random salt and a random
/// output: checking anything against it costs one real Argon2 run and
/// never matches.
fn dummy_hash() -> String {
    let mut salt = [0u8; 16];
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut output);
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let params = Params::DEFAULT;
    format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        b64.encode(salt),
        b64.encode(output)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify_on_reused_memory() {
        let mut memory = Vec::new();
        let stored = hash_with(&mut memory, "s3cret").expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_with(&mut memory, "s3cret", &stored));
        assert!(!verify_with(&mut memory, "S3cret", &stored));
        assert!(!verify_with(&mut memory, "s3cret", "not a hash"));
        // Hashes made by the argon2 crate's own API verify too.
        use argon2::PasswordHasher;
        let theirs = Argon2::default()
            .hash_password(b"other")
            .expect("hash")
            .to_string();
        assert!(verify_with(&mut memory, "other", &theirs));
    }

    #[test]
    fn the_dummy_parses_with_default_parameters_and_matches_nothing() {
        let dummy = dummy_hash();
        let parsed = PasswordHash::new(&dummy).expect("parse");
        assert_eq!(
            Params::try_from(&parsed).expect("params").m_cost(),
            Params::DEFAULT.m_cost()
        );
        let mut memory = Vec::new();
        assert!(!verify_with(&mut memory, "", &dummy));
    }

    #[tokio::test]
    async fn the_pool_answers_and_refuses_beyond_its_queue() {
        let pool = PasswordPool::start(1, 1).expect("pool");
        let stored = pool.hash("pw").await.expect("hash");
        assert!(pool.verify("pw", Some(&stored)).await.expect("verify"));
        assert!(!pool.verify("pw", None).await.expect("verify"));
        // One running + one queued; a burst of 8 must see Busy at least once.
        let results =
            futures_util::future::join_all((0..8).map(|_| pool.verify("x", Some(&stored)))).await;
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(PasswordError::Busy)))
        );
    }
}
