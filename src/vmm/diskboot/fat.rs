//! A read-only FAT12/16/32 reader (an EFI system partition): the BPB, cluster
//! chains (bounded: a chain longer than the volume's cluster count is a loop),
//! directories with long file names, case-insensitive lookup.

use super::{Disk, DiskBootError, Fs, Inode, Result, le16, le32};

/// A FAT filesystem on a slice of a disk.
pub struct Fat<'a> {
    disk: &'a dyn Disk,
    base: u64,
    len: u64,
    kind: u8,
    cluster_size: u64,
    fat_at: u64,
    /// FAT12/16: the fixed root directory (offset, bytes); FAT32: None.
    root_fixed: Option<(u64, u64)>,
    root_cluster: u32,
    data_at: u64,
    clusters: u32,
    /// The volume serial number (GRUB's `--fs-uuid` of a FAT volume is `XXXX-XXXX`).
    pub serial: u32,
}

fn bad(m: impl Into<String>) -> DiskBootError {
    DiskBootError::Filesystem(format!("FAT: {}", m.into()))
}

/// Inode ids: the root is 0; other entries are (first cluster << 32 | size)
/// with bit 31 of the size part marking a directory. A directory of a
/// FAT12/16 root with cluster 0 is the root.
fn id(cluster: u32, size: u32, dir: bool) -> u64 {
    (u64::from(cluster) << 32) | u64::from(size & 0x7fff_ffff) | if dir { 1 << 31 } else { 0 }
}

impl<'a> Fat<'a> {
    /// Opens the FAT volume at `base..base+len`; `Ok(None)` when it is not one.
    pub fn open(disk: &'a dyn Disk, base: u64, len: u64) -> Result<Option<Fat<'a>>> {
        if len < 512 {
            return Ok(None);
        }
        let mut b = [0u8; 512];
        disk.read_at(&mut b, base)?;
        let bps = u64::from(le16(&b, 11));
        let spc = u64::from(b[13]);
        let reserved = u64::from(le16(&b, 14));
        let fats = u64::from(b[16]);
        let root_entries = u64::from(le16(&b, 17));
        let total = match le16(&b, 19) {
            0 => u64::from(le32(&b, 32)),
            n => u64::from(n),
        };
        let fat_size = match le16(&b, 22) {
            0 => u64::from(le32(&b, 36)),
            n => u64::from(n),
        };
        let looks = b[510] == 0x55
            && b[511] == 0xaa
            && matches!(bps, 512 | 1024 | 2048 | 4096)
            && spc.is_power_of_two()
            && reserved > 0
            && (1..=2).contains(&fats)
            && fat_size > 0
            && total > 0;
        if !looks {
            return Ok(None);
        }
        let root_bytes = (root_entries * 32).div_ceil(bps) * bps;
        let fat_at = reserved * bps;
        let root_at = fat_at + fats * fat_size * bps;
        let data_at = root_at + root_bytes;
        let data_sectors = total.saturating_sub(data_at / bps);
        let clusters = data_sectors / spc;
        let kind = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        if total * bps > len {
            return Err(bad("the volume is larger than its partition (truncated?)"));
        }
        let serial = if kind == 32 {
            le32(&b, 67)
        } else {
            le32(&b, 39)
        };
        Ok(Some(Fat {
            disk,
            base,
            len,
            kind,
            cluster_size: bps * spc,
            fat_at,
            root_fixed: (kind != 32).then_some((root_at, root_bytes)),
            root_cluster: if kind == 32 { le32(&b, 44) } else { 0 },
            data_at,
            clusters: clusters as u32,
            serial,
        }))
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(bad("read past the end of the volume"));
        }
        self.disk.read_at(buf, self.base + offset)?;
        Ok(())
    }

    fn next(&self, cluster: u32) -> Result<Option<u32>> {
        let (at, width) = match self.kind {
            12 => (u64::from(cluster) * 3 / 2, 2),
            16 => (u64::from(cluster) * 2, 2),
            _ => (u64::from(cluster) * 4, 4),
        };
        let mut b = [0u8; 4];
        self.read(&mut b[..width], self.fat_at + at)?;
        let v = match self.kind {
            12 => {
                let v = u32::from(le16(&b, 0));
                if cluster & 1 == 1 { v >> 4 } else { v & 0xfff }
            }
            16 => u32::from(le16(&b, 0)),
            _ => le32(&b, 0) & 0x0fff_ffff,
        };
        let end = match self.kind {
            12 => 0xff8,
            16 => 0xfff8,
            _ => 0x0fff_fff8,
        };
        Ok((2..end).contains(&v).then_some(v))
    }

