//! The instance directory: boot files, the root disk, rescue files, the console log.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Virt, io_error};
use crate::compute::driver::{BootFiles, DriverResult};
use crate::db::servers::{LocalDisk, LocalDiskKind};

impl Virt {
    /// Creates the instance directory: boot files, the root disk (grown to
    /// `disk_gb`), and the config drive when `config_drive` holds files.
    /// Runs on the blocking pool.
    pub async fn prepare(
        &self,
        id: &str,
        boot: BootFiles,
        disk_gb: i64,
        config_drive: Option<Vec<(String, Vec<u8>)>>,
    ) -> DriverResult<()> {
        let dir = self.dir(id);
        let kernel_cache = self.unpack_kernels.then(|| self.kernel_cache_dir.clone());
        tokio::task::spawn_blocking(move || -> DriverResult<()> {
            std::fs::create_dir_all(&dir).map_err(io_error(format!("{}", dir.display())))?;
            // No kernel file: the VMM boots the kernel the disk declares.
            place_boot_files(&boot, kernel_cache.as_deref(), &dir)?;
            make_root_disk(boot.disk_image.as_deref(), &dir.join("disk"), disk_gb)?;
            let iso = dir.join("config.iso");
            let _ = std::fs::remove_file(&iso);
            if let Some(files) = config_drive {
                crate::compute::configdrive::write_iso(&iso, &files)?;
            }
            Ok(())
        })
        .await?
    }

    /// Where a rescued server's boot files and rescue disk are.
    pub(super) fn rescue_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("rescue")
    }

    /// Creates the rescue files in `<instance>/rescue/`: kernel, ramdisk and
    /// `disk` (a copy of the rescue image's data, when it has any).
    pub async fn prepare_rescue(&self, id: &str, boot: BootFiles) -> DriverResult<()> {
        let dir = self.rescue_dir(id);
        let kernel_cache = self.unpack_kernels.then(|| self.kernel_cache_dir.clone());
        tokio::task::spawn_blocking(move || -> DriverResult<()> {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(io_error(format!("{}", dir.display())))?;
            place_boot_files(&boot, kernel_cache.as_deref(), &dir)?;
            if boot.disk_image.is_some() {
                make_root_disk(boot.disk_image.as_deref(), &dir.join("disk"), 0)?;
            }
            Ok(())
        })
        .await?
    }

    /// Removes the swap and ephemeral disk files (`disk.swap`, `disk.eph*`).
    pub async fn drop_local_disks(&self, id: &str) {
        let dir = self.dir(id);
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == "disk.swap" || name.starts_with("disk.eph") {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }

    /// Removes the rescue files.
    pub async fn drop_rescue(&self, id: &str) {
        let _ = tokio::fs::remove_dir_all(self.rescue_dir(id)).await;
    }

    /// Grows the root disk to `disk_gb` (never shrinks it).
    pub async fn grow_disk(&self, id: &str, disk_gb: i64) -> DriverResult<()> {
        let disk = self.disk_path(id);
        // A volume-backed server has no disk here (its root is a volume).
        if !disk.exists() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || grow(&disk, disk_gb)).await?
    }

    /// Copies the root disk to `dest` (a snapshot), as a reflink or sparse copy.
    pub async fn copy_disk(&self, id: &str, dest: PathBuf) -> DriverResult<()> {
        let disk = self.disk_path(id);
        tokio::task::spawn_blocking(move || clone_file(&disk, &dest)).await?
    }

    /// Removes everything the server had on disk.
    pub async fn destroy_files(&self, id: &str) {
        let dir = self.dir(id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        // A VMM killed with SIGKILL could not remove its socket.
        let _ = tokio::fs::remove_file(self.sockets_dir.join(format!("{id}.sock"))).await;
        let _ = tokio::fs::remove_dir(self.jail_root(id)).await;
        // A VMM found again after a restart of serve is not our child: its
        // cgroup was not removed when it exited.
        let cgroup = id.to_string();
        let _ = tokio::task::spawn_blocking(move || crate::vmm::jail::remove_cgroup(&cgroup)).await;
        self.exited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The last `lines` lines of the console (with None, all that the tail
    /// read holds): at most [`CONSOLE_OUTPUT_MAX`] bytes from the end of the
    /// log (and of its rotated copy when the log is shorter), as Nova's
    /// libvirt driver reads at most 100 KiB. Never reads more into memory.
    pub async fn console_output(&self, id: &str, lines: Option<usize>) -> String {
        let path = self.dir(id).join("console.log");
        let data = tokio::task::spawn_blocking(move || read_log_tail(&path, CONSOLE_OUTPUT_MAX))
            .await
            .unwrap_or_default();
        console_text(&data, lines)
    }
}

/// Bytes of the console log `os-getConsoleOutput` reads at most (Nova's
/// libvirt driver's MAX_CONSOLE_BYTES).
pub const CONSOLE_OUTPUT_MAX: usize = 100 * 1024;

/// The last `max` bytes of the console log at `path`, continued into its
/// rotated copy (`<path>.1`) when the log holds less. Links are not followed
/// (a VMM could have put one there); a missing file reads as empty.
fn read_log_tail(path: &Path, max: usize) -> Vec<u8> {
    let current = tail_of(path, max);
    let want = max.saturating_sub(current.len());
    if want == 0 {
        return current;
    }
    let mut older = tail_of(&crate::vmm::console::rotated_path(path), want);
    older.extend_from_slice(&current);
    older
}

/// The last `max` bytes of one file (empty when it cannot be read).
fn tail_of(path: &Path, max: usize) -> Vec<u8> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return Vec::new();
    };
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    if !meta.is_file() {
        return Vec::new();
    }
    let start = meta.len().saturating_sub(max as u64);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut data = Vec::with_capacity(max.min(meta.len() as usize));
    // The log may grow while it is read: never take more than `max`.
    let _ = file.take(max as u64).read_to_end(&mut data);
    data
}

