//! Disk format checks on uploaded data: the content must match the declared
//! `disk_format`, qcow2 headers are parsed for the virtual size, and qcow2
//! files that point at other files (a backing file or an external data file,
//! a known way to make a hypervisor read host files) are refused.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Why image data was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The data does not look like the declared format.
    #[error("Image content does not match disk_format '{declared}': {reason}")]
    Mismatch { declared: String, reason: String },
    /// The qcow2 image names a backing file.
    #[error("qcow2 images with a backing file are not allowed")]
    BackingFile,
    /// The qcow2 image keeps its data in an external file.
    #[error("qcow2 images with an external data file are not allowed")]
    ExternalDataFile,
    /// The file could not be read.
    #[error("cannot read image data: {0}")]
    Io(#[from] std::io::Error),
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// qcow2 incompatible feature bit 2: an external data file.
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// qcow2 header extension: the external data file name.
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;

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

fn mismatch(declared: &str, reason: &str) -> FormatError {
    FormatError::Mismatch {
        declared: declared.into(),
        reason: reason.into(),
    }
}

/// Parses a qcow2 header (the first 64 KiB of the file at most) and returns
/// the virtual size, refusing backing and external data files.
pub fn qcow2_virtual_size(head: &[u8]) -> Result<u64, FormatError> {
    if head.len() < 72 || &head[0..4] != QCOW2_MAGIC {
        return Err(mismatch("qcow2", "no qcow2 header"));
    }
    let version = be32(head, 4);
    if version != 2 && version != 3 {
        return Err(mismatch("qcow2", "unsupported qcow2 version"));
    }
    if be64(head, 8) != 0 || be32(head, 16) != 0 {
        return Err(FormatError::BackingFile);
    }
    let size = be64(head, 24);
    let mut ext_at = 72usize;
    if version == 3 {
        if head.len() < 104 {
            return Err(mismatch("qcow2", "truncated qcow2 v3 header"));
        }
        if be64(head, 72) & QCOW2_INCOMPAT_DATA_FILE != 0 {
            return Err(FormatError::ExternalDataFile);
        }
        ext_at = be32(head, 100) as usize;
    }
    // Header extensions: (type, length, data padded to 8) until type 0.
    while ext_at + 8 <= head.len() {
        let kind = be32(head, ext_at);
        let len = be32(head, ext_at + 4) as usize;
        if kind == 0 {
            break;
        }
        if kind == QCOW2_EXT_DATA_FILE {
            return Err(FormatError::ExternalDataFile);
        }
        ext_at = ext_at.saturating_add(8).saturating_add(len.div_ceil(8) * 8);
    }
    Ok(size)
}

fn looks_like_kernel(head: &[u8]) -> bool {
    // A bzImage ("HdrS" at 0x202) or an ELF kernel (vmlinux, PVH).
    head.get(0x202..0x206) == Some(b"HdrS") || head.starts_with(b"\x7fELF")
}

fn looks_like_ramdisk(head: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        b"070701",
        b"070702",
        b"070707",
        b"\x1f\x8b",
        b"\xfd7zXZ\x00",
        b"\x28\xb5\x2f\xfd",
        b"\x02\x21\x4c\x18",
        b"\x04\x22\x4d\x18",
        b"BZh",
        b"\x5d\x00\x00",
        b"\x89LZO",
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
}

/// Checks a stored file against its declared disk format; returns the
/// virtual size (the file size for raw-like formats) when known.
pub fn check_file(path: &Path, disk_format: Option<&str>) -> Result<Option<u64>, FormatError> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut head = Vec::with_capacity(65536);
    (&mut file).take(65536).read_to_end(&mut head)?;
    let is_qcow2 = head.starts_with(QCOW2_MAGIC);
    let format = disk_format.unwrap_or("raw");
    match format {
        "qcow2" => Ok(Some(qcow2_virtual_size(&head)?)),
        _ if is_qcow2 => Err(mismatch(format, "the data is a qcow2 image")),
        "iso" => {
            let mut magic = [0u8; 5];
            let ok = size >= 0x8006
                && file.seek(SeekFrom::Start(0x8001)).is_ok()
                && file.read_exact(&mut magic).is_ok()
                && &magic == b"CD001";
            if ok {
                Ok(Some(size))
            } else {
                Err(mismatch(format, "no ISO 9660 volume descriptor"))
            }
        }
        "aki" if !looks_like_kernel(&head) => {
            Err(mismatch(format, "not a Linux kernel (bzImage or ELF)"))
        }
        "ari" if !looks_like_ramdisk(&head) => {
            Err(mismatch(format, "not an initramfs (cpio or compressed)"))
        }
        "raw" | "ami" => Ok(Some(size)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2(version: u32, backing: u64, incompat: u64, ext: Option<u32>) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[0..4].copy_from_slice(QCOW2_MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        if version == 3 {
            h[72..80].copy_from_slice(&incompat.to_be_bytes());
            h[96..100].copy_from_slice(&4u32.to_be_bytes());
            h[100..104].copy_from_slice(&104u32.to_be_bytes());
        }
        if let Some(kind) = ext {
            let at = if version == 3 { 104 } else { 72 };
            h[at..at + 4].copy_from_slice(&kind.to_be_bytes());
            h[at + 4..at + 8].copy_from_slice(&8u32.to_be_bytes());
        }
        h
    }

    #[test]
    fn qcow2_virtual_size_and_refusals() {
        assert_eq!(
            qcow2_virtual_size(&qcow2(2, 0, 0, None)).ok(),
            Some(1 << 30)
        );
        assert_eq!(
            qcow2_virtual_size(&qcow2(3, 0, 0, None)).ok(),
            Some(1 << 30)
        );
        assert!(matches!(
            qcow2_virtual_size(&qcow2(3, 512, 0, None)),
            Err(FormatError::BackingFile)
        ));
        assert!(matches!(
            qcow2_virtual_size(&qcow2(3, 0, QCOW2_INCOMPAT_DATA_FILE, None)),
            Err(FormatError::ExternalDataFile)
        ));
        assert!(matches!(
            qcow2_virtual_size(&qcow2(3, 0, 0, Some(QCOW2_EXT_DATA_FILE))),
            Err(FormatError::ExternalDataFile)
        ));
        assert!(qcow2_virtual_size(b"not a qcow2 image at all, just some bytes").is_err());
    }
}
