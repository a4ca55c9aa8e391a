//! The file backend: each volume is one sparse raw file, `volume-<id>`, and
//! each snapshot one file, `snapshot-<id>`, in the volume directory
//! (`<state-dir>/volumes` or `--volume-dir`). Copies (snapshots, clones,
//! volumes from snapshots or images) are reflinks where the filesystem has
//! them (btrfs, XFS) and sparse copies of the data extents elsewhere.
//!
//! Every file is written as `<name>.partial` and renamed when complete, so a
//! crash leaves either the finished file or a partial one that start-up
//! removes. No HTTP and no SQL here: the handlers and the reconciliation
//! decide, this module moves bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes in a GiB (volume sizes are whole GiB).
pub const GIB: u64 = 1 << 30;

/// Cinder's default `max_over_subscription_ratio`.
pub const DEFAULT_OVER_SUBSCRIPTION_RATIO: f64 = 20.0;

/// The volume directory and how far it may be overcommitted.
#[derive(Debug, Clone)]
pub struct Backend {
    pub dir: PathBuf,
    pub over_subscription_ratio: f64,
}

/// What a file in the volume directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredFile {
    Volume(String),
    Snapshot(String),
    /// An unfinished copy (or anything else): removed at start-up.
    Stray(PathBuf),
}

/// Capacity of the backend's filesystem, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub total: u64,
    pub free: u64,
}

impl Backend {
    pub fn new(dir: PathBuf, over_subscription_ratio: f64) -> Backend {
        Backend {
            dir,
            over_subscription_ratio,
        }
    }

    /// The file that holds a volume.
    pub fn volume_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("volume-{id}"))
    }

    /// The file that holds a snapshot.
    pub fn snapshot_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("snapshot-{id}"))
    }

    fn partial(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    }

    /// Makes the directory (0700: volumes hold tenants' data).
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
    }

    /// Builds `dest` through its `.partial` name: `fill` writes the data
    /// there, then the file is grown to `size_gb` GiB (never shrunk), synced
    /// and renamed; on failure the partial file goes.
    fn staged(
        dest: &Path,
        size_gb: u64,
        fill: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let partial = Self::partial(dest);
        let result = (|| {
            fill(&partial)?;
            let file = std::fs::OpenOptions::new().write(true).open(&partial)?;
            let want = size_gb.saturating_mul(GIB);
            if file.metadata()?.len() < want {
                file.set_len(want)?;
            }
            file.sync_all()?;
            std::fs::rename(&partial, dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// A blank volume: a sparse file of `size_gb` GiB.
    pub fn create_blank(&self, id: &str, size_gb: u64) -> std::io::Result<()> {
        Self::staged(&self.volume_path(id), size_gb, |partial| {
            File::create(partial).map(drop)
        })
    }

    /// A volume (or snapshot, `dest`) holding the bytes of `src`, grown to
    /// `size_gb` GiB.
    pub fn create_copy(&self, src: &Path, dest: &Path, size_gb: u64) -> std::io::Result<()> {
        Self::staged(dest, size_gb, |partial| clone_file(src, partial))
    }

    /// Makes `dest` from the qcow2 image `src`, converted by the image
    /// module's reader (only data clusters are written: the file stays
    /// sparse), grown to `size_gb` GiB; as [`Backend::create_copy`], through
    /// a `.partial` name. A disk larger than the volume is refused.
    pub fn create_from_qcow2(&self, src: &Path, dest: &Path, size_gb: u64) -> std::io::Result<()> {
        Self::staged(dest, size_gb, |partial| {
            crate::image::qcow2::convert_file(src, partial).map_err(|e| match e {
                crate::image::qcow2::Qcow2Error::Io(e) => e,
                e => std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            let len = std::fs::metadata(partial)?.len();
            if len > size_gb.saturating_mul(GIB) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the qcow2 image's disk ({len} bytes) is larger than the volume"),
                ));
            }
            Ok(())
        })
    }

    /// Grows a volume's file to `size_gb` GiB (never shrinks).
    pub fn extend(&self, id: &str, size_gb: u64) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.volume_path(id))?;
        let want = size_gb.saturating_mul(GIB);
        if file.metadata()?.len() < want {
            file.set_len(want)?;
        }
        file.sync_all()
    }

    /// Removes a file; one that is already gone is fine.
    pub fn remove(path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The filesystem's size and free space.
    pub fn capacity(&self) -> std::io::Result<Capacity> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        let unit = stat.fragment_size();
        Ok(Capacity {
            total: stat.blocks().saturating_mul(unit),
            free: stat.blocks_available().saturating_mul(unit),
        })
    }

    /// Every file in the directory, classified.
    pub fn files(&self) -> std::io::Result<Vec<StoredFile>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let file = if name.ends_with(".partial") {
                StoredFile::Stray(entry.path())
            } else if let Some(id) = name.strip_prefix("volume-") {
                StoredFile::Volume(id.to_string())
            } else if let Some(id) = name.strip_prefix("snapshot-") {
                StoredFile::Snapshot(id.to_string())
            } else {
                StoredFile::Stray(entry.path())
            };
            out.push(file);
        }
        Ok(out)
    }
}