/// Console bytes as the text Nova returns: lossy UTF-8 (a character cut at
/// the start of the tail is dropped), without the control characters Nova
/// removes (all below 0x20 but tab and newline), cut to the last `lines`
/// pieces of the text split on '\n' (a trailing newline leaves an empty
/// last piece).
fn console_text(data: &[u8], lines: Option<usize>) -> String {
    let start = data
        .iter()
        .take(3)
        .position(|b| b & 0xC0 != 0x80)
        .unwrap_or(0);
    let text: String = String::from_utf8_lossy(&data[start..])
        .chars()
        .filter(|c| !matches!(*c, '\x00'..='\x08' | '\x0b'..='\x1f'))
        .collect();
    match lines {
        None => text,
        Some(n) => {
            let all: Vec<&str> = text.split('\n').collect();
            all[all.len().saturating_sub(n)..].join("\n")
        }
    }
}

/// Removes the unpacked kernels no instance links to any more (a kernel image
/// deleted, or no server using it: the next boot unpacks it again); returns
/// the directory.
pub(super) fn sweep_kernel_cache(dir: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry
                .metadata()
                .is_ok_and(|m| m.is_file() && m.nlink() == 1)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    dir.to_path_buf()
}

fn link_or_copy(src: &Path, dest: &Path) -> DriverResult<()> {
    let _ = std::fs::remove_file(dest);
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest)
        .map(|_| ())
        .map_err(io_error(format!("copying {}", src.display())))
}

/// Copies `src` to `dest` as a reflink where the filesystem can, else as a
/// sparse copy of the data extents (shared with the volume backend).
fn clone_file(src: &Path, dest: &Path) -> DriverResult<()> {
    crate::volume::backend::clone_file(src, dest).map_err(io_error(format!(
        "copying {} to {}",
        src.display(),
        dest.display()
    )))
}

fn grow(disk: &Path, disk_gb: i64) -> DriverResult<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io_error("root disk"))?;
    let want = (disk_gb.max(0) as u64) << 30;
    let have = file.metadata().map_err(io_error("root disk"))?.len();
    if want > have {
        file.set_len(want)
            .map_err(io_error("growing the root disk"))?;
    }
    Ok(())
}

/// Puts `boot`'s kernel (unpacked into the kernel cache when there is one)
/// and ramdisk into `dir` as `kernel` and `ramdisk`; removes stale ones.
fn place_boot_files(boot: &BootFiles, kernel_cache: Option<&Path>, dir: &Path) -> DriverResult<()> {
    // No kernel file: the VMM boots the kernel the disk declares.
    let _ = std::fs::remove_file(dir.join("kernel"));
    if let Some(src) = &boot.kernel {
        let kernel = match kernel_cache {
            Some(cache) => {
                let (kernel, problem) = crate::vmm::unpack::cached_vmlinux(src, cache);
                if let Some(e) = problem {
                    tracing::warn!(kernel = %src.display(), "booting the kernel compressed: {e}");
                }
                kernel
            }
            None => src.clone(),
        };
        link_or_copy(&kernel, &dir.join("kernel"))?;
    }
    let ramdisk = dir.join("ramdisk");
    let _ = std::fs::remove_file(&ramdisk);
    if let Some(r) = &boot.ramdisk {
        link_or_copy(r, &ramdisk)?;
    }
    Ok(())
}

