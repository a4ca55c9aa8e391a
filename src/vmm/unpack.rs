//! Kernel unpacking: the uncompressed, PVH-bootable vmlinux inside a bzImage.
//!
//! A bzImage carries the kernel proper as a compressed ELF (the setup header's
//! `payload_offset`/`payload_length`, boot protocol 2.08+) behind a small
//! decompressor that the guest runs first. When that ELF has the PVH entry note
//! (CONFIG_PVH, as Debian's, Ubuntu's and yunhe's own micro kernels have), yunhe
//! can decompress it once on the host, cache it, and boot the ELF directly: the
//! guest skips its own decompression, which is the largest single step of a
//! small guest's boot when instructions are slow (nested or emulated
//! virtualization) and a few hundred milliseconds on hardware. Firecracker boots
//! uncompressed kernels for the same reason.
//!
//! Trade-off: the PVH entry bypasses the decompressor, and with it the guest
//! kernel's own physical-address randomization (KASLR); the guest still
//! randomizes its virtual layout where it supports that. Operators who want the
//! kernel exactly as shipped turn unpacking off (`yunhe vm run
//! --boot-compressed`, `yunhe serve --boot-compressed-kernels`).
//!
//! The input is untrusted (any project's Glance kernel image): parsing only
//! reads within the file, every decoder is memory-safe Rust, and the output is
//! capped at [`MAX_VMLINUX`]. Anything unexpected means "boot the bzImage as
//! it is", never an error for the guest.
//!
//! Formats: gzip, xz (with the x86 BCJ filter the kernel's build uses), LZ4 in
//! the kernel's legacy framing, and zstd. bzip2, lzma and lzo kernels boot
//! compressed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The largest vmlinux yunhe writes (distribution kernels are 40–70 MiB).
pub const MAX_VMLINUX: usize = 256 << 20;
/// The largest bzImage yunhe reads to unpack.
const MAX_BZIMAGE: u64 = 128 << 20;

/// Errors while unpacking (reported, then the bzImage boots as it is).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Cannot read or write a file.
    #[error("{0}: {1}")]
    Io(String, io::Error),
    /// The payload does not decompress.
    #[error("the kernel payload ({0}) does not decompress: {1}")]
    Decompress(&'static str, String),
    /// The decompressed payload is larger than [`MAX_VMLINUX`].
    #[error("the decompressed kernel is larger than {} MiB", MAX_VMLINUX >> 20)]
    TooLarge,
}

/// The compression of a bzImage payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (RFC 1952).
    Gzip,
    /// xz.
    Xz,
    /// LZ4, legacy framing (`lz4 -l`).
    Lz4Legacy,
    /// zstd.
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lz4Legacy => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    fn detect(payload: &[u8]) -> Option<Compression> {
        match payload {
            [0x1f, 0x8b, ..] => Some(Compression::Gzip),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Compression::Xz),
            [0x02, 0x21, 0x4c, 0x18, ..] => Some(Compression::Lz4Legacy),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
            _ => None,
        }
    }
}

fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The compressed payload of a bzImage and its compression; `None` when `image`
/// is not a bzImage with a payload yunhe can decompress.
pub fn bzimage_payload(image: &[u8]) -> Option<(&[u8], Compression)> {
    setup_header_ok(image)?;
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let protected_mode = (setup_sects + 1) * 512;
    let offset = usize::try_from(le_u32(image, 0x248)?).ok()?;
    let length = usize::try_from(le_u32(image, 0x24c)?).ok()?;
    let start = protected_mode.checked_add(offset)?;
    let payload = image.get(start..start.checked_add(length)?)?;
    Some((payload, Compression::detect(payload)?))
}

