//! The backup directory (`<state-dir>/backups` or `--backup-dir`): each
//! backup's data is a directory `backup-<data id>` of zlib-compressed 4 MiB
//! chunks (`<index>.zz`) and a `manifest.json` that lists, per chunk index
//! holding data, its SHA-256 and the data directory that stores it.
//!
//! Sparse-aware: only the source's data extents are read (SEEK_DATA), and a
//! chunk of zeros is not stored at all (a restore leaves a hole). An
//! incremental backup stores only the chunks whose hash differs from its
//! parent's manifest and refers to the parent's directory for the rest, so a
//! parent is kept as long as a child needs it (Cinder refuses to delete a
//! backup with dependents).
//!
//! A backup is written as `backup-<id>.partial` and renamed when complete; a
//! restore writes `<volume file>.partial` and renames it over the volume. A
//! crash leaves only `.partial` names, which start-up removes. No HTTP, no
//! SQL here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes per chunk.
pub const CHUNK: u64 = 4 << 20;

/// Where a chunk's bytes are, and what they hash to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkRef {
    pub sha256: String,
    /// The data directory (`backup-<data>`) that holds `<index>.zz`.
    pub data: String,
}

/// What a backup holds: the source's length and its non-zero chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Manifest {
    pub size_bytes: u64,
    pub chunk_size: u64,
    pub chunks: BTreeMap<u64, ChunkRef>,
}

/// What a directory entry of the backup directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredData {
    Complete(String),
    /// An unfinished backup (or anything else): removed at start-up.
    Stray(PathBuf),
}

/// The backup directory.
#[derive(Debug, Clone)]
pub struct BackupFiles {
    pub dir: PathBuf,
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

impl BackupFiles {
    pub fn new(dir: PathBuf) -> BackupFiles {
        BackupFiles { dir }
    }

    /// Makes the directory (0700: backups hold tenants' data).
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
    }

    /// The directory of a backup's data.
    pub fn data_dir(&self, data_id: &str) -> PathBuf {
        self.dir.join(format!("backup-{data_id}"))
    }

    /// Whether a backup's data is complete on disk.
    pub fn exists(&self, data_id: &str) -> bool {
        self.data_dir(data_id).join("manifest.json").is_file()
    }

