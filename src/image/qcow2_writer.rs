//! A qcow2 writer: a raw disk (a volume's file) into a qcow2 version 3 image,
//! as Cinder uploads a volume with `disk_format` qcow2. Written from the
//! format's specification (QEMU's docs/interop/qcow2.txt).
//!
//! What is written: version 3, 64 KiB clusters (`cluster_bits` 16), 16-bit
//! refcounts (`refcount_order` 4), no backing file, no compression, no
//! encryption, no snapshots, no header extensions. Only clusters with data
//! are stored: the source's holes (SEEK_DATA/SEEK_HOLE) are not read, and
//! read clusters that are all zeros are not written (their L2 entry stays 0,
//! which reads as zeros without a backing file). An L2 table is stored only
//! for a 512 MiB stretch of the disk that has data.
//!
//! The layout, in host clusters: the header; the L1 table; then data
//! clusters in guest order, each stretch's L2 table after its data; then
//! the refcount table and the refcount blocks. Every cluster of the file is
//! used exactly once, so every refcount is 1 and every L1 and L2 entry
//! carries the COPIED flag: `qemu-img check` finds no errors and no leaks.
//!
//! Bounded memory: the L1 table (8 bytes per 512 MiB of disk: 16 KiB for
//! 1 TiB, 1 MiB at the reader's 64 TiB limit), one L2 table and one data
//! cluster (64 KiB each), and one refcount cluster (64 KiB) at a time. The
//! source is read once, in order.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::qcow2::MAX_VIRTUAL_SIZE;

/// log2 of the cluster size written.
pub const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per table (8 bytes each).
const PER_L2: u64 = CLUSTER / 8;
/// 16-bit refcounts: entries per refcount block.
const PER_REFBLOCK: u64 = CLUSTER / 2;
/// Refcount table entries per cluster (8 bytes each).
const PER_REFTABLE: u64 = CLUSTER / 8;
/// The header's length (version 3 without the compression type byte).
const HEADER_LENGTH: u32 = 104;
/// The entry's flag that says the cluster's refcount is exactly 1.
const COPIED: u64 = 1 << 63;

/// Why a qcow2 image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2WriteError {
    /// The disk is larger than this writer (and the reader) accept.
    #[error("a {0}-byte disk is over the qcow2 writer's {max} TiB limit", max = MAX_VIRTUAL_SIZE >> 40)]
    TooBig(u64),
    /// The qcow2 file would be larger than the caller's limit.
    #[error("the qcow2 image would be larger than {0} bytes")]
    OverLimit(u64),
    /// Reading the source or writing the image failed.
    #[error("qcow2 write I/O error: {0}")]
    Io(#[from] io::Error),
}

type Result<T> = std::result::Result<T, Qcow2WriteError>;

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// The disk's size (the source's length).
    pub virtual_size: u64,
    /// Data clusters stored.
    pub data_clusters: u64,
    /// L2 tables stored.
    pub l2_tables: u64,
    /// Bytes read from the source (holes are not read).
    pub read: u64,
    /// The qcow2 file's size.
    pub file_size: u64,
}

/// The data extents of `input` below `len`, in order: SEEK_DATA/SEEK_HOLE,
/// or the whole file where the filesystem cannot tell (EINVAL).
struct Extents<'a> {
    input: &'a File,
    len: u64,
    next: u64,
    whole: bool,
}

