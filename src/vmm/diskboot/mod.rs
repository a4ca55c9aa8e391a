//! Disk boot: finds the kernel, initrd and command line a disk image declares,
//! the way its own boot loader would, so a server boots the kernel its guest
//! installed (read at every boot: never cached).
//!
//! Runs in the VMM process before the guest starts (docs/compute.md, "Disk
//! boot", gives the trade-off against in-guest firmware). The disk is
//! untrusted: all parsers are pure functions over [`Disk`] reads, every
//! size, count and depth read from it is bounded, symlink and cluster-chain
//! loops are errors, and a disk yields an error that says what is wrong,
//! never a panic or a hang.
//!
//! Order, as the distributions lay disks out: partitions (GPT, MBR primaries,
//! or a filesystem on the whole disk), filesystems (ext2/3/4, FAT), then
//! 1. Boot Loader Specification entries (`/loader/entries/*.conf` on the ESP
//!    or a `/boot` partition, `/boot/loader/entries` on a root filesystem);
//! 2. GRUB's generated `grub.cfg` (`/boot/grub/grub.cfg`, `/boot/grub2`,
//!    a `/boot` partition's `/grub`, an ESP's `/EFI/*/grub.cfg` stub that
//!    hands over with `search --fs-uuid` + `configfile`): the default entry;
//! 3. extlinux / syslinux configurations: the `DEFAULT` label;
//! 4. Debian's and Ubuntu's `/vmlinuz` and `/initrd.img` links.

pub mod config;
pub mod ext4;
pub mod fat;
pub mod part;

use std::io;
use std::os::unix::fs::FileExt;

use config::Entry;

