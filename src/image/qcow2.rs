//! A qcow2 reader (versions 2 and 3) and its one use: converting an uploaded
//! qcow2 image once into a sparse raw base that servers' root disks are cloned
//! from (see docs/compute.md, "Root disks from qcow2 images").
//!
//! Read: L1 and L2 tables, standard clusters, all-zero clusters (v3), and
//! compressed clusters (deflate, or zstd when the header says so). Refcounts
//! are ignored (reading never needs them). Refused with a clear error: a
//! backing file, an external data file, encryption, extended L2 entries,
//! images marked corrupt, unknown incompatible features.
//!
//! The input is untrusted: every offset is checked against the file, table
//! sizes are capped, an L2 table used twice is refused (a loop that would make
//! the conversion run for ever), and the bytes read or decompressed (all-zero
//! clusters included) are capped at what the file can hold after the best
//! compression ratio deflate allows, so time and memory stay proportional to
//! the uploaded file: at most 1032 × its size plus one cluster is processed,
//! and three clusters (≤ 2 MiB each) plus the used part of the L1 table (≤ 32
//! MiB, and never more than the file) are held in memory.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Why a qcow2 image cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// The header is not a qcow2 header or is inconsistent.
    #[error("corrupt qcow2 image: {0}")]
    Corrupt(String),
    /// A feature this reader refuses.
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
    /// Reading the image or writing the raw copy failed.
    #[error("qcow2 conversion I/O error: {0}")]
    Io(#[from] io::Error),
}

type Result<T> = std::result::Result<T, Qcow2Error>;

/// Something qcow2 data can be read from at offsets (a file, a byte slice).
pub trait Source {
    /// The size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; an error past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl Source for [u8] {
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

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// The largest virtual size accepted (qemu's own limit is 2 EiB; 64 TiB is
/// far beyond any root disk).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// The largest L1 table (qemu: 32 MiB).
const MAX_L1_BYTES: u64 = 32 << 20;
/// Deflate's best ratio is about 1032:1; zstd can do better on zeros, but a
/// zero cluster needs no compression (it is a hole or an all-zero entry).
pub const MAX_EXPANSION: u64 = 1032;

const INCOMPAT_DIRTY: u64 = 1;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

/// Compressed cluster encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (qemu's default).
    Deflate,
    /// A zstd frame.
    Zstd,
}

/// The parts of a qcow2 header the reader uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size (9..=21).
    pub cluster_bits: u32,
    /// The disk's size as the guest sees it.
    pub virtual_size: u64,
    /// Entries in the L1 table.
    pub l1_size: u64,
    /// Where the L1 table is.
    pub l1_offset: u64,
    /// How compressed clusters are encoded.
    pub compression: Compression,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

fn corrupt(m: impl Into<String>) -> Qcow2Error {
    Qcow2Error::Corrupt(m.into())
}

fn unsupported(m: impl Into<String>) -> Qcow2Error {
    Qcow2Error::Unsupported(m.into())
}

/// Parses and checks the header.
pub fn parse_header<S: Source + ?Sized>(src: &S) -> Result<Header> {
    let file_size = src.size();
    let mut h = [0u8; 112];
    let n = file_size.min(h.len() as u64) as usize;
    src.read_at(&mut h[..n], 0)?;
    if n < 72 || &h[0..4] != MAGIC {
        return Err(corrupt("no qcow2 header"));
    }
    let version = be32(&h, 4);
    if version != 2 && version != 3 {
        return Err(unsupported(format!("version {version}")));
    }
    if be64(&h, 8) != 0 || be32(&h, 16) != 0 {
        return Err(unsupported("a backing file"));
    }
    let cluster_bits = be32(&h, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(format!("cluster_bits {cluster_bits}")));
    }
    let virtual_size = be64(&h, 24);
    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err(unsupported(format!(
            "virtual size {virtual_size} is over {} TiB",
            MAX_VIRTUAL_SIZE >> 40
        )));
    }
    if be32(&h, 32) != 0 {
        return Err(unsupported("encryption"));
    }
    let l1_size = u64::from(be32(&h, 36));
    let l1_offset = be64(&h, 40);
    let mut compression = Compression::Deflate;
    if version == 3 {
        if n < 104 {
            return Err(corrupt("truncated v3 header"));
        }
        let incompat = be64(&h, 72);
        let header_length = be32(&h, 100);
        if incompat & INCOMPAT_CORRUPT != 0 {
            return Err(corrupt("the image is marked corrupt"));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            return Err(unsupported("an external data file"));
        }
        if incompat & INCOMPAT_EXTL2 != 0 {
            return Err(unsupported("extended L2 entries (subclusters)"));
        }
        let known = INCOMPAT_DIRTY | INCOMPAT_COMPRESSION;
        if incompat & !known != 0 {
            return Err(unsupported(format!(
                "incompatible features {:#x}",
                incompat & !known
            )));
        }
        if incompat & INCOMPAT_COMPRESSION != 0 {
            if header_length < 105 || n < 105 {
                return Err(corrupt("compression type bit without the header field"));
            }
            compression = match h[104] {
                0 => Compression::Deflate,
                1 => Compression::Zstd,
                t => return Err(unsupported(format!("compression type {t}"))),
            };
        }
    }
    let cluster = 1u64 << cluster_bits;
    let per_l2 = cluster / 8;
    let needed = virtual_size.div_ceil(cluster).div_ceil(per_l2);
    if l1_size < needed {
        return Err(corrupt(format!(
            "L1 table of {l1_size} entries for a disk that needs {needed}"
        )));
    }
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(corrupt(format!("L1 table of {l1_size} entries")));
    }
    if needed > 0
        && (!l1_offset.is_multiple_of(cluster) || l1_offset.saturating_add(needed * 8) > file_size)
    {
        return Err(corrupt("L1 table outside the file"));
    }
    Ok(Header {
        version,
        cluster_bits,
        virtual_size,
        l1_size,
        l1_offset,
        compression,
    })
}