impl<'a> Extents<'a> {
    fn new(input: &'a File, len: u64) -> Extents<'a> {
        Extents {
            input,
            len,
            next: 0,
            whole: false,
        }
    }

    fn seek(&self, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
        let Ok(at) = libc::off_t::try_from(offset) else {
            return Ok(None);
        };
        // SAFETY: lseek on a descriptor this struct borrows; no memory is passed.
        let r = unsafe { libc::lseek(self.input.as_raw_fd(), at, whence) };
        if r >= 0 {
            return Ok(u64::try_from(r).ok());
        }
        let e = io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after offset.
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    }

    /// The next extent `[start, end)`, or None at the end.
    fn next_extent(&mut self) -> io::Result<Option<(u64, u64)>> {
        if self.next >= self.len {
            return Ok(None);
        }
        if self.whole {
            let start = self.next;
            self.next = self.len;
            return Ok(Some((start, self.len)));
        }
        let start = match self.seek(self.next, libc::SEEK_DATA) {
            Ok(Some(start)) => start,
            Ok(None) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.next == 0 => {
                self.whole = true;
                return self.next_extent();
            }
            Err(e) => return Err(e),
        };
        if start >= self.len {
            return Ok(None);
        }
        let end = self
            .seek(start, libc::SEEK_HOLE)?
            .unwrap_or(self.len)
            .min(self.len)
            .max(start + 1);
        self.next = end;
        Ok(Some((start, end)))
    }
}

/// Appends clusters at the end of the image and counts them against the limit.
struct Out<'a> {
    file: &'a File,
    /// The next free host cluster.
    next: u64,
    limit: u64,
}

impl Out<'_> {
    fn append(&mut self, cluster: &[u8]) -> Result<u64> {
        let at = self.next * CLUSTER;
        if at + CLUSTER > self.limit {
            return Err(Qcow2WriteError::OverLimit(self.limit));
        }
        self.file.write_all_at(cluster, at)?;
        self.next += 1;
        Ok(at)
    }
}

/// The refcount structures for a file of `used` clusters that they follow:
/// (refcount table clusters, refcount blocks), covering themselves too.
fn refcount_layout(used: u64) -> (u64, u64) {
    let (mut table, mut blocks) = (1u64, 1u64);
    loop {
        let total = used + table + blocks;
        let b = total.div_ceil(PER_REFBLOCK);
        let t = b.div_ceil(PER_REFTABLE);
        if (t, b) == (table, blocks) {
            return (table, blocks);
        }
        // Both only grow with the total, so this settles.
        (table, blocks) = (t.max(table), b.max(blocks));
    }
}

fn header(
    virtual_size: u64,
    l1_size: u64,
    l1_offset: u64,
    rt_offset: u64,
    rt_clusters: u64,
) -> Vec<u8> {
    let mut h = vec![0u8; CLUSTER as usize];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    // 8..20: no backing file.
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&virtual_size.to_be_bytes());
    // 32..36: no encryption.
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&rt_offset.to_be_bytes());
    h[56..60].copy_from_slice(&(rt_clusters as u32).to_be_bytes());
    // 60..72: no snapshots; 72..96: no features.
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
    // 104..112: the end-of-extensions marker (type 0, length 0), zeros.
    h
}

