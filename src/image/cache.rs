//! The image cache: complete copies of active images in a directory of their
//! own, read in place of the store's file by downloads and by compute's boots.
//!
//! Glance keeps such a cache on each API node in front of remote stores.
//! yunhe's store is a local directory, so the cache pays off when the state
//! directory sits on slower storage (NFS, a spinning disk) and
//! `--image-cache-dir` on a local SSD or tmpfs. On the same filesystem (the
//! default, `<state-dir>/image-cache`) a cached image is a hard link to the
//! store's file: no second copy of the data.
//!
//! Behaviour (Glance's cache management API, `/v2/cache`): an admin queues an
//! active image; a worker copies it (`incomplete/<id>` first, its MD5 checked
//! against the image's checksum, then renamed to `<id>`) and records it in
//! the `image_cache` table; every download served from the copy counts a
//! hit. After each copy, and on `POST /v2/cache/prune`, the least recently
//! used copies go until the cache fits `--image-cache-max-size`.
//!
//! Crash safety: the queue is in the state file, so a restart resumes it;
//! start-up removes incomplete copies, rows whose file is gone and files no
//! row names. This module knows no HTTP (`cache_api` serves it).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::{Digest, Md5};
use tokio::sync::mpsc;

use crate::db::image as image_store;
use crate::db::image_cache::{self as store, CacheEntry, CacheState};
use crate::db::{Db, DbError};

/// Glance's default `image_cache_max_size`: 10 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024 * 1024;

/// Errors of the image cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The state file failed.
    #[error("image cache: {0}")]
    Db(#[from] DbError),
    /// A cache file could not be written, read or removed.
    #[error("image cache: {0}")]
    Io(#[from] std::io::Error),
    /// The copy's MD5 is not the image's checksum.
    #[error("image cache: the copy of image {id} has MD5 {got}, the image's checksum is {want}")]
    Checksum {
        id: String,
        got: String,
        want: String,
    },
}

type CacheResult<T> = Result<T, CacheError>;

/// Which part `clear` empties (the `x-image-cache-clear-target` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearTarget {
    Cache,
    Queue,
    Both,
}

/// What `clear` removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleared {
    pub cache_deleted: usize,
    pub queue_deleted: usize,
}