/// FICLONE: share the source's extents (btrfs, XFS); instant and copy-on-write.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Makes `output` share `input`'s extents (FICLONE); false where the
/// filesystem cannot (anything but btrfs, XFS and the like), `output` unchanged.
pub fn reflink(input: &File, output: &File) -> bool {
    // SAFETY: both descriptors are open files the caller borrows to us; FICLONE
    // reads only the source descriptor number passed by value.
    unsafe { libc::ioctl(output.as_raw_fd(), FICLONE as _, input.as_raw_fd()) == 0 }
}

/// Copies `src` to `dest` as a reflink where the filesystem can, else as a
/// sparse copy (only the data extents are read; runs of zeros become holes).
/// Shared with compute (root disks from images, snapshots of them).
pub fn clone_file(src: &Path, dest: &Path) -> std::io::Result<()> {
    let mut input = File::open(src)?;
    let mut output = File::create(dest)?;
    if reflink(&input, &output) {
        return Ok(());
    }
    let len = input.metadata()?.len();
    // Only the extents holding data: a disk is mostly holes, and reading
    // those holes costs 30 s per GiB under the lab's emulated CPU.
    if copy_data_extents(&input, &mut output, len)? {
        output.set_len(len)?;
        output.sync_all()?;
        return Ok(());
    }
    input.seek(SeekFrom::Start(0))?;
    output.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            output.seek(SeekFrom::Current(n as i64))?;
        } else {
            output.write_all(&buf[..n])?;
        }
        offset += n as u64;
    }
    output.set_len(len.max(offset))?;
    output.sync_all()
}

/// Copies the data extents of `input` (found with SEEK_DATA/SEEK_HOLE) to the
/// same offsets of `output`, skipping the holes (zero runs inside the data are
/// skipped too, so the copy is at least as sparse). Returns false, having
/// written nothing, when the filesystem cannot tell data from holes.
fn copy_data_extents(input: &File, output: &mut File, len: u64) -> std::io::Result<bool> {
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
        // ENXIO: no data (or hole) at or after offset.
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    };
    // A filesystem without SEEK_DATA answers EINVAL: copy the whole file instead.
    match seek(0, libc::SEEK_DATA) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let Some(start) = seek(offset, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        let mut at = start;
        while at < end {
            let want = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = input.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|b| *b != 0) {
                output.write_all_at(&buf[..n], at)?;
            }
            at += n as u64;
        }
        offset = end.max(start + 1);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp_backend(tag: &str) -> Backend {
        let dir = std::env::temp_dir().join(format!("yunhe-vol-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let backend = Backend::new(dir, DEFAULT_OVER_SUBSCRIPTION_RATIO);
        backend.prepare().expect("dir");
        backend
    }

    #[test]
    fn a_blank_volume_is_sparse_and_a_copy_keeps_bytes_and_holes() {
        let b = temp_backend("blank");
        b.create_blank("a", 10).expect("blank");
        let meta = std::fs::metadata(b.volume_path("a")).expect("meta");
        assert_eq!(meta.len(), 10 * GIB);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "a blank volume allocates nothing"
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(b.volume_path("a"))
            .expect("open");
        file.write_all_at(b"hello", 5 * GIB).expect("write");
        drop(file);
        let snap = b.snapshot_path("s");
        b.create_copy(&b.volume_path("a"), &snap, 10)
            .expect("snapshot");
        let copy = File::open(&snap).expect("copy");
        let mut back = [0u8; 5];
        copy.read_exact_at(&mut back, 5 * GIB).expect("read");
        assert_eq!(&back, b"hello");
        assert!(copy.metadata().expect("meta").blocks() * 512 < 16 << 20);
        b.create_copy(&snap, &b.volume_path("c"), 12)
            .expect("grown copy");
        assert_eq!(
            std::fs::metadata(b.volume_path("c")).expect("meta").len(),
            12 * GIB
        );
        b.extend("a", 11).expect("extend");
        assert_eq!(
            std::fs::metadata(b.volume_path("a")).expect("meta").len(),
            11 * GIB
        );
        let mut kinds = b.files().expect("files");
        kinds.sort_by_key(|f| format!("{f:?}"));
        assert_eq!(kinds.len(), 3);
        assert!(kinds.contains(&StoredFile::Snapshot("s".into())));
        let _ = std::fs::remove_dir_all(&b.dir);
    }

    #[test]
    fn a_failed_copy_leaves_no_file() {
        let b = temp_backend("fail");
        let missing = b.dir.join("nothing-here");
        assert!(
            b.create_copy(&missing, &b.volume_path("x"), 1).is_err(),
            "copying a missing source fails"
        );
        assert!(b.files().expect("files").is_empty());
        let _ = std::fs::remove_dir_all(&b.dir);
    }
}