/// Makes the server's local swap and ephemeral disks in `dir` that are not
/// there yet (sparse files; a swap disk gets a Linux swap signature, as
/// Nova's mkswap; a new ephemeral disk an empty FAT32 filesystem labelled
/// `ephemeral<n>`, as Nova's default `mkfs -t vfat`, unless its
/// `guest_format` names another filesystem, which the guest makes), grows
/// an ephemeral disk that is smaller than asked (a resize; its filesystem
/// stays as it is, as in Nova), and remakes a swap disk of another size.
/// A new disk is made under a temporary name and renamed when complete, so
/// a serve killed half-way leaves no disk that looks made. Returns the files.
pub(super) fn ensure_local_disks(dir: &Path, disks: &[LocalDisk]) -> DriverResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (index, d) in disks.iter().enumerate() {
        let path = dir.join(LocalDisk::file_name(disks, index));
        let want = (d.size_mib.max(1) as u64) << 20;
        let have = std::fs::metadata(&path).map(|m| m.len()).ok();
        match d.kind {
            LocalDiskKind::Swap if have != Some(want) => {
                let _ = std::fs::remove_file(&path);
                let file = std::fs::File::create(&path).map_err(io_error("swap disk"))?;
                file.set_len(want).map_err(io_error("swap disk"))?;
                write_swap_header(&file, want).map_err(io_error("swap disk"))?;
            }
            LocalDiskKind::Ephemeral if have.is_none() => {
                let label = format!("ephemeral{}", ephemeral_index(disks, index));
                make_ephemeral(&path, want, d.guest_format.as_deref(), &label)
                    .map_err(io_error("ephemeral disk"))?;
            }
            LocalDiskKind::Ephemeral if have.is_some_and(|h| h < want) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(io_error("ephemeral disk"))?;
                file.set_len(want).map_err(io_error("ephemeral disk"))?;
            }
            _ => {}
        }
        files.push(path);
    }
    Ok(files)
}

/// The place of `disks[index]` among the server's ephemeral disks.
fn ephemeral_index(disks: &[LocalDisk], index: usize) -> usize {
    disks[..index.min(disks.len())]
        .iter()
        .filter(|d| d.kind == LocalDiskKind::Ephemeral)
        .count()
}

/// The filesystems yunhe makes on a new ephemeral disk: Nova's default
/// (`vfat`, when no `guest_format` is asked for) and `vfat` asked by name.
/// Any other (`ext4`, `xfs`, `ntfs`, ...) is left to the guest: the static
/// binary carries no mkfs for them.
fn formats_on_host(guest_format: Option<&str>) -> bool {
    matches!(guest_format, None | Some("vfat" | "fat" | "fat32"))
}

/// A new ephemeral disk of `len` bytes at `path`, formatted as
/// [`formats_on_host`] says, made under `path.tmp` and renamed.
fn make_ephemeral(
    path: &Path,
    len: u64,
    guest_format: Option<&str>,
    label: &str,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp)?;
    file.set_len(len)?;
    if formats_on_host(guest_format) && !super::vfat::format(&file, len, label)? {
        tracing::warn!(disk = %path.display(), len, "FAT32 cannot span the ephemeral disk: left blank");
    }
    drop(file);
    std::fs::rename(&tmp, path)
}