/// Writes the raw disk `input` (its whole length) as a qcow2 image into
/// `output` (which should be empty) from offset 0. Fails with
/// [`Qcow2WriteError::OverLimit`] before the file grows past `limit` bytes.
pub fn write(input: &File, output: &File, limit: u64) -> Result<WriteStats> {
    let virtual_size = input.metadata()?.len();
    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err(Qcow2WriteError::TooBig(virtual_size));
    }
    let clusters = virtual_size.div_ceil(CLUSTER);
    let l1_size = clusters.div_ceil(PER_L2);
    // An empty disk has no L1 table (offset 0, as qemu-img makes one).
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    let l1_offset = if l1_size == 0 { 0 } else { CLUSTER };
    let mut l1 = vec![0u8; (l1_clusters * CLUSTER) as usize];
    let mut out = Out {
        file: output,
        next: 1 + l1_clusters,
        limit,
    };
    if out.next * CLUSTER > limit {
        return Err(Qcow2WriteError::OverLimit(limit));
    }
    let mut stats = WriteStats {
        virtual_size,
        ..WriteStats::default()
    };
    let mut data = vec![0u8; CLUSTER as usize];
    let mut l2 = vec![0u8; CLUSTER as usize];
    // The L2 table being filled: its index in L1, and whether it has an entry.
    let mut l2_index = 0u64;
    let mut l2_used = false;
    // The next guest cluster not yet looked at (extents may share a cluster).
    let mut next_cluster = 0u64;
    let mut extents = Extents::new(input, virtual_size);
    while let Some((start, end)) = extents.next_extent()? {
        let first = (start / CLUSTER).max(next_cluster);
        let last = end.div_ceil(CLUSTER);
        for c in first..last {
            let at = c * CLUSTER;
            let len = CLUSTER.min(virtual_size - at) as usize;
            data[len..].fill(0);
            input.read_exact_at(&mut data[..len], at)?;
            stats.read += len as u64;
            if data.iter().all(|b| *b == 0) {
                continue;
            }
            if c / PER_L2 != l2_index {
                if l2_used {
                    store_l2(&mut out, &mut l1, l2_index, &mut l2, &mut stats)?;
                }
                l2_index = c / PER_L2;
            }
            let host = out.append(&data)?;
            let e = (c % PER_L2) as usize * 8;
            l2[e..e + 8].copy_from_slice(&(host | COPIED).to_be_bytes());
            l2_used = true;
            stats.data_clusters += 1;
        }
        next_cluster = next_cluster.max(last);
    }
    if l2_used {
        store_l2(&mut out, &mut l1, l2_index, &mut l2, &mut stats)?;
    }

    // The refcounts: every cluster so far, and the refcount clusters, is used once.
    let used = out.next;
    let (rt_clusters, blocks) = refcount_layout(used);
    let total = used + rt_clusters + blocks;
    if total * CLUSTER > limit {
        return Err(Qcow2WriteError::OverLimit(limit));
    }
    let rt_offset = used * CLUSTER;
    let first_block = used + rt_clusters;
    let mut buf = vec![0u8; CLUSTER as usize];
    for t in 0..rt_clusters {
        buf.fill(0);
        for (k, e) in buf.chunks_exact_mut(8).enumerate() {
            let b = t * PER_REFTABLE + k as u64;
            if b >= blocks {
                break;
            }
            e.copy_from_slice(&((first_block + b) * CLUSTER).to_be_bytes());
        }
        out.append(&buf)?;
    }
    for b in 0..blocks {
        let covered = (total - b * PER_REFBLOCK).min(PER_REFBLOCK) as usize;
        buf.fill(0);
        for e in buf.chunks_exact_mut(2).take(covered) {
            e.copy_from_slice(&1u16.to_be_bytes());
        }
        out.append(&buf)?;
    }
    debug_assert_eq!(out.next, total);

    // The L1 table, then the header last: a half-written file has no valid header.
    if !l1.is_empty() {
        output.write_all_at(&l1, l1_offset)?;
    }
    output.write_all_at(
        &header(virtual_size, l1_size, l1_offset, rt_offset, rt_clusters),
        0,
    )?;
    stats.file_size = total * CLUSTER;
    Ok(stats)
}

fn store_l2(
    out: &mut Out<'_>,
    l1: &mut [u8],
    index: u64,
    l2: &mut [u8],
    stats: &mut WriteStats,
) -> Result<()> {
    let host = out.append(l2)?;
    let e = index as usize * 8;
    l1[e..e + 8].copy_from_slice(&(host | COPIED).to_be_bytes());
    l2.fill(0);
    stats.l2_tables += 1;
    Ok(())
}