/// A writer that refuses to grow past [`MAX_VMLINUX`].
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len().saturating_add(buf.len()) > MAX_VMLINUX {
            return Err(io::Error::other("too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads `reader` to its end through the cap.
fn read_capped(mut reader: impl Read, what: Compression) -> Result<Vec<u8>, UnpackError> {
    let mut out = Capped(Vec::new());
    match io::copy(&mut reader, &mut out) {
        Ok(_) => Ok(out.0),
        Err(_) if out.0.len() >= MAX_VMLINUX - (1 << 20) => Err(UnpackError::TooLarge),
        Err(e) => Err(UnpackError::Decompress(what.name(), e.to_string())),
    }
}

/// Decompresses a payload (the kernel appends its uncompressed size; decoders
/// stop at the end of their stream and ignore it).
pub fn decompress(payload: &[u8], what: Compression) -> Result<Vec<u8>, UnpackError> {
    match what {
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(payload), what),
        Compression::Xz => {
            // The kernel's build uses a 32 MiB dictionary; refuse to allocate
            // more than twice that for a hostile header.
            let decoder = xz4rust::XzDecoder::in_heap_with_alloc_dict_size(1 << 20, 64 << 20);
            let buffer =
                std::num::NonZeroUsize::new(64 << 10).unwrap_or(std::num::NonZeroUsize::MIN);
            let reader = xz4rust::XzReader::new_with_buffer_size_and_decoder(
                io::Cursor::new(payload.to_vec()),
                buffer,
                decoder,
            );
            read_capped(reader, what)
        }
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(payload)
                .map_err(|e| UnpackError::Decompress(what.name(), e.to_string()))?;
            read_capped(decoder, what)
        }
        Compression::Lz4Legacy => lz4_legacy(payload),
    }
}

/// LZ4's legacy framing: the magic, then blocks of (little-endian u32 size,
/// compressed bytes), each decompressing to at most 8 MiB; it ends at the
/// input's end or at a size that is not a block (the kernel's trailing
/// uncompressed size, or the next magic).
fn lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, UnpackError> {
    const BLOCK_MAX: usize = 8 << 20;
    let mut out = Vec::new();
    let mut at = 4;
    while let Some(size) = le_u32(payload, at) {
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if size == 0 {
            break;
        }
        let Some(block) = at
            .checked_add(4)
            .and_then(|s| payload.get(s..s.checked_add(size)?))
        else {
            break; // not a block: the trailer
        };
        if size == 0x184c_2102 {
            break;
        }
        let start = out.len();
        if start + BLOCK_MAX > MAX_VMLINUX {
            return Err(UnpackError::TooLarge);
        }
        out.resize(start + BLOCK_MAX, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| UnpackError::Decompress("lz4", e.to_string()))?;
        out.truncate(start + n);
        at += 4 + size;
    }
    if out.is_empty() {
        return Err(UnpackError::Decompress("lz4", "no blocks".into()));
    }
    Ok(out)
}

/// Whether `elf` is a 64-bit x86 ELF with a Xen PVH entry note
/// (XEN_ELFNOTE_PHYS32_ENTRY), i.e. bootable through PVH.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    pvh_note(elf).unwrap_or(false)
}

fn pvh_note(elf: &[u8]) -> Option<bool> {
    if elf.get(0..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return Some(false);
    }
    let machine = u16::from_le_bytes(elf.get(18..20)?.try_into().ok()?);
    if machine != 62 {
        return Some(false);
    }
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(32..40)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16::from_le_bytes(elf.get(54..56)?.try_into().ok()?));
    let phnum = usize::from(u16::from_le_bytes(elf.get(56..58)?.try_into().ok()?));
    if phentsize < 56 {
        return Some(false);
    }
    for i in 0..phnum {
        let ph = elf.get(phoff.checked_add(i.checked_mul(phentsize)?)?..)?;
        let p_type = le_u32(ph, 0)?;
        if p_type != 4 {
            continue; // PT_NOTE
        }
        let off = usize::try_from(u64::from_le_bytes(ph.get(8..16)?.try_into().ok()?)).ok()?;
        let size = usize::try_from(u64::from_le_bytes(ph.get(32..40)?.try_into().ok()?)).ok()?;
        let mut notes = elf.get(off..off.checked_add(size)?)?;
        while notes.len() >= 12 {
            let namesz = usize::try_from(le_u32(notes, 0)?).ok()?;
            let descsz = usize::try_from(le_u32(notes, 4)?).ok()?;
            let kind = le_u32(notes, 8)?;
            let name_end = 12usize.checked_add(namesz)?;
            let name = notes.get(12..name_end)?;
            let desc_start = name_end.checked_add(3)? & !3;
            let next = desc_start.checked_add(descsz)?.checked_add(3)? & !3;
            // XEN_ELFNOTE_PHYS32_ENTRY = 18, owner "Xen"
            if kind == 18 && name.starts_with(b"Xen") {
                return Some(true);
            }
            notes = notes.get(next.min(notes.len())..)?;
        }
    }
    Some(false)
}

