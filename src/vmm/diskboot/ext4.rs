//! A read-only ext2/3/4 reader: superblock, group descriptors (32 and 64
//! bit), inodes, extent trees and the old direct/indirect block maps, linear
//! directories (hashed directories read linearly too), fast and slow symlinks.
//! Every count read from the disk is bounded; cycles are errors.

use super::{Disk, DiskBootError, Fs, Inode, Result, le16, le32};

const MAGIC: u16 = 0xef53;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const EXTENTS_FL: u32 = 0x80000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
const EXTENT_MAGIC: u16 = 0xf30a;
/// Extent tree depth (ext4 itself stays under 5).
const MAX_DEPTH: u16 = 5;
/// Extent tree nodes or indirect blocks visited per file.
const MAX_MAP_BLOCKS: usize = 65536;

/// An ext2/3/4 filesystem on a slice of a disk.
pub struct Ext4<'a> {
    disk: &'a dyn Disk,
    /// Where the filesystem starts on the disk.
    base: u64,
    len: u64,
    block_size: u64,
    inodes_per_group: u32,
    inodes_count: u32,
    inode_size: u64,
    desc_size: u64,
    first_desc_block: u64,
    groups: u64,
    /// The filesystem UUID (`root=UUID=…`, GRUB's `search --fs-uuid`).
    pub uuid: [u8; 16],
}

fn bad(m: impl Into<String>) -> DiskBootError {
    DiskBootError::Filesystem(format!("ext4: {}", m.into()))
}