/// What a conversion did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The disk's size.
    pub virtual_size: u64,
    /// Clusters copied as they are.
    pub clusters: u64,
    /// Clusters decompressed.
    pub compressed: u64,
    /// Bytes written (all-zero clusters are left as holes).
    pub written: u64,
    /// Bytes read or decompressed, all-zero clusters included (at most the file's size
    /// times [`MAX_EXPANSION`], plus one cluster).
    pub processed: u64,
}

fn decompress(kind: Compression, input: &[u8], out: &mut [u8]) -> Result<()> {
    match kind {
        Compression::Deflate => {
            let mut d = flate2::Decompress::new(false);
            let status = d
                .decompress(input, out, flate2::FlushDecompress::Finish)
                .map_err(|e| corrupt(format!("compressed cluster: {e}")))?;
            // qemu accepts a stream that fills the cluster even when the
            // input continues (the sector padding).
            if d.total_out() != out.len() as u64 {
                return Err(corrupt(format!("compressed cluster ({status:?}) is short")));
            }
        }
        Compression::Zstd => {
            use std::io::Read;
            let mut dec = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| corrupt(format!("compressed cluster: {e}")))?;
            let mut filled = 0;
            while filled < out.len() {
                let n = dec
                    .read(&mut out[filled..])
                    .map_err(|e| corrupt(format!("compressed cluster: {e}")))?;
                if n == 0 {
                    return Err(corrupt("compressed cluster is short"));
                }
                filled += n;
            }
        }
    }
    Ok(())
}