/// The image cache of one `yunhe serve`.
pub struct ImageCache {
    db: Db,
    /// The store (`<state-dir>/images`), where copies come from.
    store_dir: PathBuf,
    /// The cache directory; copies in progress are under `incomplete/`.
    dir: PathBuf,
    max_size: u64,
    jobs: mpsc::UnboundedSender<String>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ImageCache {
    /// Opens the cache in `dir`, repairs what a crash left, and starts the
    /// worker that copies queued images (on the current tokio runtime).
    pub fn start(
        db: Db,
        store_dir: PathBuf,
        dir: PathBuf,
        max_size: u64,
    ) -> CacheResult<Arc<ImageCache>> {
        std::fs::create_dir_all(dir.join("incomplete"))?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let cache = Arc::new(ImageCache {
            db,
            store_dir,
            dir,
            max_size,
            jobs,
        });
        let queued = cache.recover()?;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(worker(cache.clone(), receiver));
            }
            Err(_) => tracing::warn!("no async runtime: queued images are not cached"),
        }
        for id in queued {
            let _ = cache.jobs.send(id);
        }
        Ok(cache)
    }

    /// Start-up repair; returns the queue to resume, oldest first.
    fn recover(&self) -> CacheResult<Vec<String>> {
        // No copy runs yet: every incomplete copy is stale.
        let entries = self.reconcile(false)?;
        Ok(entries
            .into_iter()
            .filter(|e| e.state == CacheState::Queued)
            .map(|e| e.image_id)
            .collect())
    }

    /// Makes the directory and the table agree (blocking): rows whose file
    /// is gone are dropped, files no row names are removed, and incomplete
    /// copies too (but those of queued images when `spare_queued_copies`,
    /// which the worker may be writing). Returns the rows as they were.
    fn reconcile(&self, spare_queued_copies: bool) -> CacheResult<Vec<CacheEntry>> {
        let entries = self.db.read_blocking(|conn| store::list(conn, None))?;
        let copying: HashSet<&str> = entries
            .iter()
            .filter(|e| spare_queued_copies && e.state == CacheState::Queued)
            .map(|e| e.image_id.as_str())
            .collect();
        for entry in std::fs::read_dir(self.dir.join("incomplete"))? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_none_or(|n| !copying.contains(n.as_str())) {
                remove_file_quietly(&path);
            }
        }
        let mut named = HashSet::new();
        let mut gone = Vec::new();
        for entry in entries.iter().filter(|e| e.state == CacheState::Cached) {
            match &entry.path {
                Some(p) if Path::new(p).is_file() => {
                    named.insert(PathBuf::from(p));
                }
                _ => gone.push(entry.image_id.clone()),
            }
        }
        if !gone.is_empty() {
            self.db.write_blocking(move |tx| {
                for id in &gone {
                    store::remove(tx, id)?;
                }
                Ok(())
            })?;
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.is_file() && !named.contains(&path) {
                remove_file_quietly(&path);
            }
        }
        Ok(entries)
    }

    /// Queues an active image for caching (already queued or cached: nothing
    /// changes).
    pub async fn queue(&self, image_id: &str) -> CacheResult<()> {
        let id = image_id.to_string();
        let new = self
            .db
            .write(move |tx| store::queue(tx, &id, now()))
            .await?;
        if new {
            let _ = self.jobs.send(image_id.to_string());
        }
        Ok(())
    }

    /// The cached images and the queued image ids.
    pub async fn state(&self) -> CacheResult<(Vec<CacheEntry>, Vec<String>)> {
        let entries = self.db.read(|conn| store::list(conn, None)).await?;
        let (cached, queued): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| e.state == CacheState::Cached);
        let mut cached = cached;
        cached.sort_by(|a, b| a.image_id.cmp(&b.image_id));
        Ok((cached, queued.into_iter().map(|e| e.image_id).collect()))
    }

    /// Whether the image is queued or cached.
    pub async fn contains(&self, image_id: &str) -> CacheResult<bool> {
        let id = image_id.to_string();
        Ok(self
            .db
            .read(move |conn| store::get(conn, &id))
            .await?
            .is_some())
    }

    /// Takes an image out of the cache and the queue; returns whether it was
    /// in either.
    pub async fn delete(&self, image_id: &str) -> CacheResult<bool> {
        let id = image_id.to_string();
        let removed = self.db.write(move |tx| store::remove(tx, &id)).await?;
        if let Some(path) = removed.as_ref().and_then(|e| e.path.as_ref()) {
            remove_file_quietly(Path::new(path));
        }
        Ok(removed.is_some())
    }

    /// Empties the cache, the queue, or both.
    pub async fn clear(&self, target: ClearTarget) -> CacheResult<Cleared> {
        let (cached, queued) = self
            .db
            .write(move |tx| {
                let cached = match target {
                    ClearTarget::Cache | ClearTarget::Both => {
                        store::remove_all(tx, CacheState::Cached)?
                    }
                    ClearTarget::Queue => Vec::new(),
                };
                let queued = match target {
                    ClearTarget::Queue | ClearTarget::Both => {
                        store::remove_all(tx, CacheState::Queued)?
                    }
                    ClearTarget::Cache => Vec::new(),
                };
                Ok((cached, queued))
            })
            .await?;
        for entry in &cached {
            if let Some(path) = &entry.path {
                remove_file_quietly(Path::new(path));
            }
        }
        Ok(Cleared {
            cache_deleted: cached.len(),
            queue_deleted: queued.len(),
        })
    }

    /// The cached copy of an image for one read, counting the hit; `None`
    /// when it is not cached (read the store's file then).
    pub async fn open_for_read(&self, image_id: &str) -> CacheResult<Option<PathBuf>> {
        let id = image_id.to_string();
        let path = self
            .db
            .write(move |tx| {
                let path = store::cached_path(tx, &id)?;
                if path.is_some() {
                    store::record_hit(tx, &id, now())?;
                }
                Ok(path)
            })
            .await?;
        Ok(path.map(PathBuf::from).filter(|p| p.is_file()))
    }

    /// Removes least recently used copies until the cache fits its maximum
    /// size; returns how many files and bytes went.
    pub async fn prune(&self) -> CacheResult<(usize, u64)> {
        let max = self.max_size;
        let removed = self
            .db
            .write(move |tx| {
                let entries = store::least_recently_used(tx)?;
                let mut total: u64 = entries.iter().map(|e| e.size.max(0) as u64).sum();
                let mut removed = Vec::new();
                for entry in entries {
                    if total <= max {
                        break;
                    }
                    total = total.saturating_sub(entry.size.max(0) as u64);
                    store::remove(tx, &entry.image_id)?;
                    removed.push(entry);
                }
                Ok(removed)
            })
            .await?;
        let mut bytes = 0;
        for entry in &removed {
            bytes += entry.size.max(0) as u64;
            if let Some(path) = &entry.path {
                remove_file_quietly(Path::new(path));
            }
        }
        if !removed.is_empty() {
            tracing::info!(files = removed.len(), bytes, "image cache pruned");
        }
        Ok((removed.len(), bytes))
    }

    /// Removes copies whose row is gone or whose file vanished, and stalled
    /// incomplete copies (`POST /v2/cache/clean`).
    pub async fn clean(self: &Arc<Self>) -> CacheResult<()> {
        let cache = self.clone();
        tokio::task::spawn_blocking(move || cache.reconcile(true).map(drop))
            .await
            .map_err(|e| CacheError::Io(std::io::Error::other(e)))?
    }

    /// Copies one queued image into the cache (blocking: run it off the
    /// async threads). An image that is no longer queued, or not active, is
    /// skipped; a copy whose row vanished meanwhile is removed.
    fn fetch_blocking(&self, image_id: &str) -> CacheResult<()> {
        let id = image_id.to_string();
        let (entry, image) = self.db.read_blocking(move |conn| {
            Ok((store::get(conn, &id)?, image_store::get_image(conn, &id)?))
        })?;
        if entry.is_none_or(|e| e.state != CacheState::Queued) {
            return Ok(());
        }
        let Some(image) = image.filter(|i| i.status == "active") else {
            tracing::warn!(image = image_id, "queued image is not active: not cached");
            return Ok(());
        };
        let source = self.store_dir.join(&image.id);
        let partial = self.dir.join("incomplete").join(&image.id);
        let dest = self.dir.join(&image.id);
        remove_file_quietly(&partial);
        if std::fs::hard_link(&source, &partial).is_err()
            && let Err(e) = copy_checked(&source, &partial, image.checksum.as_deref(), &image.id)
        {
            remove_file_quietly(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &dest)?;
        let size = std::fs::metadata(&dest)?.len() as i64;
        let (id, path) = (image.id.clone(), dest.to_string_lossy().into_owned());
        let recorded = self
            .db
            .write_blocking(move |tx| store::mark_cached(tx, &id, &path, size, now()))?;
        if !recorded {
            remove_file_quietly(&dest);
        }
        Ok(())
    }
}