impl<'a> Ext4<'a> {
    /// Opens the filesystem at `base..base+len`; `Ok(None)` when there is no ext superblock.
    pub fn open(disk: &'a dyn Disk, base: u64, len: u64) -> Result<Option<Ext4<'a>>> {
        if len < 2048 {
            return Ok(None);
        }
        let mut sb = [0u8; 1024];
        disk.read_at(&mut sb, base + 1024)?;
        if le16(&sb, 56) != MAGIC {
            return Ok(None);
        }
        let log = le32(&sb, 24);
        if log > 6 {
            return Err(bad(format!("block size 2^{}", log + 10)));
        }
        let block_size = 1024u64 << log;
        let inodes_per_group = le32(&sb, 40);
        let blocks_per_group = u64::from(le32(&sb, 32));
        let inodes_count = le32(&sb, 0);
        let incompat = le32(&sb, 96);
        let rev = le32(&sb, 76);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(le16(&sb, 88))
        };
        if inodes_per_group == 0 || blocks_per_group == 0 || inodes_count == 0 {
            return Err(bad("zero inodes or blocks per group"));
        }
        if !(128..=block_size).contains(&inode_size) || !inode_size.is_power_of_two() {
            return Err(bad(format!("inode size {inode_size}")));
        }
        if incompat & INCOMPAT_META_BG != 0 {
            return Err(bad("meta_bg group descriptors are not supported"));
        }
        if incompat & INCOMPAT_ENCRYPT != 0 {
            return Err(bad("encrypted filesystem"));
        }
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            let d = u64::from(le16(&sb, 254));
            if !(32..=1024).contains(&d) || !d.is_power_of_two() {
                return Err(bad(format!("group descriptor size {d}")));
            }
            d
        } else {
            32
        };
        let blocks = u64::from(le32(&sb, 4))
            | if incompat & INCOMPAT_64BIT != 0 {
                u64::from(le32(&sb, 336)) << 32
            } else {
                0
            };
        let first_data = u64::from(le32(&sb, 20));
        let groups = blocks.saturating_sub(first_data).div_ceil(blocks_per_group);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[104..120]);
        Ok(Some(Ext4 {
            disk,
            base,
            len,
            block_size,
            inodes_per_group,
            inodes_count,
            inode_size,
            desc_size,
            first_desc_block: first_data + 1,
            groups,
            uuid,
        }))
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.len {
            return Err(bad(format!("read past the end of the filesystem ({end})")));
        }
        self.disk.read_at(buf, self.base + offset)?;
        Ok(())
    }

    fn read_block(&self, block: u64, buf: &mut [u8]) -> Result<()> {
        self.read(buf, block.saturating_mul(self.block_size))
    }

    /// Where inode `ino` is, from the start of the filesystem.
    fn inode_offset(&self, ino: u32) -> Result<u64> {
        if ino == 0 || ino > self.inodes_count {
            return Err(bad(format!("inode {ino} out of range")));
        }
        let group = u64::from((ino - 1) / self.inodes_per_group);
        let index = u64::from((ino - 1) % self.inodes_per_group);
        if group >= self.groups {
            return Err(bad(format!("inode {ino} in group {group} past the last")));
        }
        let mut d = vec![0u8; self.desc_size as usize];
        self.read(
            &mut d,
            self.first_desc_block * self.block_size + group * self.desc_size,
        )?;
        let mut table = u64::from(le32(&d, 8));
        if self.desc_size >= 64 {
            table |= u64::from(le32(&d, 0x28)) << 32;
        }
        Ok(table
            .saturating_mul(self.block_size)
            .saturating_add(index * self.inode_size))
    }

    fn inode_raw(&self, ino: u32) -> Result<Vec<u8>> {
        let at = self.inode_offset(ino)?;
        let mut raw = vec![0u8; self.inode_size.min(256) as usize];
        self.read(&mut raw, at)?;
        Ok(raw)
    }

    /// The (logical block, physical block, count) runs of a file, up to `nblocks`.
    fn runs(&self, raw: &[u8], nblocks: u64) -> Result<Vec<(u64, u64, u64)>> {
        let flags = le32(raw, 32);
        let iblock = &raw[40..100];
        let mut runs = Vec::new();
        let mut visited = 0usize;
        if flags & EXTENTS_FL != 0 {
            self.extent_node(iblock, MAX_DEPTH + 1, nblocks, &mut runs, &mut visited)?;
        } else {
            for (i, b) in iblock.chunks_exact(4).take(12).enumerate() {
                let p = u64::from(le32(b, 0));
                if i as u64 >= nblocks {
                    break;
                }
                if p != 0 {
                    runs.push((i as u64, p, 1));
                }
            }
            let mut next = 12u64;
            for (level, at) in [(1u32, 48usize), (2, 52), (3, 56)] {
                let p = u64::from(le32(iblock, at));
                let span = (self.block_size / 4).pow(level);
                if next >= nblocks {
                    break;
                }
                if p != 0 {
                    self.indirect(p, level, next, nblocks, &mut runs, &mut visited)?;
                }
                next = next.saturating_add(span);
            }
        }
        Ok(runs)
    }

    fn indirect(
        &self,
        block: u64,
        level: u32,
        first: u64,
        nblocks: u64,
        runs: &mut Vec<(u64, u64, u64)>,
        visited: &mut usize,
    ) -> Result<()> {
        *visited += 1;
        if *visited > MAX_MAP_BLOCKS {
            return Err(bad("block map too large"));
        }
        let mut buf = vec![0u8; self.block_size as usize];
        self.read_block(block, &mut buf)?;
        let per = self.block_size / 4;
        let span = per.pow(level - 1);
        for (i, e) in buf.chunks_exact(4).enumerate() {
            let logical = first + i as u64 * span;
            if logical >= nblocks {
                break;
            }
            let p = u64::from(le32(e, 0));
            if p == 0 {
                continue;
            }
            if level == 1 {
                runs.push((logical, p, 1));
            } else {
                self.indirect(p, level - 1, logical, nblocks, runs, visited)?;
            }
        }
        Ok(())
    }

    /// Collects the extents of the file's first `nblocks` blocks: each one at least a block of
    /// them, so more than `nblocks` extents overlap (an index block named many times would
    /// otherwise collect millions from a few blocks).
    fn extent_node(
        &self,
        node: &[u8],
        depth_left: u16,
        nblocks: u64,
        runs: &mut Vec<(u64, u64, u64)>,
        visited: &mut usize,
    ) -> Result<()> {
        *visited += 1;
        if *visited > MAX_MAP_BLOCKS {
            return Err(bad("extent tree too large"));
        }
        if le16(node, 0) != EXTENT_MAGIC {
            return Err(bad("bad extent header"));
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if depth >= depth_left || depth > MAX_DEPTH {
            return Err(bad("extent tree too deep (a loop?)"));
        }
        if 12 + entries * 12 > node.len() {
            return Err(bad("extent node overflows its block"));
        }
        for i in 0..entries {
            let e = &node[12 + i * 12..24 + i * 12];
            if depth == 0 {
                let logical = u64::from(le32(e, 0));
                let mut len = u64::from(le16(e, 4));
                let uninit = len > 32768;
                if uninit {
                    len -= 32768;
                }
                let start = (u64::from(le16(e, 6)) << 32) | u64::from(le32(e, 8));
                // Uninitialized extents read as zeros, extents past the end are never read:
                // leave them out.
                if !uninit && len > 0 && logical < nblocks {
                    if runs.len() as u64 >= nblocks {
                        return Err(bad("more extents than the file has blocks"));
                    }
                    runs.push((logical, start, len));
                }
            } else {
                let leaf = (u64::from(le16(e, 8)) << 32) | u64::from(le32(e, 4));
                let mut buf = vec![0u8; self.block_size as usize];
                self.read_block(leaf, &mut buf)?;
                self.extent_node(&buf, depth, nblocks, runs, visited)?;
            }
        }
        Ok(())
    }
}