/// Reads every allocated cluster of `src` and hands it to `sink` as
/// (guest offset, data). All-zero clusters and holes are not handed over: the
/// sink's target must read as zeros where nothing is written.
pub fn convert<S, F>(src: &S, mut sink: F) -> Result<Stats>
where
    S: Source + ?Sized,
    F: FnMut(u64, &[u8]) -> io::Result<()>,
{
    let h = parse_header(src)?;
    let file_size = src.size();
    let cluster = 1u64 << h.cluster_bits;
    let cs = cluster as usize;
    let per_l2 = cluster / 8;
    let budget = file_size
        .saturating_mul(MAX_EXPANSION)
        .saturating_add(cluster);
    let mut stats = Stats {
        virtual_size: h.virtual_size,
        ..Stats::default()
    };
    let l1_used = h.virtual_size.div_ceil(cluster).div_ceil(per_l2);
    let mut l1 = vec![0u8; (l1_used * 8) as usize];
    src.read_at(&mut l1, h.l1_offset)?;
    let mut l2 = vec![0u8; cs];
    let mut data = vec![0u8; cs];
    let mut packed = vec![0u8; cs + 1024];
    let mut seen_l2 = HashSet::new();
    // The compressed-size field's position depends on the cluster size.
    let x = 62 - (h.cluster_bits - 8);
    let comp_offset_mask = (1u64 << x) - 1;
    for (i, e) in l1.chunks_exact(8).enumerate() {
        let l2_offset = be64(e, 0) & L1_OFFSET_MASK;
        if l2_offset == 0 {
            continue;
        }
        if !l2_offset.is_multiple_of(cluster) || l2_offset.saturating_add(cluster) > file_size {
            return Err(corrupt(format!("L1 entry {i}: L2 table outside the file")));
        }
        if !seen_l2.insert(l2_offset) {
            return Err(corrupt(format!("L1 entry {i}: L2 table used twice")));
        }
        src.read_at(&mut l2, l2_offset)?;
        for (j, e) in l2.chunks_exact(8).enumerate() {
            let guest = (i as u64 * per_l2 + j as u64) * cluster;
            if guest >= h.virtual_size {
                break;
            }
            let entry = be64(e, 0);
            let len = cluster.min(h.virtual_size - guest) as usize;
            if entry & L2_COMPRESSED != 0 {
                let host = entry & comp_offset_mask;
                let sectors = ((entry & !L2_COMPRESSED & !(1 << 63)) >> x) + 1;
                let size = (sectors * 512 - (host & 511)).min(cs as u64 + 1024);
                let size = size.min(file_size.saturating_sub(host)) as usize;
                if size == 0 {
                    return Err(corrupt(format!(
                        "compressed cluster at {guest}: outside the file"
                    )));
                }
                src.read_at(&mut packed[..size], host)?;
                decompress(h.compression, &packed[..size], &mut data)?;
                stats.compressed += 1;
            } else {
                if entry & L2_ZERO != 0 && h.version == 3 {
                    continue;
                }
                let host = entry & L2_OFFSET_MASK;
                if host == 0 {
                    continue;
                }
                if !host.is_multiple_of(cluster) || host >= file_size {
                    return Err(corrupt(format!("cluster at {guest}: outside the file")));
                }
                // The last cluster of a file may be short (qemu does not pad).
                let avail = (file_size - host).min(cluster) as usize;
                data[avail..].fill(0);
                src.read_at(&mut data[..avail], host)?;
                stats.clusters += 1;
            }
            // Every cluster read or decompressed counts, all-zero ones too: L2 entries that
            // all name one host cluster (or one compressed cluster of zeros) would otherwise
            // make a small file take hours to read while writing nothing.
            stats.processed += len as u64;
            if stats.processed > budget {
                return Err(corrupt(
                    "the image expands to more data than its file can hold",
                ));
            }
            if data[..len].iter().all(|b| *b == 0) {
                continue;
            }
            stats.written += len as u64;
            sink(guest, &data[..len])?;
        }
    }
    Ok(stats)
}