/// The worker: copies queued images one at a time, then prunes.
async fn worker(cache: Arc<ImageCache>, mut jobs: mpsc::UnboundedReceiver<String>) {
    while let Some(id) = jobs.recv().await {
        let job = cache.clone();
        let job_id = id.clone();
        match tokio::task::spawn_blocking(move || job.fetch_blocking(&job_id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(image = %id, error = %e, "image not cached"),
            Err(e) => tracing::error!(image = %id, error = %e, "image cache worker failed"),
        }
        if let Err(e) = cache.prune().await {
            tracing::error!(error = %e, "image cache prune failed");
        }
    }
}

/// Copies `from` to `to`, checking the copy's MD5 against `checksum`.
fn copy_checked(from: &Path, to: &Path, checksum: Option<&str>, id: &str) -> CacheResult<()> {
    let mut input = std::fs::File::open(from)?;
    let mut output = std::fs::File::create(to)?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        output.write_all(&buffer[..n])?;
    }
    output.sync_all()?;
    let got = hex::encode(hasher.finalize());
    match checksum {
        Some(want) if want != got => Err(CacheError::Checksum {
            id: id.to_string(),
            got,
            want: want.to_string(),
        }),
        _ => Ok(()),
    }
}

fn remove_file_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove an image cache file");
    }
}