/// Why a disk does not boot.
#[derive(Debug, thiserror::Error)]
pub enum DiskBootError {
    /// Reading the disk failed.
    #[error("cannot read the disk: {0}")]
    Io(#[from] io::Error),
    /// The partition table is damaged or truncated.
    #[error("bad partition table: {0}")]
    PartitionTable(String),
    /// A filesystem is damaged.
    #[error("bad filesystem: {0}")]
    Filesystem(String),
    /// Symbolic links that never end.
    #[error("filesystem loop: more than {MAX_LINKS} symbolic links resolving {0}")]
    Loop(String),
    /// A file larger than allowed.
    #[error("a boot file of {0} bytes is larger than allowed")]
    TooLarge(u64),
    /// Nothing bootable.
    #[error("no bootable kernel found on the disk ({0})")]
    NoKernel(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, DiskBootError>;

/// The largest kernel read (distribution bzImages are 5–15 MiB).
pub const MAX_KERNEL: u64 = 128 << 20;
/// The largest configuration file read.
const MAX_CONFIG: u64 = 1 << 20;
/// The largest directory read.
pub(crate) const MAX_DIR: u64 = 16 << 20;
/// The most names taken from a directory.
pub(crate) const MAX_LIST: usize = 4096;
/// Symbolic links followed resolving one path (Linux: 40).
const MAX_LINKS: usize = 40;
/// Bytes read from the disk by one [`find`] besides the kernel and initrds it loads:
/// partition tables, superblocks, inodes, directories and configurations. Every path
/// resolved reads its directories again, so this, not a count of steps, is what bounds
/// the time a hostile disk can take (many links, long paths, thousands of BLS entries).
pub const MAX_METADATA_READ: u64 = 256 << 20;

/// Random-access reads of a disk image.
pub trait Disk {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; an error past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Disk for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl Disk for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A disk that refuses reads once a byte budget is spent.
struct Budgeted<'a> {
    disk: &'a dyn Disk,
    left: std::cell::Cell<u64>,
    budget: u64,
}

impl Disk for Budgeted<'_> {
    fn size(&self) -> u64 {
        self.disk.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = buf.len() as u64;
        let left = self.left.get();
        if n > left {
            return Err(io::Error::other(format!(
                "finding the kernel read more than {} MiB of the disk (a filesystem loop?)",
                self.budget >> 20
            )));
        }
        self.left.set(left - n);
        self.disk.read_at(buf, offset)
    }
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// A file's metadata.
#[derive(Clone, Copy, Debug)]
pub struct Inode {
    /// The filesystem's id for it.
    pub id: u64,
    /// A directory.
    pub dir: bool,
    /// A symbolic link.
    pub symlink: bool,
    /// Size in bytes.
    pub size: u64,
}

/// A read-only filesystem.
pub trait Fs {
    /// The root directory's id.
    fn root(&self) -> u64;
    /// Metadata.
    fn stat(&self, ino: u64) -> Result<Inode>;
    /// The whole file (or a symlink's target); [`DiskBootError::TooLarge`] past `max`.
    fn read_file(&self, ino: u64, max: u64) -> Result<Vec<u8>>;
    /// A name in a directory.
    fn lookup(&self, dir: u64, name: &str) -> Result<Option<u64>>;
    /// The names in a directory (at most [`MAX_LIST`]).
    fn list(&self, dir: u64) -> Result<Vec<String>>;
    /// The filesystem UUID, if it has one.
    fn uuid(&self) -> Option<[u8; 16]>;
    /// A FAT volume's serial number.
    fn fat_serial(&self) -> Option<u32> {
        None
    }
}

/// Resolves `path` (absolute within the filesystem), following symlinks.
pub fn resolve(fs: &dyn Fs, path: &str) -> Result<Option<Inode>> {
    let mut links = 0usize;
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut stack = vec![fs.root()];
    while let Some(name) = todo.pop() {
        let Some(&dir) = stack.last() else {
            return Ok(None);
        };
        match name.as_str() {
            "." => continue,
            ".." => {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            _ => {}
        }
        if !fs.stat(dir)?.dir {
            return Ok(None);
        }
        let Some(ino) = fs.lookup(dir, &name)? else {
            return Ok(None);
        };
        let node = fs.stat(ino)?;
        if node.symlink {
            links += 1;
            if links > MAX_LINKS {
                return Err(DiskBootError::Loop(path.to_string()));
            }
            let target = fs.read_file(ino, 4096)?;
            let target = String::from_utf8_lossy(&target).into_owned();
            if target.starts_with('/') {
                stack.truncate(1);
            }
            todo.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(String::from),
            );
            if todo.len() > 4096 {
                return Err(DiskBootError::Loop(path.to_string()));
            }
            continue;
        }
        stack.push(ino);
    }
    match stack.last() {
        Some(&ino) => Ok(Some(fs.stat(ino)?)),
        None => Ok(None),
    }
}

fn read_path(fs: &dyn Fs, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
    match resolve(fs, path)? {
        Some(node) if !node.dir => Ok(Some(fs.read_file(node.id, max)?)),
        _ => Ok(None),
    }
}

/// What the disk boots.
#[derive(Debug)]
pub struct Found {
    /// The kernel image (bzImage or PVH ELF).
    pub kernel: Vec<u8>,
    /// The initrds, concatenated (as boot loaders load several).
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line.
    pub cmdline: String,
    /// Where it came from (for the log).
    pub source: String,
}

/// `0a1b2c3d-4e5f-…` as Linux and GRUB print a filesystem UUID.
fn uuid_string(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A filesystem found on the disk.
struct Volume<'a> {
    /// Partition number (None: the whole disk).
    number: Option<u32>,
    fs: Box<dyn Fs + 'a>,
}

impl Volume<'_> {
    fn name(&self) -> String {
        match self.number {
            Some(n) => format!("partition {n}"),
            None => "the whole disk".into(),
        }
    }

    fn matches_uuid(&self, wanted: &str) -> bool {
        let wanted = wanted.to_ascii_lowercase();
        if let Some(u) = self.fs.uuid()
            && uuid_string(&u) == wanted
        {
            return true;
        }
        if let Some(serial) = self.fs.fat_serial() {
            let s = format!("{:04x}-{:04x}", serial >> 16, serial & 0xffff);
            if s == wanted {
                return true;
            }
        }
        false
    }

    /// `root=` for a kernel on this volume when its configuration says none.
    fn root_arg(&self, with_initrd: bool) -> String {
        match (self.fs.uuid(), with_initrd) {
            (Some(u), true) => format!("root=UUID={}", uuid_string(&u)),
            _ => match self.number {
                Some(n) => format!("root=/dev/vda{n}"),
                None => "root=/dev/vda".into(),
            },
        }
    }
}

fn open_volumes<'a>(disk: &'a dyn Disk, problems: &mut Vec<String>) -> Result<Vec<Volume<'a>>> {
    let slices: Vec<(Option<u32>, u64, u64)> = match part::partitions(disk)? {
        Some(parts) => parts
            .iter()
            .filter(|p| !p.bios_boot)
            .map(|p| (Some(p.number), p.start, p.len))
            .collect(),
        None => vec![(None, 0, disk.size())],
    };
    let mut vols = Vec::new();
    for (number, start, len) in slices {
        let fs: Option<Box<dyn Fs + 'a>> = match ext4::Ext4::open(disk, start, len) {
            Ok(Some(fs)) => Some(Box::new(fs)),
            Ok(None) => match fat::Fat::open(disk, start, len) {
                Ok(Some(fs)) => Some(Box::new(fs)),
                Ok(None) => None,
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        if let Some(fs) = fs {
            vols.push(Volume { number, fs });
        }
    }
    Ok(vols)
}

/// Limits on what is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest initrd (all of them together).
    pub initrd: u64,
}