/// The uncompressed PVH vmlinux inside `image`, or `None` when `image` is not a
/// bzImage whose payload unpacks to one.
pub fn unpack(image: &[u8]) -> Result<Option<Vec<u8>>, UnpackError> {
    let Some((payload, what)) = bzimage_payload(image) else {
        return Ok(None);
    };
    let elf = decompress(payload, what)?;
    Ok(has_pvh_note(&elf).then_some(elf))
}

/// The kernel to boot for `kernel`: its cached uncompressed vmlinux in
/// `cache_dir` (written on first use, named after the file's identity), or
/// `kernel` itself when it is not an unpackable bzImage. Never fails: a
/// problem is returned beside `kernel` for the caller to log.
pub fn cached_vmlinux(kernel: &Path, cache_dir: &Path) -> (PathBuf, Option<UnpackError>) {
    match try_cached_vmlinux(kernel, cache_dir) {
        Ok(Some(p)) => (p, None),
        Ok(None) => (kernel.to_path_buf(), None),
        Err(e) => (kernel.to_path_buf(), Some(e)),
    }
}

fn try_cached_vmlinux(kernel: &Path, cache_dir: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let io_err = |what: &Path| {
        let what = what.display().to_string();
        move |e| UnpackError::Io(what, e)
    };
    let mut file = File::open(kernel).map_err(io_err(kernel))?;
    let meta = file.metadata().map_err(io_err(kernel))?;
    if !meta.is_file() || meta.len() > MAX_BZIMAGE {
        return Ok(None);
    }
    // A bzImage starts its setup header within the first 1 KiB.
    let mut head = [0u8; 0x250];
    if file.read_exact(&mut head).is_err() || setup_header_ok(&head).is_none() {
        return Ok(None);
    }
    // The file's identity, not its content: Glance data and recipe outputs are
    // replaced, never rewritten in place, so (device, inode, size, mtime) names
    // one content without hashing megabytes on every boot.
    let key = format!(
        "{:x}-{:x}-{:x}-{:x}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let cached = cache_dir.join(format!("{key}.vmlinux"));
    let none = cache_dir.join(format!("{key}.none"));
    if cached.is_file() {
        return Ok(Some(cached));
    }
    if none.exists() {
        return Ok(None);
    }
    let mut image = head.to_vec();
    file.read_to_end(&mut image).map_err(io_err(kernel))?;
    std::fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let Some(vmlinux) = unpack(&image)? else {
        // remember: this bzImage has nothing to unpack
        let _ = File::create(&none);
        return Ok(None);
    };
    let tmp = cache_dir.join(format!("{key}.tmp{}", std::process::id()));
    // written aside and renamed: a failure halfway leaves no partial kernel
    if let Err(e) = std::fs::write(&tmp, &vmlinux) {
        let _ = std::fs::remove_file(&tmp);
        return Err(UnpackError::Io(tmp.display().to_string(), e));
    }
    if let Err(e) = std::fs::rename(&tmp, &cached) {
        let _ = std::fs::remove_file(&tmp);
        return Err(UnpackError::Io(cached.display().to_string(), e));
    }
    Ok(Some(cached))
}

/// Whether `image` starts with a bzImage setup header of boot protocol 2.08+
/// (Documentation/arch/x86/boot.rst: boot_flag 0xAA55 at 0x1FE, "HdrS" at
/// 0x202, the version at 0x206), the first protocol with `payload_offset`.
fn setup_header_ok(image: &[u8]) -> Option<()> {
    (image.get(0x1fe..0x200)? == [0x55, 0xaa]
        && image.get(0x202..0x206)? == b"HdrS"
        && u16::from_le_bytes(image.get(0x206..0x208)?.try_into().ok()?) >= 0x208)
        .then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage-shaped buffer around `payload`.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4u8;
        let pm = (usize::from(setup_sects) + 1) * 512;
        let mut img = vec![0u8; pm + 100 + payload.len() + 4];
        img[0x1f1] = setup_sects;
        img[0x1fe] = 0x55;
        img[0x1ff] = 0xaa;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&100u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        img[pm + 100..pm + 100 + payload.len()].copy_from_slice(payload);
        img
    }

    /// A minimal ELF64 x86-64 with one PT_NOTE holding the PVH entry note.
    fn fake_pvh_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56 + 24];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        elf[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        elf[ph + 32..ph + 40].copy_from_slice(&24u64.to_le_bytes());
        let n = 120;
        elf[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
        elf[n + 4..n + 8].copy_from_slice(&8u32.to_le_bytes());
        elf[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes());
        elf[n + 12..n + 16].copy_from_slice(b"Xen\0");
        elf
    }

    #[test]
    fn gzip_payload_with_a_pvh_note_unpacks() {
        let elf = fake_pvh_elf();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).expect("gzip");
        let img = fake_bzimage(&gz.finish().expect("gzip"));
        let (_, what) = bzimage_payload(&img).expect("payload");
        assert_eq!(what, Compression::Gzip);
        assert_eq!(unpack(&img).expect("unpack"), Some(elf));
    }

    #[test]
    fn lz4_legacy_payload_unpacks() {
        let elf = fake_pvh_elf();
        let block = lz4_flex::block::compress(&elf);
        let mut payload = vec![0x02, 0x21, 0x4c, 0x18];
        payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
        payload.extend_from_slice(&block);
        let img = fake_bzimage(&payload);
        assert_eq!(unpack(&img).expect("unpack"), Some(elf));
    }

    #[test]
    fn an_elf_without_the_note_is_not_unpacked() {
        let mut elf = fake_pvh_elf();
        elf[128..132].copy_from_slice(&17u32.to_le_bytes());
        assert!(!has_pvh_note(&elf));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).expect("gzip");
        let img = fake_bzimage(&gz.finish().expect("gzip"));
        assert_eq!(unpack(&img).expect("unpack"), None);
    }

    #[test]
    fn hostile_headers_never_panic() {
        let mut img = fake_bzimage(&[0x1f, 0x8b, 1, 2, 3]);
        assert!(unpack(&img).is_err());
        // payload beyond the end of the file
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(unpack(&img).expect("not a payload"), None);
        img[0x248..0x24c].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(unpack(&img).expect("not a payload"), None);
        // truncated files and ELF headers pointing anywhere
        for n in 0..img.len().min(0x300) {
            let _ = unpack(&img[..n]);
        }
        let mut elf = fake_pvh_elf();
        elf[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!has_pvh_note(&elf));
        let mut elf = fake_pvh_elf();
        elf[120..124].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!has_pvh_note(&elf));
        // a gzip bomb stops at the cap
        let zeros = vec![0u8; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..(MAX_VMLINUX >> 20) + 2 {
            gz.write_all(&zeros).expect("gzip");
        }
        let img = fake_bzimage(&gz.finish().expect("gzip"));
        assert!(matches!(unpack(&img), Err(UnpackError::TooLarge)));
    }

    #[test]
    fn cache_names_the_file_and_remembers_non_pvh_images() {
        let dir = std::env::temp_dir().join(format!("yunhe-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let elf = fake_pvh_elf();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).expect("gzip");
        let kernel = dir.join("bzImage");
        std::fs::write(&kernel, fake_bzimage(&gz.finish().expect("gzip"))).expect("write");
        let (path, err) = cached_vmlinux(&kernel, &dir.join("cache"));
        assert!(err.is_none(), "{err:?}");
        assert_ne!(path, kernel);
        assert_eq!(std::fs::read(&path).expect("read"), elf);
        let (again, _) = cached_vmlinux(&kernel, &dir.join("cache"));
        assert_eq!(again, path);
        // an ELF kernel is booted as it is
        let plain = dir.join("vmlinux");
        std::fs::write(&plain, &elf).expect("write");
        assert_eq!(cached_vmlinux(&plain, &dir.join("cache")).0, plain);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