    /// The bytes of a cluster chain, at most `max` (and `size` when known).
    fn chain(&self, first: u32, size: Option<u64>, max: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut cluster = Some(first);
        let mut steps = 0u32;
        let want = size.unwrap_or(u64::MAX);
        while let Some(c) = cluster {
            if out.len() as u64 >= want {
                break;
            }
            if c < 2 || c - 2 >= self.clusters {
                return Err(bad(format!("cluster {c} out of range")));
            }
            steps += 1;
            if steps > self.clusters {
                return Err(bad("cluster chain loops"));
            }
            if out.len() as u64 + self.cluster_size > max.saturating_add(self.cluster_size) {
                return Err(DiskBootError::TooLarge(
                    out.len() as u64 + self.cluster_size,
                ));
            }
            let start = out.len();
            out.resize(start + self.cluster_size as usize, 0);
            self.read(
                &mut out[start..],
                self.data_at + u64::from(c - 2) * self.cluster_size,
            )?;
            cluster = self.next(c)?;
        }
        if let Some(s) = size {
            if (out.len() as u64) < s {
                return Err(bad("file shorter than its size"));
            }
            out.truncate(s as usize);
        }
        Ok(out)
    }

    fn dir_bytes(&self, dir: u64) -> Result<Vec<u8>> {
        let cluster = (dir >> 32) as u32;
        match (cluster, self.root_fixed) {
            (0, Some((at, len))) => {
                let mut b = vec![0u8; len as usize];
                self.read(&mut b, at)?;
                Ok(b)
            }
            (0, None) => self.chain(self.root_cluster, None, super::MAX_DIR),
            (c, _) => self.chain(c, None, super::MAX_DIR),
        }
    }

    /// (long or short name, inode id) of each entry.
    fn entries(&self, dir: u64) -> Result<Vec<(String, u64)>> {
        let data = self.dir_bytes(dir)?;
        let mut out = Vec::new();
        let mut lfn: Vec<(u8, [u16; 13])> = Vec::new();
        for e in data.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xe5 {
                lfn.clear();
                continue;
            }
            let attr = e[11];
            if attr == 0x0f {
                let mut chars = [0u16; 13];
                let spots = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                for (k, at) in spots.iter().enumerate() {
                    chars[k] = le16(e, *at);
                }
                lfn.push((e[0] & 0x1f, chars));
                continue;
            }
            if attr & 0x08 != 0 {
                lfn.clear();
                continue;
            }
            let name = if lfn.is_empty() {
                let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_string();
                let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
                if ext.is_empty() {
                    base
                } else {
                    format!("{base}.{ext}")
                }
            } else {
                lfn.sort_by_key(|(seq, _)| *seq);
                let units: Vec<u16> = lfn
                    .iter()
                    .flat_map(|(_, c)| c.iter().copied())
                    .take_while(|u| *u != 0 && *u != 0xffff)
                    .collect();
                String::from_utf16_lossy(&units)
            };
            lfn.clear();
            let cluster = (u32::from(le16(e, 20)) << 16) | u32::from(le16(e, 26));
            let size = le32(e, 28);
            out.push((name, id(cluster, size, attr & 0x10 != 0)));
            if out.len() >= super::MAX_LIST {
                break;
            }
        }
        Ok(out)
    }
}

impl Fs for Fat<'_> {
    fn root(&self) -> u64 {
        id(0, 0, true)
    }

    fn stat(&self, ino: u64) -> Result<Inode> {
        Ok(Inode {
            id: ino,
            dir: ino & (1 << 31) != 0,
            symlink: false,
            size: ino & 0x7fff_ffff,
        })
    }

    fn read_file(&self, ino: u64, max: u64) -> Result<Vec<u8>> {
        let size = ino & 0x7fff_ffff;
        if size > max {
            return Err(DiskBootError::TooLarge(size));
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        self.chain((ino >> 32) as u32, Some(size), max)
    }

    fn lookup(&self, dir: u64, name: &str) -> Result<Option<u64>> {
        Ok(self
            .entries(dir)?
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, i)| i))
    }

    fn list(&self, dir: u64) -> Result<Vec<String>> {
        Ok(self.entries(dir)?.into_iter().map(|(n, _)| n).collect())
    }

    fn uuid(&self) -> Option<[u8; 16]> {
        None
    }

    fn fat_serial(&self) -> Option<u32> {
        Some(self.serial)
    }
}