/// Converts the qcow2 file `src` into a sparse raw file `dest`: written to a
/// temporary file beside it, synced, then renamed, so an interrupted
/// conversion leaves no half-made `dest`.
pub fn convert_file(src: &Path, dest: &Path) -> Result<Stats> {
    let input = std::fs::File::open(src)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per conversion: two builds from one image may convert at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dest.with_file_name(format!(".{name}.{}-{seq}.tmp", std::process::id()));
    let result = (|| {
        let out = std::fs::File::create(&tmp)?;
        let h = parse_header(&input)?;
        out.set_len(h.virtual_size)?;
        let stats = convert(&input, |at, data| out.write_all_at(data, at))?;
        out.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where the raw base of image `id` is kept: `<state>/images-raw/<id>.raw`,
/// beside the image data directory `images_dir` (`<state>/images`).
pub fn raw_base_path(images_dir: &Path, id: &str) -> std::path::PathBuf {
    images_dir
        .with_file_name("images-raw")
        .join(format!("{id}.raw"))
}

/// Removes temporary files an interrupted conversion left in `dir` (those
/// older than an hour: a conversion may be running now).
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if old && name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod fuzzing;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img() -> bool {
        let ok = Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("qemu-img is missing (Debian: qemu-utils): skipping");
        }
        ok
    }

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("yunhe-qcow2-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    /// A raw disk with data in places, including a short tail cluster.
    fn raw_image(path: &Path, size: u64) -> Vec<u8> {
        let mut data = vec![0u8; size as usize];
        let mut x = 0x1234_5678u32;
        for (at, len) in [
            (0usize, 4096usize),
            (70_000, 200_000),
            (size as usize - 3000, 3000),
        ] {
            for b in &mut data[at..at + len] {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                // Half random, half repetitive: some clusters compress, some not.
                *b = if at == 70_000 {
                    (x >> 24) as u8
                } else {
                    (at % 251) as u8
                };
            }
        }
        std::fs::write(path, &data).expect("raw");
        data
    }

    fn qemu_convert(raw: &Path, out: &Path, opts: &[&str]) {
        let st = Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .args(opts)
            .arg(raw)
            .arg(out)
            .status()
            .expect("qemu-img");
        assert!(st.success(), "qemu-img convert {opts:?}");
    }

    #[test]
    fn converts_what_qemu_img_writes() {
        if !qemu_img() {
            return;
        }
        let d = tmpdir("qemu");
        let size = (4 << 20) + 1536; // not a multiple of the cluster size
        let raw = d.join("disk.raw");
        let expect = raw_image(&raw, size);
        let cases: &[(&str, &[&str])] = &[
            ("v3", &[]),
            ("v2", &["-o", "compat=0.10"]),
            ("v3c", &["-c"]),
            ("v2c", &["-c", "-o", "compat=0.10"]),
            ("small", &["-c", "-o", "cluster_size=512"]),
            ("big", &["-c", "-o", "cluster_size=2M"]),
            ("zstd", &["-c", "-o", "compression_type=zstd"]),
        ];
        for (name, opts) in cases {
            let q = d.join(format!("{name}.qcow2"));
            qemu_convert(&raw, &q, opts);
            let out = d.join(format!("{name}.raw"));
            let stats = convert_file(&q, &out).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(stats.virtual_size, size, "{name}");
            let got = std::fs::read(&out).expect("out");
            assert!(got == expect, "{name}: the raw copy differs");
            if opts.contains(&"-c") {
                assert!(stats.compressed > 0, "{name}: {stats:?}");
            }
        }
        // A backing file is refused.
        let b = d.join("overlay.qcow2");
        let st = Command::new("qemu-img")
            .args(["create", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(d.join("v3.qcow2"))
            .arg(&b)
            .output()
            .expect("qemu-img");
        assert!(st.status.success());
        let e = convert_file(&b, &d.join("overlay.raw")).expect_err("backing");
        assert!(e.to_string().contains("backing file"), "{e}");
        assert!(!d.join("overlay.raw").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Conversion throughput against `qemu-img convert` on the same image
    /// (printed; run with --nocapture). Only a gross regression fails (10×):
    /// the figures are for docs/compute.md, on a shared machine.
    #[test]
    fn throughput_against_qemu_img() {
        if !qemu_img() {
            return;
        }
        let d = tmpdir("bench");
        let size = 64u64 << 20;
        let raw = d.join("disk.raw");
        let mut data = vec![0u8; size as usize];
        let mut x = 7u32;
        for (i, b) in data.iter_mut().enumerate() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // Text-like: compresses about 3:1, as a root filesystem does.
            *b = if i % 4096 < 3000 {
                b'a' + (x >> 28) as u8
            } else {
                0
            };
        }
        std::fs::write(&raw, &data).expect("raw");
        for (name, opts) in [("plain", &[][..]), ("compressed", &["-c"][..])] {
            let q = d.join(format!("{name}.qcow2"));
            qemu_convert(&raw, &q, opts);
            let t = std::time::Instant::now();
            convert_file(&q, &d.join("ours.raw")).expect("convert");
            let ours = t.elapsed();
            let t = std::time::Instant::now();
            let st = Command::new("qemu-img")
                .args(["convert", "-f", "qcow2", "-O", "raw"])
                .arg(&q)
                .arg(d.join("theirs.raw"))
                .status()
                .expect("qemu-img");
            let theirs = t.elapsed();
            assert!(st.success());
            let mib = (size >> 20) as f64;
            eprintln!(
                "qcow2 {name} → raw, {} MiB: yunhe {:.0} MiB/s, qemu-img {:.0} MiB/s",
                size >> 20,
                mib / ours.as_secs_f64(),
                mib / theirs.as_secs_f64()
            );
            assert!(ours < theirs * 10 + std::time::Duration::from_secs(1));
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A v3 header with 512-byte clusters, L1 at 512, L2 at 1024.
    fn handmade(virtual_size: u64) -> Vec<u8> {
        let mut f = vec![0u8; 2048];
        f[0..4].copy_from_slice(MAGIC);
        f[4..8].copy_from_slice(&3u32.to_be_bytes());
        f[20..24].copy_from_slice(&9u32.to_be_bytes());
        f[24..32].copy_from_slice(&virtual_size.to_be_bytes());
        f[36..40].copy_from_slice(&1u32.to_be_bytes());
        f[40..48].copy_from_slice(&512u64.to_be_bytes());
        f[96..100].copy_from_slice(&4u32.to_be_bytes());
        f[100..104].copy_from_slice(&104u32.to_be_bytes());
        f[512..520].copy_from_slice(&1024u64.to_be_bytes());
        f
    }

    fn run(f: &[u8]) -> Result<Stats> {
        convert(f, |_, _| Ok(()))
    }

    #[test]
    fn hostile_images_are_errors() {
        // Sane: one data cluster at 1536.
        let mut ok = handmade(1024);
        ok[1024..1032].copy_from_slice(&1536u64.to_be_bytes());
        ok[1536] = 1;
        assert_eq!(run(&ok).expect("ok").written, 512);

        let mut bad = ok.clone();
        bad[1024..1032].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(run(&bad).is_err(), "data cluster past the end");

        let mut bad = ok.clone();
        bad[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert!(run(&bad).is_err(), "absurd cluster bits");

        let mut bad = ok.clone();
        bad[24..32].copy_from_slice(&(u64::MAX).to_be_bytes());
        assert!(run(&bad).is_err(), "absurd virtual size");

        let mut bad = ok.clone();
        bad[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        assert!(run(&bad).is_err(), "L1 too small for the size");

        let mut bad = ok.clone();
        bad[32..36].copy_from_slice(&1u32.to_be_bytes());
        assert!(
            matches!(run(&bad), Err(Qcow2Error::Unsupported(m)) if m == "encryption"),
            "encryption"
        );

        let mut bad = ok.clone();
        bad[79] = INCOMPAT_EXTL2 as u8;
        assert!(run(&bad).is_err(), "extended L2");

        let mut bad = ok.clone();
        bad[79] = INCOMPAT_CORRUPT as u8;
        assert!(run(&bad).is_err(), "marked corrupt");

        // Two L1 entries naming the same L2 table: a loop.
        let mut bad = handmade(64 * 512 * 2);
        bad[36..40].copy_from_slice(&2u32.to_be_bytes());
        bad[520..528].copy_from_slice(&1024u64.to_be_bytes());
        assert!(
            run(&bad).is_err_and(|e| e.to_string().contains("twice")),
            "shared L2"
        );

        // A compressed cluster of garbage.
        let mut bad = ok.clone();
        let desc = L2_COMPRESSED | 1536;
        bad[1024..1032].copy_from_slice(&desc.to_be_bytes());
        bad[1536..2048].fill(0xff);
        assert!(run(&bad).is_err(), "garbage compressed data");

        // Every L2 entry pointing at the same data cluster of a huge disk:
        // the output budget stops it.
        let mut bomb = handmade(64 * 512);
        for j in 0..64 {
            bomb[1024 + j * 8..1032 + j * 8].copy_from_slice(&1536u64.to_be_bytes());
        }
        bomb[1536] = 7;
        assert!(
            run(&bomb).is_ok(),
            "64 references fit the budget of 2 KiB × 1032"
        );

        // Truncated everywhere: never a panic.
        for n in 0..ok.len() {
            let _ = run(&ok[..n]);
        }
    }

    /// Regression: an L2 table whose entries all name one host cluster of zeros wrote
    /// nothing, so the output budget never stopped it: 64 KiB clusters, one L2 table of 8,192
    /// entries, a 256 KiB file read as 512 MiB (with 2 MiB clusters, 512 GiB per L2 table).
    /// Reads now count against the budget whether they are zero or not.
    #[test]
    fn clusters_of_zeros_named_many_times_hit_the_budget() {
        let cluster = 1usize << 16;
        let mut f = vec![0u8; 4 * cluster];
        f[0..4].copy_from_slice(MAGIC);
        f[4..8].copy_from_slice(&2u32.to_be_bytes());
        f[20..24].copy_from_slice(&16u32.to_be_bytes());
        let virtual_size = (cluster / 8 * cluster) as u64;
        f[24..32].copy_from_slice(&virtual_size.to_be_bytes());
        f[36..40].copy_from_slice(&1u32.to_be_bytes());
        f[40..48].copy_from_slice(&(cluster as u64).to_be_bytes());
        f[cluster..cluster + 8].copy_from_slice(&(2 * cluster as u64).to_be_bytes());
        for j in 0..cluster / 8 {
            let at = 2 * cluster + j * 8;
            f[at..at + 8].copy_from_slice(&(3 * cluster as u64).to_be_bytes());
        }
        let r = run(&f);
        assert!(
            r.as_ref()
                .is_err_and(|e| e.to_string().contains("more data than its file")),
            "{r:?}"
        );
    }
}