    /// A backup's manifest.
    pub fn manifest(&self, data_id: &str) -> std::io::Result<Manifest> {
        let text = std::fs::read(self.data_dir(data_id).join("manifest.json"))?;
        serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))
    }

    /// Backs `src` up as `data_id`. With the parent's manifest, a chunk that
    /// hashes the same is referred to, not stored again. Returns the
    /// manifest and how many chunks were stored.
    pub fn write(
        &self,
        src: &Path,
        data_id: &str,
        parent: Option<&Manifest>,
    ) -> std::io::Result<(Manifest, u64)> {
        let dest = self.data_dir(data_id);
        let tmp = partial(&dest);
        let result = (|| {
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir(&tmp)?;
            let input = File::open(src)?;
            let len = input.metadata()?.len();
            let mut manifest = Manifest {
                size_bytes: len,
                chunk_size: CHUNK,
                chunks: BTreeMap::new(),
            };
            let mut stored = 0u64;
            let mut buf = vec![0u8; CHUNK as usize];
            for index in chunks_with_data(&input, len)? {
                let start = index * CHUNK;
                let want = usize::try_from((len - start).min(CHUNK)).unwrap_or(buf.len());
                input.read_exact_at(&mut buf[..want], start)?;
                let data = &buf[..want];
                if data.iter().all(|b| *b == 0) {
                    continue;
                }
                let sha = hex(&Sha256::digest(data));
                if let Some(p) = parent.and_then(|m| m.chunks.get(&index))
                    && p.sha256 == sha
                {
                    manifest.chunks.insert(index, p.clone());
                    continue;
                }
                let mut out = flate2::write::ZlibEncoder::new(
                    File::create(tmp.join(format!("{index}.zz")))?,
                    flate2::Compression::fast(),
                );
                out.write_all(data)?;
                out.finish()?.sync_all()?;
                manifest.chunks.insert(
                    index,
                    ChunkRef {
                        sha256: sha,
                        data: data_id.to_string(),
                    },
                );
                stored += 1;
            }
            let text = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
            let mut file = File::create(tmp.join("manifest.json"))?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &dest)?;
            Ok((manifest, stored))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Writes a backup's bytes to `dest` (replacing it whole), `size_bytes`
    /// long (at least the backup's length): each chunk is checked against
    /// its hash; zero chunks stay holes.
    pub fn restore(
        &self,
        manifest: &Manifest,
        dest: &Path,
        size_bytes: u64,
    ) -> std::io::Result<()> {
        let tmp = partial(dest);
        let result = (|| {
            let output = File::create(&tmp)?;
            output.set_len(size_bytes.max(manifest.size_bytes))?;
            let chunk = usize::try_from(manifest.chunk_size)
                .ok()
                .filter(|c| *c > 0 && *c <= 64 << 20)
                .ok_or_else(|| invalid("bad chunk size in the backup's manifest"))?;
            let mut buf = Vec::with_capacity(chunk);
            for (index, r) in &manifest.chunks {
                let path = self.data_dir(&r.data).join(format!("{index}.zz"));
                buf.clear();
                flate2::read::ZlibDecoder::new(File::open(&path)?)
                    .take(chunk as u64 + 1)
                    .read_to_end(&mut buf)?;
                if buf.len() > chunk || hex(&Sha256::digest(&buf)) != r.sha256 {
                    return Err(invalid(format!(
                        "backup chunk {} does not match its hash",
                        path.display()
                    )));
                }
                output.write_all_at(&buf, index * manifest.chunk_size)?;
            }
            output.sync_all()?;
            std::fs::rename(&tmp, dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes a backup's data directory; one already gone is fine.
    pub fn remove(&self, data_id: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.data_dir(data_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every entry of the backup directory, classified.
    pub fn entries(&self) -> std::io::Result<Vec<StoredData>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = match name.strip_prefix("backup-") {
                Some(id) if !name.ends_with(".partial") && self.exists(id) => {
                    StoredData::Complete(id.to_string())
                }
                _ => StoredData::Stray(entry.path()),
            };
            out.push(kind);
        }
        Ok(out)
    }

    /// Removes a stray entry (file or directory).
    pub fn remove_stray(path: &Path) -> std::io::Result<()> {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The indexes of the chunks that hold data extents (every chunk when the
/// filesystem cannot tell data from holes).
fn chunks_with_data(input: &File, len: u64) -> std::io::Result<Vec<u64>> {
    let count = len.div_ceil(CHUNK);
    let seek = |offset: u64, whence: libc::c_int| -> std::io::Result<Option<u64>> {
        let Ok(at) = libc::off_t::try_from(offset) else {
            return Ok(None);
        };
        // SAFETY: lseek on a descriptor this function borrows; no memory is passed.
        let r = unsafe { libc::lseek(input.as_raw_fd(), at, whence) };
        if r >= 0 {
            return Ok(u64::try_from(r).ok());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    };
    match seek(0, libc::SEEK_DATA) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok((0..count).collect()),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let mut out: Vec<u64> = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let Some(start) = seek(offset, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if end <= start {
            break;
        }
        let first = start / CHUNK;
        let last = (end - 1) / CHUNK;
        for index in first..=last {
            if out.last().is_none_or(|l| *l < index) {
                out.push(index);
            }
        }
        offset = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("yunhe-bk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn full_and_incremental_backups_restore_the_same_bytes_and_holes() {
        let dir = temp("round");
        let files = BackupFiles::new(dir.join("backups"));
        files.prepare().expect("prepare");
        let src = dir.join("volume");
        let f = File::create(&src).expect("create");
        f.set_len(64 << 20).expect("len");
        f.write_all_at(b"first", 1 << 20).expect("write");
        f.write_all_at(b"second", 40 << 20).expect("write");
        let (full, stored) = files.write(&src, "full", None).expect("full");
        assert_eq!(stored, 2, "two chunks hold data: {full:?}");
        // Change one chunk, add another: the incremental stores those two.
        f.write_all_at(b"changed", 40 << 20).expect("write");
        f.write_all_at(b"third", 60 << 20).expect("write");
        let (incr, stored) = files.write(&src, "incr", Some(&full)).expect("incr");
        assert_eq!(stored, 2);
        assert_eq!(incr.chunks.get(&0).map(|c| c.data.as_str()), Some("full"));
        let out = dir.join("restored");
        files.restore(&incr, &out, 64 << 20).expect("restore");
        let back = File::open(&out).expect("open");
        let mut word = [0u8; 7];
        back.read_exact_at(&mut word, 40 << 20).expect("read");
        assert_eq!(&word, b"changed");
        back.read_exact_at(&mut word[..5], 60 << 20).expect("read");
        assert_eq!(&word[..5], b"third");
        back.read_exact_at(&mut word[..5], 1 << 20).expect("read");
        assert_eq!(&word[..5], b"first");
        assert!(back.metadata().expect("meta").blocks() * 512 < 16 << 20);
        // A corrupted chunk fails the restore and leaves nothing behind.
        std::fs::write(files.data_dir("incr").join("15.zz"), b"junk").expect("junk");
        assert!(files.restore(&incr, &dir.join("bad"), 64 << 20).is_err());
        assert!(!dir.join("bad").exists() && !dir.join("bad.partial").exists());
        let entries = files.entries().expect("entries");
        assert_eq!(entries.len(), 2);
        files.remove("incr").expect("remove");
        assert!(!files.exists("incr"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
