//! Partition tables: GPT (with its protective MBR) and MBR primary partitions.

use super::{Disk, DiskBootError, Result, le32, le64};

/// One partition: its number as Linux names it (`/dev/vdaN`), where it starts
/// and its length, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `/dev/vda1`.
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Byte length.
    pub len: u64,
    /// GPT: the ESP type GUID; MBR: type 0xef.
    pub esp: bool,
    /// GPT: the BIOS boot partition (holds GRUB's core, no filesystem).
    pub bios_boot: bool,
}

/// The most partition entries read from a GPT.
const MAX_GPT_ENTRIES: u32 = 256;
/// The ESP type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B, as stored (mixed endian).
const ESP_GUID: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// The BIOS boot partition type GUID 21686148-6449-6E6F-744E-656564454649.
const BIOS_BOOT_GUID: [u8; 16] = *b"Hah!IdontNeedEFI";

/// The partitions of `disk`: `Ok(None)` when there is no partition table.
pub fn partitions(disk: &dyn Disk) -> Result<Option<Vec<Partition>>> {
    let size = disk.size();
    if size < 512 {
        return Err(DiskBootError::PartitionTable(
            "the disk is smaller than one sector".into(),
        ));
    }
    let mut mbr = [0u8; 512];
    disk.read_at(&mut mbr, 0)?;
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        return Ok(None);
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + i * 16..462 + i * 16]).collect();
    if entries.iter().any(|e| e[4] == 0xee) {
        return gpt(disk).map(Some);
    }
    let mut parts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let kind = e[4];
        let (lba, count) = (u64::from(le32(e, 8)), u64::from(le32(e, 12)));
        // Empty slots and extended containers (logical partitions are not read).
        if kind == 0 || count == 0 || matches!(kind, 0x05 | 0x0f | 0x85) {
            continue;
        }
        if e[0] & 0x7f != 0 {
            // Not a partition entry (a FAT boot sector's code has 0x55aa too).
            return Ok(None);
        }
        let (start, len) = (lba * 512, count * 512);
        if start.saturating_add(len) > size {
            return Err(DiskBootError::PartitionTable(format!(
                "MBR partition {} ends past the end of the disk ({} > {size} bytes)",
                i + 1,
                start.saturating_add(len)
            )));
        }
        parts.push(Partition {
            number: i as u32 + 1,
            start,
            len,
            esp: kind == 0xef,
            bios_boot: false,
        });
    }
    Ok(Some(parts))
}

fn gpt(disk: &dyn Disk) -> Result<Vec<Partition>> {
    let size = disk.size();
    let bad = |m: String| DiskBootError::PartitionTable(m);
    let mut h = [0u8; 92];
    if size < 1024 {
        return Err(bad("GPT disk truncated before its header".into()));
    }
    disk.read_at(&mut h, 512)?;
    if &h[0..8] != b"EFI PART" {
        return Err(bad("protective MBR without a GPT header".into()));
    }
    let entries_lba = le64(&h, 72);
    let count = le32(&h, 80);
    let entry_size = le32(&h, 84);
    if !(128..=4096).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return Err(bad(format!("GPT entry size {entry_size}")));
    }
    let count = count.min(MAX_GPT_ENTRIES);
    let table_len = u64::from(count) * u64::from(entry_size);
    let table_at = entries_lba.saturating_mul(512);
    if table_at.saturating_add(table_len) > size {
        return Err(bad(
            "the GPT partition entries lie past the end of the disk (truncated?)".into(),
        ));
    }
    let mut table = vec![0u8; table_len as usize];
    disk.read_at(&mut table, table_at)?;
    let mut parts = Vec::new();
    for (i, e) in table.chunks_exact(entry_size as usize).enumerate() {
        let kind = &e[0..16];
        if kind.iter().all(|b| *b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        if last < first {
            return Err(bad(format!(
                "GPT partition {} ends before it starts",
                i + 1
            )));
        }
        let start = first.saturating_mul(512);
        // `last` may be u64::MAX: the length saturates instead of wrapping to 0.
        let len = (last - first).saturating_add(1).saturating_mul(512);
        if start.saturating_add(len) > size {
            return Err(bad(format!(
                "GPT partition {} ends past the end of the disk (truncated image?)",
                i + 1
            )));
        }
        parts.push(Partition {
            number: i as u32 + 1,
            start,
            len,
            esp: kind == ESP_GUID,
            bios_boot: kind == BIOS_BOOT_GUID,
        });
    }
    Ok(parts)
}