/// A Linux swap area's header (version 1, 4 KiB pages, as mkswap writes it):
/// version, last page and a random UUID at 1 KiB, `SWAPSPACE2` at the end
/// of the first page.
fn write_swap_header(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PAGE: u64 = 4096;
    let mut page = vec![0u8; PAGE as usize];
    let last_page = u32::try_from((len / PAGE).saturating_sub(1)).unwrap_or(u32::MAX);
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    page[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    page[1036..1052].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    page[PAGE as usize - 10..].copy_from_slice(b"SWAPSPACE2");
    file.write_all_at(&page, 0)
}

/// The root disk: a copy of the image (or empty), at least `disk_gb` GiB.
fn make_root_disk(image: Option<&Path>, disk: &Path, disk_gb: i64) -> DriverResult<()> {
    let _ = std::fs::remove_file(disk);
    match image {
        Some(src) => clone_file(src, disk)?,
        None => {
            if disk_gb <= 0 {
                return Ok(());
            }
            std::fs::File::create(disk).map_err(io_error("root disk"))?;
        }
    }
    grow(disk, disk_gb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::time::{Duration, Instant};

    /// Swap and ephemeral disks: sparse, the swap one signed as mkswap does;
    /// a larger ephemeral size grows the file (kept data), a new swap size
    /// remakes the swap disk.
    #[test]
    fn local_disks_are_sparse_and_swap_is_signed() {
        let dir = std::env::temp_dir().join(format!("yunhe-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let disk = |kind, size_mib| LocalDisk {
            kind,
            size_mib,
            device: String::new(),
            guest_format: None,
            from_flavor: true,
        };
        let mut disks = vec![
            disk(LocalDiskKind::Ephemeral, 1024),
            disk(LocalDiskKind::Swap, 8),
        ];
        let files = ensure_local_disks(&dir, &disks).expect("made");
        assert_eq!(files, [dir.join("disk.eph0"), dir.join("disk.swap")]);
        let eph = std::fs::metadata(&files[0]).expect("eph0");
        assert_eq!(eph.len(), 1 << 30);
        assert!(eph.blocks() < 64, "sparse: {} blocks", eph.blocks());
        let swap = std::fs::read(&files[1]).expect("swap");
        assert_eq!(swap.len(), 8 << 20);
        assert_eq!(&swap[4086..4096], b"SWAPSPACE2");
        assert_eq!(&swap[1024..1028], &1u32.to_le_bytes());
        assert_eq!(&swap[1028..1032], &((8u32 << 20) / 4096 - 1).to_le_bytes());
        std::fs::File::options()
            .write(true)
            .open(&files[0])
            .expect("open")
            .write_all_at(b"data", 0)
            .expect("write");
        disks[0].size_mib = 2048;
        disks[1].size_mib = 16;
        ensure_local_disks(&dir, &disks).expect("grown");
        assert_eq!(std::fs::metadata(&files[0]).expect("eph0").len(), 2 << 30);
        assert_eq!(&std::fs::read(&files[0]).expect("eph0")[..4], b"data");
        let swap = std::fs::read(&files[1]).expect("swap");
        assert_eq!(swap.len(), 16 << 20);
        assert_eq!(&swap[4086..4096], b"SWAPSPACE2");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A new ephemeral disk is FAT32 labelled by its place (Nova's default
    /// vfat, `ephemeral0`, `ephemeral1`, ...) unless the mapping asked for a
    /// filesystem the guest makes; no temporary file is left behind.
    #[test]
    fn new_ephemeral_disks_are_vfat_unless_another_filesystem_is_asked() {
        let dir = std::env::temp_dir().join(format!("yunhe-eph-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let disk = |kind, guest_format: Option<&str>| LocalDisk {
            kind,
            size_mib: 1024,
            device: String::new(),
            guest_format: guest_format.map(str::to_string),
            from_flavor: false,
        };
        let disks = [
            disk(LocalDiskKind::Ephemeral, None),
            disk(LocalDiskKind::Swap, Some("swap")),
            disk(LocalDiskKind::Ephemeral, Some("ext4")),
            disk(LocalDiskKind::Ephemeral, Some("vfat")),
        ];
        let files = ensure_local_disks(&dir, &disks).expect("made");
        let head = |n: usize| {
            let mut b = vec![0u8; 512];
            std::fs::File::open(&files[n])
                .expect("open")
                .read_exact_at(&mut b, 0)
                .expect("read");
            b
        };
        assert_eq!(&head(0)[71..90], b"ephemeral0 FAT32   ");
        assert!(
            head(2).iter().all(|&b| b == 0),
            "ext4 is the guest's to make"
        );
        assert_eq!(&head(3)[71..90], b"ephemeral2 FAT32   ");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A root disk is a small image grown to GiBs: the copy (createImage,
    /// shelve) must read only the data, give the same bytes and stay sparse.
    #[test]
    fn clone_file_copies_the_data_and_keeps_the_holes() {
        let dir = std::env::temp_dir().join(format!("yunhe-clone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (src, dest) = (dir.join("disk"), dir.join("copy"));
        let file = std::fs::File::create(&src).expect("source");
        let size = 1u64 << 30;
        file.set_len(size).expect("grow");
        let chunks: [(u64, &[u8]); 3] = [
            (0, b"boot sector"),
            (300 << 20, &[0xa5; 8192]),
            (size - 5, b"tail!"),
        ];
        for (at, data) in chunks {
            file.write_all_at(data, at).expect("write");
        }
        drop(file);
        let started = Instant::now();
        clone_file(&src, &dest).expect("clone");
        let took = started.elapsed();
        let copy = std::fs::File::open(&dest).expect("copy");
        let meta = copy.metadata().expect("metadata");
        assert_eq!(meta.len(), size);
        for (at, data) in chunks {
            let mut back = vec![0u8; data.len()];
            copy.read_exact_at(&mut back, at).expect("read back");
            assert_eq!(back, data, "bytes at {at}");
        }
        let mut around = [1u8; 16];
        copy.read_exact_at(&mut around, 100 << 20)
            .expect("read a hole");
        assert_eq!(around, [0u8; 16]);
        // Sparse: far less than the 1 GiB of the file is allocated.
        assert!(meta.blocks() * 512 < 16 << 20, "{} blocks", meta.blocks());
        // Reading 1 GiB of holes took seconds; the data extents take milliseconds.
        assert!(took < Duration::from_secs(2), "copy took {took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