impl Fs for Ext4<'_> {
    fn root(&self) -> u64 {
        2
    }

    fn stat(&self, ino: u64) -> Result<Inode> {
        let ino = u32::try_from(ino).map_err(|_| bad("inode number"))?;
        let raw = self.inode_raw(ino)?;
        let mode = le16(&raw, 0);
        let size = u64::from(le32(&raw, 4)) | (u64::from(le32(&raw, 108)) << 32);
        Ok(Inode {
            id: u64::from(ino),
            dir: mode & 0xf000 == 0x4000,
            symlink: mode & 0xf000 == 0xa000,
            size,
        })
    }

    fn read_file(&self, ino: u64, max: u64) -> Result<Vec<u8>> {
        let ino32 = u32::try_from(ino).map_err(|_| bad("inode number"))?;
        let raw = self.inode_raw(ino32)?;
        let node = self.stat(ino)?;
        if node.size > max {
            return Err(DiskBootError::TooLarge(node.size));
        }
        // The buffer is sized from the inode: never more than the filesystem holds (boot
        // files and directories are not sparse).
        if node.size > self.len {
            return Err(bad(format!(
                "inode {ino}: {} bytes, more than the filesystem holds",
                node.size
            )));
        }
        let flags = le32(&raw, 32);
        if flags & INLINE_DATA_FL != 0 {
            // Inline data: the first 60 bytes live in i_block (the rest in an
            // extended attribute, not read: boot files are never that small).
            let n = node.size.min(60) as usize;
            return Ok(raw[40..40 + n].to_vec());
        }
        // A fast symlink keeps its target in i_block (never with extents).
        if node.symlink && node.size < 60 && flags & EXTENTS_FL == 0 {
            return Ok(raw[40..40 + node.size as usize].to_vec());
        }
        let nblocks = node.size.div_ceil(self.block_size);
        let runs = self.runs(&raw, nblocks)?;
        let mut out = vec![0u8; node.size as usize];
        let bs = self.block_size;
        let mut copied = 0u64;
        for (logical, physical, count) in runs {
            let count = count.min(nblocks.saturating_sub(logical));
            copied = copied.saturating_add(count);
            if copied > nblocks {
                return Err(bad(format!("inode {ino}: overlapping extents")));
            }
            for k in 0..count {
                let at = (logical + k) * bs;
                let end = (at + bs).min(node.size);
                if at >= end {
                    break;
                }
                self.read(
                    &mut out[at as usize..end as usize],
                    (physical + k).saturating_mul(bs),
                )?;
            }
        }
        Ok(out)
    }

    fn lookup(&self, dir: u64, name: &str) -> Result<Option<u64>> {
        let data = self.read_file(dir, super::MAX_DIR)?;
        let mut at = 0usize;
        while at + 8 <= data.len() {
            let ino = le32(&data, at);
            let rec_len = usize::from(le16(&data, at + 4));
            let name_len = usize::from(data[at + 6]);
            if rec_len < 8 {
                return Err(bad("directory entry of length < 8"));
            }
            if ino != 0
                && at + 8 + name_len <= data.len()
                && &data[at + 8..at + 8 + name_len] == name.as_bytes()
            {
                return Ok(Some(u64::from(ino)));
            }
            at += rec_len;
        }
        Ok(None)
    }

    fn list(&self, dir: u64) -> Result<Vec<String>> {
        let data = self.read_file(dir, super::MAX_DIR)?;
        let mut names = Vec::new();
        let mut at = 0usize;
        while at + 8 <= data.len() && names.len() < super::MAX_LIST {
            let ino = le32(&data, at);
            let rec_len = usize::from(le16(&data, at + 4));
            let name_len = usize::from(data[at + 6]);
            if rec_len < 8 {
                return Err(bad("directory entry of length < 8"));
            }
            if ino != 0 && at + 8 + name_len <= data.len() {
                names.push(String::from_utf8_lossy(&data[at + 8..at + 8 + name_len]).into_owned());
            }
            at += rec_len;
        }
        Ok(names)
    }

    fn uuid(&self) -> Option<[u8; 16]> {
        Some(self.uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an extent index whose entries all name one index block, whose entries all
    /// name one leaf, collected (entries per block)² runs from three blocks before the
    /// overlap was noticed: 462,400 here with 4 KiB blocks, 119 million (2.8 GiB) with 64
    /// KiB blocks. Extents are now counted as they are collected.
    #[test]
    fn extent_index_naming_one_block_many_times_is_refused_early() {
        let dir = std::env::temp_dir().join(format!("yunhe-ext4-dag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).expect("tmp");
        std::fs::write(dir.join("root/k"), vec![7u8; 5000]).expect("file");
        let img = dir.join("fs.img");
        let mkfs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(mkfs) = mkfs else {
            eprintln!("mke2fs is missing (Debian: e2fsprogs): skipping");
            return;
        };
        let ok = std::process::Command::new(mkfs)
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                "4096",
                "-O",
                "^has_journal",
                "-d",
            ])
            .arg(dir.join("root"))
            .arg(&img)
            .arg("1M")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mke2fs");
        let mut disk = std::fs::read(&img).expect("image");
        let _ = std::fs::remove_dir_all(&dir);

        let (ino, at) = {
            let d = disk.as_slice();
            let fs = Ext4::open(&d, 0, d.len() as u64)
                .expect("open")
                .expect("ext4");
            let ino = fs.lookup(fs.root(), "k").expect("lookup").expect("k");
            assert_eq!(fs.read_file(ino, 1 << 20).expect("read").len(), 5000);
            (ino, fs.inode_offset(ino as u32).expect("inode") as usize)
        };
        let put16 =
            |d: &mut Vec<u8>, at: usize, v: u16| d[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |d: &mut Vec<u8>, at: usize, v: u32| d[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let header = |d: &mut Vec<u8>, at: usize, entries: u16, depth: u16| {
            put16(d, at, EXTENT_MAGIC);
            put16(d, at + 2, entries);
            put16(d, at + 4, entries);
            put16(d, at + 6, depth);
        };
        let (index, leaf, per) = (200usize, 201usize, (4096 - 12) / 12);
        disk[at + 40..at + 100].fill(0);
        disk[index * 4096..(leaf + 1) * 4096].fill(0);
        // The inode's root: depth 2, four entries naming block 200.
        header(&mut disk, at + 40, 4, 2);
        for i in 0..4 {
            put32(&mut disk, at + 40 + 12 + i * 12 + 4, index as u32);
        }
        // Block 200: depth 1, every entry names block 201.
        header(&mut disk, index * 4096, per as u16, 1);
        for i in 0..per {
            put32(&mut disk, index * 4096 + 12 + i * 12 + 4, leaf as u32);
        }
        // Block 201: a leaf of one-block extents.
        header(&mut disk, leaf * 4096, per as u16, 0);
        for i in 0..per {
            let e = leaf * 4096 + 12 + i * 12;
            put16(&mut disk, e + 4, 1);
            put32(&mut disk, e + 8, 210);
        }
        let d = disk.as_slice();
        let fs = Ext4::open(&d, 0, d.len() as u64)
            .expect("open")
            .expect("ext4");
        let r = fs.read_file(ino, 1 << 20);
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("more extents than the file has blocks")),
            "{:?}",
            r.map(|v| v.len())
        );
    }
}