/// Finds what `disk` boots, reading at most [`MAX_KERNEL`] + `limits.initrd` +
/// [`MAX_METADATA_READ`] bytes of it, and at most 64 times its size + 16 MiB (a small disk
/// cannot make it read hundreds of MiB).
pub fn find(disk: &dyn Disk, limits: Limits) -> Result<Found> {
    let budget = MAX_KERNEL
        .saturating_add(limits.initrd)
        .saturating_add(MAX_METADATA_READ)
        .min(disk.size().saturating_mul(64).saturating_add(16 << 20));
    let disk = Budgeted {
        disk,
        left: std::cell::Cell::new(budget),
        budget,
    };
    let disk: &dyn Disk = &disk;
    let mut problems = Vec::new();
    let vols = open_volumes(disk, &mut problems)?;
    if vols.is_empty() {
        let why = if problems.is_empty() {
            "no ext2/3/4 or FAT filesystem on it".to_string()
        } else {
            problems.join("; ")
        };
        return Err(DiskBootError::NoKernel(why));
    }
    let steps: [(&str, Finder); 4] = [
        ("Boot Loader Specification entry", bls),
        ("grub.cfg", grub),
        ("extlinux/syslinux configuration", extlinux),
        ("/vmlinuz link", links),
    ];
    for (_, step) in steps {
        match step(&vols, limits) {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            // A loop or a file too large is the disk's fault: say so at once.
            Err(e @ (DiskBootError::Loop(_) | DiskBootError::TooLarge(_))) => return Err(e),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut why = "no BLS entry, grub.cfg, extlinux.conf or /vmlinuz on any filesystem".to_string();
    if !problems.is_empty() {
        why = format!("{why}; {}", problems.join("; "));
    }
    Err(DiskBootError::NoKernel(why))
}

type Finder = fn(&[Volume<'_>], Limits) -> Result<Option<Found>>;

/// Loads the kernel and initrds an entry names. `base` is the directory
/// relative paths start from; a path under `/boot` is also tried without it
/// (a separate `/boot` partition).
fn load_entry(
    vol: &Volume<'_>,
    entry: &Entry,
    base: &str,
    limits: Limits,
    source: String,
) -> Result<Option<Found>> {
    let candidates = |p: &str| -> Vec<String> {
        let p = config::strip_device(p);
        let abs = if p.starts_with('/') {
            p.to_string()
        } else {
            format!("{}/{p}", base.trim_end_matches('/'))
        };
        let mut c = vec![abs.clone()];
        if let Some(rest) = abs.strip_prefix("/boot/") {
            c.push(format!("/{rest}"));
        } else {
            c.push(format!("/boot{abs}"));
        }
        c
    };
    let mut kernel = None;
    for p in candidates(&entry.linux) {
        if let Some(k) = read_path(vol.fs.as_ref(), &p, MAX_KERNEL)? {
            kernel = Some(k);
            break;
        }
    }
    let Some(kernel) = kernel else {
        return Ok(None);
    };
    let mut initrd: Option<Vec<u8>> = None;
    for i in &entry.initrd {
        let mut got = None;
        for p in candidates(i) {
            let room = limits
                .initrd
                .saturating_sub(initrd.as_ref().map_or(0, |v| v.len() as u64));
            if let Some(d) = read_path(vol.fs.as_ref(), &p, room)? {
                got = Some(d);
                break;
            }
        }
        let Some(d) = got else {
            return Err(DiskBootError::NoKernel(format!(
                "{source}: initrd {i} not found"
            )));
        };
        let all = initrd.get_or_insert_with(Vec::new);
        // Concatenated cpio archives are padded to 4 bytes.
        while !all.len().is_multiple_of(4) {
            all.push(0);
        }
        all.extend_from_slice(&d);
    }
    let mut cmdline = entry.options.clone();
    if !cmdline.split_whitespace().any(|w| w.starts_with("root=")) {
        cmdline = format!("{} {cmdline}", vol.root_arg(initrd.is_some()));
    }
    // The serial port is the only console a server has.
    if !cmdline
        .split_whitespace()
        .any(|w| w.starts_with("console=ttyS"))
    {
        cmdline.push_str(" console=ttyS0");
    }
    Ok(Some(Found {
        kernel,
        initrd,
        cmdline: cmdline.trim().to_string(),
        source: format!("{source}: {}", entry.linux),
    }))
}

fn bls(vols: &[Volume<'_>], limits: Limits) -> Result<Option<Found>> {
    for vol in vols {
        for dir in ["/loader/entries", "/boot/loader/entries"] {
            let Some(node) = resolve(vol.fs.as_ref(), dir)? else {
                continue;
            };
            if !node.dir {
                continue;
            }
            let mut entries = Vec::new();
            for name in vol.fs.list(node.id)? {
                if !name.to_ascii_lowercase().ends_with(".conf") {
                    continue;
                }
                let path = format!("{dir}/{name}");
                if let Some(text) = read_path(vol.fs.as_ref(), &path, MAX_CONFIG)?
                    && let Some((e, version)) = config::parse_bls(&String::from_utf8_lossy(&text))
                {
                    entries.push((version, name, e));
                }
            }
            // The newest version first (the BLS's default order).
            entries.sort_by(|a, b| {
                config::version_cmp(&b.0, &a.0).then_with(|| config::version_cmp(&b.1, &a.1))
            });
            for (_, name, e) in entries {
                let base = if dir.starts_with("/boot") {
                    "/boot"
                } else {
                    "/"
                };
                let source = format!("{} {dir}/{name}", vol.name());
                if let Some(f) = load_entry(vol, &e, base, limits, source)? {
                    return Ok(Some(f));
                }
            }
        }
    }
    Ok(None)
}

const GRUB_CFGS: [&str; 4] = [
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/grub/grub.cfg",
    "/grub2/grub.cfg",
];

fn grub(vols: &[Volume<'_>], limits: Limits) -> Result<Option<Found>> {
    for vol in vols {
        let mut paths: Vec<String> = GRUB_CFGS.iter().map(|s| s.to_string()).collect();
        if let Some(efi) = resolve(vol.fs.as_ref(), "/EFI")?
            && efi.dir
        {
            for d in vol.fs.list(efi.id)? {
                if d != "." && d != ".." {
                    paths.push(format!("/EFI/{d}/grub.cfg"));
                }
            }
        }
        for path in paths {
            let Some(text) = read_path(vol.fs.as_ref(), &path, MAX_CONFIG)? else {
                continue;
            };
            let g = config::parse_grub(&String::from_utf8_lossy(&text));
            if let Some(found) = grub_boot(vols, vol, &path, &g, limits)? {
                return Ok(Some(found));
            }
            // A stub that hands over to the real grub.cfg elsewhere (one hop).
            if let Some((next, uuid)) = &g.configfile {
                let next = next
                    .replace("$prefix", "/boot/grub")
                    .replace("${prefix}", "/boot/grub");
                let next = config::strip_device(&next).to_string();
                let target = uuid
                    .as_deref()
                    .and_then(|u| vols.iter().find(|v| v.matches_uuid(u)))
                    .unwrap_or(vol);
                let mut tries = vec![next.clone()];
                if let Some(rest) = next.strip_prefix("/boot") {
                    tries.push(rest.to_string());
                }
                for t in tries {
                    if let Some(text) = read_path(target.fs.as_ref(), &t, MAX_CONFIG)? {
                        let g2 = config::parse_grub(&String::from_utf8_lossy(&text));
                        if let Some(found) = grub_boot(vols, target, &t, &g2, limits)? {
                            return Ok(Some(found));
                        }
                    }
                }
            }
        }
    }
    Ok(None)
}

fn grub_boot(
    vols: &[Volume<'_>],
    vol: &Volume<'_>,
    path: &str,
    g: &config::Grub,
    limits: Limits,
) -> Result<Option<Found>> {
    let Some(entry) = g.default_entry() else {
        return Ok(None);
    };
    if entry.linux.is_empty() {
        return Ok(None);
    }
    // Where the entry's paths are: `search --fs-uuid`, else `set root=`, else here.
    let target = entry
        .search_uuid
        .as_deref()
        .and_then(|u| vols.iter().find(|v| v.matches_uuid(u)))
        .or_else(|| {
            entry
                .root_partition
                .and_then(|n| vols.iter().find(|v| v.number == Some(n)))
        })
        .unwrap_or(vol);
    let source = format!(
        "{} {path} entry '{}' (kernel on {})",
        vol.name(),
        entry.title,
        target.name()
    );
    match load_entry(target, entry, "/", limits, source)? {
        Some(f) => Ok(Some(f)),
        None => Err(DiskBootError::NoKernel(format!(
            "{} {path}: the default entry's kernel {} is not on {}",
            vol.name(),
            entry.linux,
            target.name()
        ))),
    }
}

const EXTLINUX: [&str; 6] = [
    "/boot/extlinux/extlinux.conf",
    "/extlinux/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux/syslinux.cfg",
    "/syslinux.cfg",
    "/extlinux.conf",
];

fn extlinux(vols: &[Volume<'_>], limits: Limits) -> Result<Option<Found>> {
    for vol in vols {
        for path in EXTLINUX {
            let Some(text) = read_path(vol.fs.as_ref(), path, MAX_CONFIG)? else {
                continue;
            };
            let Some(e) = config::parse_extlinux(&String::from_utf8_lossy(&text)) else {
                continue;
            };
            let base = path.rsplit_once('/').map_or("/", |(d, _)| d);
            let base = if base.is_empty() { "/" } else { base };
            let source = format!("{} {path}", vol.name());
            if let Some(f) = load_entry(vol, &e, base, limits, source)? {
                return Ok(Some(f));
            }
        }
    }
    Ok(None)
}

fn links(vols: &[Volume<'_>], limits: Limits) -> Result<Option<Found>> {
    for vol in vols {
        for (k, i) in [
            ("/vmlinuz", "/initrd.img"),
            ("/boot/vmlinuz", "/boot/initrd.img"),
        ] {
            let Some(node) = resolve(vol.fs.as_ref(), k)? else {
                continue;
            };
            if node.dir {
                continue;
            }
            let has_initrd = resolve(vol.fs.as_ref(), i)?.is_some_and(|n| !n.dir);
            let e = Entry {
                title: k.into(),
                linux: k.into(),
                initrd: if has_initrd { vec![i.into()] } else { vec![] },
                options: "ro".into(),
                ..Entry::default()
            };
            let source = format!("{} {k}", vol.name());
            if let Some(f) = load_entry(vol, &e, "/", limits, source)? {
                return Ok(Some(f));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod fuzzing;
#[cfg(test)]
mod tests;
