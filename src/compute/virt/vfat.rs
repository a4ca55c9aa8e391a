//! An empty FAT32 filesystem on a new ephemeral disk, as Nova's `mkfs -t vfat
//! -n ephemeral0` leaves it when neither the mapping's `guest_format` nor the
//! image's `os_type` names another filesystem: cloud-init's default `mounts`
//! then mounts `ephemeral0` on `/mnt` with no work in the guest.
//!
//! Only the metadata is written (the boot sector and its backup, the FSInfo
//! sector and its backup, the head of both FATs and the root directory's
//! volume-label entry): everything else is the sparse file's zeros, so a
//! 100 GiB disk costs a few KiB on the host. Layout as Microsoft's FAT
//! specification gives it: 512-byte sectors, 32 reserved sectors, two FATs,
//! the root directory in cluster 2, the cluster size from the specification's
//! FAT32 table.

use std::fs::File;
use std::os::unix::fs::FileExt;

const SECTOR: u64 = 512;
const RESERVED_SECTORS: u32 = 32;
const FATS: u32 = 2;
const FSINFO_SECTOR: u64 = 1;
const BACKUP_BOOT_SECTOR: u64 = 6;
/// FAT32 needs at least this many clusters (fewer is FAT16 by definition).
const MIN_CLUSTERS: u64 = 65_525;
/// Entries a FAT32 FAT may address (28-bit cluster numbers, less reserved values).
const MAX_CLUSTERS: u64 = 0x0FFF_FFF5;

/// The geometry of a FAT32 filesystem of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    total_sectors: u32,
    sectors_per_cluster: u32,
    fat_sectors: u32,
    clusters: u32,
}

impl Geometry {
    /// FAT32's geometry for `len` bytes, or None when FAT32 cannot span it
    /// (under about 33 MiB, or 2 TiB and more: 32-bit sector counts).
    fn for_len(len: u64) -> Option<Geometry> {
        let total_sectors = u32::try_from(len / SECTOR).ok()?;
        // The specification's FAT32 table (512-byte sectors).
        let sectors_per_cluster: u32 = match total_sectors {
            0..=532_480 => 1,              // up to 260 MiB: 512 B
            532_481..=16_777_216 => 8,     // up to 8 GiB: 4 KiB
            16_777_217..=33_554_432 => 16, // up to 16 GiB: 8 KiB
            33_554_433..=67_108_864 => 32, // up to 32 GiB: 16 KiB
            _ => 64,                       // 32 KiB
        };
        let after_reserved = total_sectors.checked_sub(RESERVED_SECTORS)?;
        // The specification's FAT size: enough entries for every cluster
        // (slightly more than needed, never fewer).
        let per_fat_sector = (256 * sectors_per_cluster + FATS) / 2;
        let fat_sectors = after_reserved.div_ceil(per_fat_sector);
        let data_sectors = after_reserved.checked_sub(FATS * fat_sectors)?;
        let clusters = u64::from(data_sectors / sectors_per_cluster);
        if !(MIN_CLUSTERS..=MAX_CLUSTERS).contains(&clusters)
            || u64::from(fat_sectors) * 128 < clusters + 2
        {
            return None;
        }
        Some(Geometry {
            total_sectors,
            sectors_per_cluster,
            fat_sectors,
            clusters: clusters as u32,
        })
    }

    fn data_start(&self) -> u64 {
        u64::from(RESERVED_SECTORS + FATS * self.fat_sectors)
    }
}