/// Writes the raw file `src` as a qcow2 image at `dest` (a `.partial`
/// staging name the caller renames when done), synced; on failure `dest`
/// is removed.
pub fn write_file(src: &Path, dest: &Path, limit: u64) -> Result<WriteStats> {
    let result = (|| {
        let input = File::open(src)?;
        let output = File::create(dest)?;
        let stats = write(&input, &output, limit)?;
        output.sync_all()?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("yunhe-qcow2w-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn qemu_img() -> bool {
        let ok = Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("qemu-img is missing (Debian: qemu-utils): skipping its checks");
        }
        ok
    }

    /// A sparse raw file of `size` bytes with pseudo-random data in the given
    /// (offset, length) places.
    fn sparse_raw(path: &Path, size: u64, pieces: &[(u64, usize)], seed: u32) {
        let f = File::create(path).expect("raw");
        f.set_len(size).expect("len");
        let mut x = seed;
        for &(at, len) in pieces {
            let mut piece = vec![0u8; len];
            for b in &mut piece {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (x >> 24) as u8;
            }
            f.write_all_at(&piece, at).expect("piece");
        }
    }

    /// Whether two files hold the same bytes (read 1 MiB at a time).
    fn same_bytes(a: &Path, b: &Path) -> bool {
        let (fa, fb) = (File::open(a).expect("a"), File::open(b).expect("b"));
        let len = fa.metadata().expect("a").len();
        if fb.metadata().expect("b").len() != len {
            return false;
        }
        let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut at = 0;
        while at < len {
            let n = (len - at).min(1 << 20) as usize;
            fa.read_exact_at(&mut ba[..n], at).expect("read a");
            fb.read_exact_at(&mut bb[..n], at).expect("read b");
            if ba[..n] != bb[..n] {
                return false;
            }
            at += n as u64;
        }
        true
    }

    /// Writes `raw` as qcow2, checks the file's size, reads it back with our
    /// reader, and with qemu-img when there is one (check, compare, info).
    fn round_trip(d: &Path, name: &str, raw: &Path) -> WriteStats {
        let size = std::fs::metadata(raw).expect("raw").len();
        let q = d.join(format!("{name}.qcow2"));
        let stats = write_file(raw, &q, u64::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(stats.virtual_size, size, "{name}");
        assert_eq!(
            std::fs::metadata(&q).expect("meta").len(),
            stats.file_size,
            "{name}"
        );
        let back = d.join(format!("{name}.back"));
        let read = crate::image::qcow2::convert_file(&q, &back)
            .unwrap_or_else(|e| panic!("{name}: our reader: {e}"));
        assert_eq!(read.virtual_size, size, "{name}");
        assert_eq!(read.clusters, stats.data_clusters, "{name}");
        assert!(same_bytes(&back, raw), "{name}: bytes differ");
        if qemu_img() {
            let check = Command::new("qemu-img")
                .args(["check", "-f", "qcow2", "--output=json"])
                .arg(&q)
                .output()
                .expect("qemu-img check");
            let report = String::from_utf8_lossy(&check.stdout);
            assert!(check.status.success(), "{name}: qemu-img check: {report}");
            assert!(!report.contains("\"leaks\""), "{name}: leaks: {report}");
            assert!(!report.contains("\"corruptions\""), "{name}: {report}");
            // qemu's block layer rounds a disk up to 512-byte sectors: its
            // view of a raw file of another size does not compare.
            if !size.is_multiple_of(512) {
                return stats;
            }
            let cmp = Command::new("qemu-img")
                .args(["compare", "-f", "qcow2", "-F", "raw"])
                .arg(&q)
                .arg(raw)
                .output()
                .expect("qemu-img compare");
            assert!(
                cmp.status.success(),
                "{name}: qemu-img compare: {}",
                String::from_utf8_lossy(&cmp.stdout)
            );
            let info = Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(&q)
                .output()
                .expect("qemu-img info");
            let info = String::from_utf8_lossy(&info.stdout);
            assert!(info.contains("\"format\": \"qcow2\""), "{name}: {info}");
            assert!(
                info.contains(&format!("\"virtual-size\": {size}")),
                "{name}: {info}"
            );
        }
        stats
    }

    #[test]
    fn sparse_data_round_trips() {
        let d = tmpdir("sparse");
        let raw = d.join("disk.raw");
        // 1.5 GiB + 1000 bytes: four L2 stretches, a short last cluster, data
        // across a cluster boundary and across an L2 stretch's boundary, and a
        // run of zeros written as data (read, not stored).
        let size = (3 << 29) + 1000;
        let pieces = [
            (0, 512),
            (65_000, 1000),
            ((512 << 20) - 300, 600),
            (700 << 20, 3 << 20),
            (size - 1500, 1500),
        ];
        sparse_raw(&raw, size, &pieces, 7);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&raw)
            .expect("raw");
        f.write_all_at(&vec![0u8; 1 << 20], 900 << 20)
            .expect("zeros");
        let stats = round_trip(&d, "sparse", &raw);
        // Clusters 0 and 1 (65000..66000 crosses into 1), 8191 and 8192, 48 at
        // 700 MiB, and the last two (24575 and the short 24576).
        assert_eq!(stats.data_clusters, 2 + 2 + 48 + 2, "{stats:?}");
        assert_eq!(stats.l2_tables, 4, "{stats:?}");
        // Header, L1, data, L2 tables, the refcount table and one block.
        assert_eq!(
            stats.file_size,
            (2 + stats.data_clusters + 4 + 2) * CLUSTER,
            "{stats:?}"
        );
        assert!(stats.read < 8 << 20, "holes are not read: {stats:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn zeros_empty_and_short_disks_round_trip() {
        let d = tmpdir("edges");
        for (name, size, pieces) in [
            ("zeros", 64u64 << 20, &[][..]),
            ("empty", 0, &[][..]),
            ("tiny", 1000, &[(10u64, 20usize)][..]),
            ("short", (1 << 20) + 4097, &[(1 << 20, 4097)][..]),
        ] {
            let raw = d.join(format!("{name}.raw"));
            sparse_raw(&raw, size, pieces, 3);
            let stats = round_trip(&d, name, &raw);
            if pieces.is_empty() {
                assert_eq!((stats.data_clusters, stats.l2_tables), (0, 0), "{name}");
                // Header, L1 (none when empty), refcount table and block.
                let l1 = u64::from(size > 0);
                assert_eq!(stats.file_size, (3 + l1) * CLUSTER, "{name}");
            }
        }
        // A dense file (every byte data, no holes) of a few clusters.
        let raw = d.join("dense.raw");
        let mut dense = vec![0u8; 5 * CLUSTER as usize + 77];
        for (i, b) in dense.iter_mut().enumerate() {
            *b = (i % 253) as u8 | 1;
        }
        std::fs::write(&raw, &dense).expect("dense");
        let stats = round_trip(&d, "dense", &raw);
        assert_eq!(stats.data_clusters, 6);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_limit_stops_the_write_and_leaves_no_file() {
        let d = tmpdir("limit");
        let raw = d.join("disk.raw");
        sparse_raw(&raw, 8 << 20, &[(0, 4 << 20)], 1);
        let q = d.join("disk.qcow2");
        let e = write_file(&raw, &q, 1 << 20).expect_err("over the limit");
        assert!(matches!(e, Qcow2WriteError::OverLimit(_)), "{e}");
        assert!(!q.exists());
        let stats = write_file(&raw, &q, 5 << 20).expect("under the limit");
        assert!(stats.file_size <= 5 << 20);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refcounts_cover_themselves() {
        assert_eq!(refcount_layout(3), (1, 1));
        // Just under a full block: the two refcount clusters need a second block.
        assert_eq!(refcount_layout(PER_REFBLOCK - 1), (1, 2));
        assert_eq!(refcount_layout(PER_REFBLOCK - 2), (1, 1));
        let (t, b) = refcount_layout(PER_REFBLOCK * PER_REFTABLE);
        assert!(b * PER_REFBLOCK >= PER_REFBLOCK * PER_REFTABLE + t + b);
        assert!(t * PER_REFTABLE >= b);
        assert_eq!(t, 2);
    }
}