/// Writes an empty FAT32 filesystem labelled `label` (at most 11 bytes of
/// ASCII) over the first `len` bytes of `file`, which must read as zeros
/// (a new sparse file). Returns false, writing nothing, when FAT32 cannot
/// span `len`.
pub(super) fn format(file: &File, len: u64, label: &str) -> std::io::Result<bool> {
    let Some(g) = Geometry::for_len(len) else {
        return Ok(false);
    };
    let mut name = [b' '; 11];
    for (slot, byte) in name
        .iter_mut()
        .zip(label.bytes().filter(u8::is_ascii_graphic))
    {
        *slot = byte;
    }
    let volume_id = u32::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..4]
            .try_into()
            .unwrap_or([0; 4]),
    );

    let boot = boot_sector(&g, volume_id, &name);
    let fsinfo = fsinfo_sector(&g);
    for base in [0, BACKUP_BOOT_SECTOR] {
        file.write_all_at(&boot, base * SECTOR)?;
        file.write_all_at(&fsinfo, (base + FSINFO_SECTOR) * SECTOR)?;
    }

    // Both FATs: the media byte, the clean-shutdown entry, the root
    // directory's one-cluster chain.
    let mut head = [0u8; 12];
    head[0..4].copy_from_slice(&0x0FFF_FFF8u32.to_le_bytes());
    head[4..8].copy_from_slice(&0x0FFF_FFFFu32.to_le_bytes());
    head[8..12].copy_from_slice(&0x0FFF_FFF8u32.to_le_bytes());
    for fat in 0..FATS {
        let sector = u64::from(RESERVED_SECTORS + fat * g.fat_sectors);
        file.write_all_at(&head, sector * SECTOR)?;
    }

    // The root directory (cluster 2): the volume label entry.
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(&name);
    entry[11] = 0x08; // ATTR_VOLUME_ID
    let (date, time) = dos_now();
    entry[22..24].copy_from_slice(&time.to_le_bytes());
    entry[24..26].copy_from_slice(&date.to_le_bytes());
    file.write_all_at(&entry, g.data_start() * SECTOR)?;
    Ok(true)
}

fn boot_sector(g: &Geometry, volume_id: u32, label: &[u8; 11]) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]); // jmp to the boot code, nop
    b[3..11].copy_from_slice(b"YUNHE   ");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = g.sectors_per_cluster as u8;
    b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    b[16] = FATS as u8;
    // 17..21: no fixed root directory, no 16-bit sector count (FAT32)
    b[21] = 0xF8; // fixed disk
    // 22..24: no 16-bit FAT size (FAT32)
    b[24..26].copy_from_slice(&63u16.to_le_bytes()); // sectors per track
    b[26..28].copy_from_slice(&255u16.to_le_bytes()); // heads
    // 28..32: no hidden sectors (the filesystem fills the disk)
    b[32..36].copy_from_slice(&g.total_sectors.to_le_bytes());
    b[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes());
    // 40..44: FATs mirrored, version 0.0
    b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root directory cluster
    b[48..50].copy_from_slice(&(FSINFO_SECTOR as u16).to_le_bytes());
    b[50..52].copy_from_slice(&(BACKUP_BOOT_SECTOR as u16).to_le_bytes());
    b[64] = 0x80; // drive number
    b[66] = 0x29; // the next three fields are present
    b[67..71].copy_from_slice(&volume_id.to_le_bytes());
    b[71..82].copy_from_slice(label);
    b[82..90].copy_from_slice(b"FAT32   ");
    // Boot code at 90 (where the jump lands): not bootable, so halt.
    b[90..93].copy_from_slice(&[0xF4, 0xEB, 0xFD]); // hlt; jmp $-1
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

fn fsinfo_sector(g: &Geometry) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    // Free clusters: all but the root directory's; the next free one is 3.
    s[488..492].copy_from_slice(&(g.clusters - 1).to_le_bytes());
    s[492..496].copy_from_slice(&3u32.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}

/// Now (UTC) as a FAT directory entry's date and time.
fn dos_now() -> (u16, u16) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    dos_date_time(secs)
}

/// Seconds since 1970 (UTC) as a FAT date (years since 1980, month, day)
/// and time (hours, minutes, seconds / 2); dates before 1980 are 1980-01-01.
fn dos_date_time(secs: u64) -> (u16, u16) {
    let days = (secs / 86_400) as i64;
    let in_day = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar;
    // eras of 400 years starting on March 1st).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if year < 1980 {
        return (1 << 5 | 1, 0);
    }
    let date = ((year - 1980).min(127) as u16) << 9 | (month as u16) << 5 | day as u16;
    let time = ((in_day / 3600) as u16) << 11
        | ((in_day / 60 % 60) as u16) << 5
        | (in_day % 60 / 2) as u16;
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The geometry follows the specification's table and always has FAT
    /// entries for every cluster; FAT32 cannot span tiny or ≥ 2 TiB disks.
    #[test]
    fn geometry_follows_the_fat32_table() {
        let gib = 1u64 << 30;
        for (len, per_cluster) in [
            (64 << 20, 1),
            (gib, 8),
            (8 * gib, 8),
            (10 * gib, 16),
            (20 * gib, 32),
            (100 * gib, 64),
            (2047 * gib, 64),
        ] {
            let g = Geometry::for_len(len).expect("FAT32 spans it");
            assert_eq!(g.sectors_per_cluster, per_cluster, "{len}");
            assert!(u64::from(g.fat_sectors) * 128 >= u64::from(g.clusters) + 2);
            let used = g.data_start() + u64::from(g.clusters * g.sectors_per_cluster);
            assert!(used <= u64::from(g.total_sectors));
            assert!(u64::from(g.total_sectors) - used < u64::from(per_cluster) + 128);
        }
        assert_eq!(Geometry::for_len(16 << 20), None);
        assert_eq!(Geometry::for_len(2048 * gib), None);
    }

    #[test]
    fn dos_dates() {
        // 2026-12-01 12:34:56 UTC
        let (date, time) = dos_date_time(1_796_128_496);
        assert_eq!((date >> 9, date >> 5 & 15, date & 31), (46, 12, 1));
        assert_eq!((time >> 11, time >> 5 & 63, time & 31), (12, 34, 28));
        // 2000-02-29 (a leap day of a century year)
        let (date, _) = dos_date_time(951_782_400);
        assert_eq!((date >> 9, date >> 5 & 15, date & 31), (20, 2, 29));
        assert_eq!(dos_date_time(0), (1 << 5 | 1, 0));
    }

    /// A 1 GiB disk: the metadata where FAT32 puts it, a few KiB written,
    /// and (where dosfstools is installed, as the image recipes install it)
    /// `fsck.vfat` finds nothing to fix and `fatlabel` reads the label.
    #[test]
    fn formats_an_empty_labelled_fat32() {
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("yunhe-vfat-{}", std::process::id()));
        let file = File::create(&path).expect("create");
        let len = 1u64 << 30;
        file.set_len(len).expect("size");
        assert!(format(&file, len, "ephemeral0").expect("format"));
        drop(file);
        let meta = std::fs::metadata(&path).expect("metadata");
        assert!(meta.blocks() < 256, "sparse: {} blocks", meta.blocks());

        let g = Geometry::for_len(len).expect("geometry");
        let image = std::fs::read(&path).expect("read");
        let boot = &image[..512];
        assert_eq!(&boot[510..], &[0x55, 0xAA]);
        assert_eq!(&boot[82..90], b"FAT32   ");
        assert_eq!(&boot[71..82], b"ephemeral0 ");
        assert_eq!(le32(boot, 32), g.total_sectors);
        assert_eq!(&image[6 * 512..7 * 512], boot, "backup boot sector");
        let fsinfo = &image[512..1024];
        assert_eq!(le32(fsinfo, 0), 0x4161_5252);
        assert_eq!(le32(fsinfo, 488), g.clusters - 1);
        for fat in 0..2u64 {
            let at = ((32 + fat * u64::from(g.fat_sectors)) * 512) as usize;
            assert_eq!(le32(&image, at + 8), 0x0FFF_FFF8, "root chain in FAT {fat}");
        }
        let root = (g.data_start() * 512) as usize;
        assert_eq!(&image[root..root + 11], b"ephemeral0 ");
        assert_eq!(image[root + 11], 0x08);

        let have = |tool: &str| {
            std::process::Command::new(tool)
                .arg("--help")
                .output()
                .is_ok()
        };
        if have("fsck.vfat") {
            let fsck = std::process::Command::new("fsck.vfat")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("fsck.vfat");
            assert!(
                fsck.status.success(),
                "fsck.vfat -n: {}{}",
                String::from_utf8_lossy(&fsck.stdout),
                String::from_utf8_lossy(&fsck.stderr)
            );
        }
        if have("fatlabel") {
            let label = std::process::Command::new("fatlabel")
                .arg(&path)
                .output()
                .expect("fatlabel");
            assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "ephemeral0");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn too_small_for_fat32_is_left_alone() {
        let path = std::env::temp_dir().join(format!("yunhe-vfat-small-{}", std::process::id()));
        let file = File::create(&path).expect("create");
        file.set_len(16 << 20).expect("size");
        assert!(!format(&file, 16 << 20, "ephemeral0").expect("format"));
        drop(file);
        assert!(std::fs::read(&path).expect("read").iter().all(|&b| b == 0));
        let _ = std::fs::remove_file(&path);
    }
}
