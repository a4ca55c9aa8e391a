//! Disk images built here with the distributions' own tools (mkfs.ext4 -d,
//! mkfs.vfat + mtools, sgdisk, sfdisk), as the images users upload are laid out.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const UUID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const LIMITS: Limits = Limits { initrd: 64 << 20 };

fn have(tools: &[&str]) -> bool {
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).exists()))
            || Path::new("/usr/sbin").join(t).exists()
            || Path::new("/sbin").join(t).exists();
        if !found {
            eprintln!("{t} is missing (Debian: e2fsprogs dosfstools mtools gdisk fdisk): skipping");
            return false;
        }
    }
    true
}

fn run(cmd: &str, args: &[&str]) {
    let path = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(cmd));
    let out = Command::new(path).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Tmp(PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(name: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("yunhe-diskboot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp");
    Tmp(d)
}

fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("dir");
    }
    std::fs::write(path, data).expect("write");
}

fn kernel(tag: &str, len: usize) -> Vec<u8> {
    let mut k = format!("KERNEL {tag} ").into_bytes();
    let mut x = tag.len() as u32;
    while k.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        k.push((x >> 24) as u8);
    }
    k
}

fn mkfs_ext4(root: &Path, image: &Path, size: &str, extra: &[&str]) {
    let mut args = vec!["-q", "-F", "-U", UUID, "-d"];
    let r = root.to_str().expect("path");
    args.push(r);
    args.extend_from_slice(extra);
    let i = image.to_str().expect("path");
    args.push(i);
    args.push(size);
    run("mkfs.ext4", &args);
}

fn splice(disk: &Path, at: u64, part: &Path) {
    use std::os::unix::fs::FileExt;
    let data = std::fs::read(part).expect("part");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .expect("disk");
    f.write_all_at(&data, at).expect("splice");
}

fn blank(path: &Path, mib: u64) {
    let f = std::fs::File::create(path).expect("disk");
    f.set_len(mib << 20).expect("size");
}

fn find_file(path: &Path) -> Result<Found> {
    let f = std::fs::File::open(path).expect("open");
    find(&f, LIMITS)
}

const GRUB_CFG: &str = r#"set default="0"
insmod part_gpt
search --no-floppy --fs-uuid --set=root FSUUID
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple' {
	insmod ext2
	set root='hd0,gpt1'
	search --no-floppy --fs-uuid --set=root FSUUID
	linux	/boot/vmlinuz-KVER root=PARTUUID=ffff ro console=tty0 console=ttyS0,115200
	initrd	/boot/initrd.img-KVER
}
"#;

/// Debian genericcloud's layout: GPT with root (1), BIOS boot (14) and an ESP
/// (15) whose grub.cfg hands over to /boot/grub/grub.cfg on the root.
fn debian_like(d: &Path, kver: &str) -> PathBuf {
    let root = d.join("root");
    write(
        &root.join(format!("boot/vmlinuz-{kver}")),
        &kernel(kver, 300_000),
    );
    write(
        &root.join(format!("boot/initrd.img-{kver}")),
        b"070701initrd",
    );
    write(
        &root.join("boot/grub/grub.cfg"),
        GRUB_CFG
            .replace("FSUUID", UUID)
            .replace("KVER", kver)
            .as_bytes(),
    );
    std::os::unix::fs::symlink(format!("boot/vmlinuz-{kver}"), root.join("vmlinuz")).expect("ln");
    let ext = d.join("root.img");
    mkfs_ext4(&root, &ext, "16M", &[]);
    let esp = d.join("esp.img");
    let _ = std::fs::remove_file(&esp);
    run(
        "mkfs.vfat",
        &["-C", "-i", "12345678", esp.to_str().expect("p"), "8192"],
    );
    let stub = d.join("stub.cfg");
    write(
        &stub,
        format!("search.fs_uuid {UUID} root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n").as_bytes(),
    );
    let e = esp.to_str().expect("p");
    run("mmd", &["-i", e, "::/EFI", "::/EFI/debian"]);
    run(
        "mcopy",
        &["-i", e, stub.to_str().expect("p"), "::/EFI/debian/grub.cfg"],
    );
    let disk = d.join("disk.img");
    blank(&disk, 40);
    let p = disk.to_str().expect("p");
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:34815",
            "-t",
            "1:8300",
            "-n",
            "15:34816:51199",
            "-t",
            "15:ef00",
            "-n",
            "14:51200:53247",
            "-t",
            "14:ef02",
            p,
        ],
    );
    splice(&disk, 2048 * 512, &ext);
    splice(&disk, 34816 * 512, &esp);
    disk
}

#[test]
fn debian_genericcloud_layout_boots_grubs_default_entry() {
    if !have(&["mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "sgdisk"]) {
        return;
    }
    let t = tmp("debian");
    let disk = debian_like(&t.0, "6.1.0-13-cloud-amd64");
    let f = find_file(&disk).expect("boots");
    assert_eq!(f.kernel, kernel("6.1.0-13-cloud-amd64", 300_000));
    assert_eq!(f.initrd.as_deref(), Some(&b"070701initrd"[..]));
    assert_eq!(
        f.cmdline,
        "root=PARTUUID=ffff ro console=tty0 console=ttyS0,115200"
    );
    assert!(f.source.contains("grub.cfg"), "{}", f.source);

    // The ESP's stub alone (the root's grub.cfg hidden behind it) hands over.
    let parts = part::partitions(&std::fs::File::open(&disk).expect("open"))
        .expect("gpt")
        .expect("some");
    assert_eq!(
        parts
            .iter()
            .map(|p| (p.number, p.esp, p.bios_boot))
            .collect::<Vec<_>>(),
        vec![(1, false, false), (14, false, true), (15, true, false)]
    );
}

#[test]
fn a_kernel_upgraded_in_the_guest_is_the_one_found() {
    if !have(&["mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "sgdisk"]) {
        return;
    }
    let t = tmp("upgrade");
    let disk = debian_like(&t.0, "6.1.0-13-cloud-amd64");
    assert!(find_file(&disk).expect("boots").source.contains("6.1.0-13"));
    // "apt upgrade" inside the guest: a new kernel and a regenerated grub.cfg.
    let t2 = tmp("upgrade2");
    let disk2 = debian_like(&t2.0, "6.1.0-15-cloud-amd64");
    let f = find_file(&disk2).expect("boots");
    assert_eq!(f.kernel, kernel("6.1.0-15-cloud-amd64", 300_000));
}

#[test]
fn mbr_and_debian_links_and_old_block_maps() {
    if !have(&["mkfs.ext4", "sfdisk"]) {
        return;
    }
    let t = tmp("mbr");
    let root = t.0.join("root");
    // 1 KiB blocks without extents: the kernel needs double-indirect blocks.
    write(
        &root.join("boot/vmlinuz-5.10.0-1-amd64"),
        &kernel("old", 700_000),
    );
    write(&root.join("boot/initrd.img-5.10.0-1-amd64"), b"070701x");
    std::os::unix::fs::symlink("boot/vmlinuz-5.10.0-1-amd64", root.join("vmlinuz")).expect("ln");
    std::os::unix::fs::symlink("boot/initrd.img-5.10.0-1-amd64", root.join("initrd.img"))
        .expect("ln");
    let ext = t.0.join("root.img");
    mkfs_ext4(
        &root,
        &ext,
        "8M",
        &["-b", "1024", "-O", "^extent,^64bit,^flex_bg"],
    );
    let disk = t.0.join("disk.img");
    blank(&disk, 12);
    let script = t.0.join("layout");
    write(&script, b"label: dos\nstart=2048, size=16384, type=83\n");
    let out = Command::new("/usr/sbin/sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::fs::File::open(&script).expect("script"))
        .output()
        .expect("sfdisk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    splice(&disk, 2048 * 512, &ext);
    let f = find_file(&disk).expect("boots");
    assert_eq!(f.kernel, kernel("old", 700_000));
    assert_eq!(f.initrd.as_deref(), Some(&b"070701x"[..]));
    assert_eq!(f.cmdline, format!("root=UUID={UUID} ro console=ttyS0"));
}

#[test]
fn whole_disk_ext4_with_extlinux() {
    if !have(&["mkfs.ext4"]) {
        return;
    }
    let t = tmp("extlinux");
    let root = t.0.join("root");
    write(&root.join("boot/vmlinuz"), &kernel("ext", 5000));
    write(
        &root.join("boot/extlinux/extlinux.conf"),
        b"DEFAULT yunhe\nLABEL yunhe\n  KERNEL ../vmlinuz\n  APPEND root=/dev/vda rw console=ttyS0\n",
    );
    let disk = t.0.join("disk.img");
    mkfs_ext4(&root, &disk, "8M", &[]);
    let f = find_file(&disk).expect("boots");
    assert_eq!(f.kernel, kernel("ext", 5000));
    assert_eq!(f.cmdline, "root=/dev/vda rw console=ttyS0");
    assert!(f.initrd.is_none());
}

#[test]
fn bls_entries_on_an_esp_newest_version_first() {
    if !have(&["mkfs.vfat", "mmd", "mcopy", "sgdisk"]) {
        return;
    }
    let t = tmp("bls");
    let esp = t.0.join("esp.img");
    run(
        "mkfs.vfat",
        &["-C", "-F", "32", esp.to_str().expect("p"), "40000"],
    );
    let e = esp.to_str().expect("p");
    run("mmd", &["-i", e, "::/loader", "::/loader/entries"]);
    for (v, name) in [("6.5.6-300.fc39", "a-old"), ("6.10.3-200.fc40", "b-new")] {
        let conf = t.0.join(format!("{name}.conf"));
        write(
            &conf,
            format!("title Fedora ({v})\nversion {v}\nlinux /vmlinuz-{v}\ninitrd /initramfs-{v}.img\noptions root=UUID=x ro\n").as_bytes(),
        );
        let k = t.0.join(format!("k-{name}"));
        write(&k, &kernel(v, 70_000));
        let i = t.0.join(format!("i-{name}"));
        write(&i, v.as_bytes());
        run(
            "mcopy",
            &[
                "-i",
                e,
                conf.to_str().expect("p"),
                &format!("::/loader/entries/fedora-{v}.conf"),
            ],
        );
        run(
            "mcopy",
            &["-i", e, k.to_str().expect("p"), &format!("::/vmlinuz-{v}")],
        );
        run(
            "mcopy",
            &[
                "-i",
                e,
                i.to_str().expect("p"),
                &format!("::/initramfs-{v}.img"),
            ],
        );
    }
    let disk = t.0.join("disk.img");
    blank(&disk, 48);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+40000K",
            "-t",
            "1:ef00",
            disk.to_str().expect("p"),
        ],
    );
    splice(&disk, 2048 * 512, &esp);
    let f = find_file(&disk).expect("boots");
    assert_eq!(f.kernel, kernel("6.10.3-200.fc40", 70_000));
    assert_eq!(f.initrd.as_deref(), Some(&b"6.10.3-200.fc40"[..]));
    assert_eq!(f.cmdline, "root=UUID=x ro console=ttyS0");
}

#[test]
fn bad_disks_say_what_is_wrong() {
    if !have(&["mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "sgdisk"]) {
        return;
    }
    let t = tmp("bad");
    // Nothing bootable.
    let root = t.0.join("empty");
    write(&root.join("etc/hostname"), b"x\n");
    let disk = t.0.join("empty.img");
    mkfs_ext4(&root, &disk, "4M", &[]);
    let e = find_file(&disk).expect_err("nothing");
    assert!(e.to_string().starts_with("no bootable kernel found"), "{e}");

    // A symlink loop.
    let root = t.0.join("loop");
    std::fs::create_dir_all(&root).expect("dir");
    std::os::unix::fs::symlink("a", root.join("vmlinuz")).expect("ln");
    std::os::unix::fs::symlink("vmlinuz", root.join("a")).expect("ln");
    let disk = t.0.join("loop.img");
    mkfs_ext4(&root, &disk, "4M", &[]);
    let e = find_file(&disk).expect_err("loop");
    assert!(matches!(e, DiskBootError::Loop(_)), "{e}");
    assert!(e.to_string().contains("filesystem loop"), "{e}");

    // A truncated GPT disk.
    let full = debian_like(&t.0, "6.1");
    let data = std::fs::read(&full).expect("read");
    for cut in [700usize, 4096, 20 << 20] {
        let e = find(&&data[..cut], LIMITS).expect_err("truncated");
        assert!(
            matches!(e, DiskBootError::PartitionTable(_)),
            "cut at {cut}: {e}"
        );
        assert!(e.to_string().contains("partition"), "{e}");
    }
    // An empty disk.
    let e = find(&&vec![0u8; 1 << 20][..], LIMITS).expect_err("zeros");
    assert!(e.to_string().contains("no ext2/3/4 or FAT"), "{e}");
}

/// Random damage to a real layout: errors, never a panic or a hang.
#[test]
fn damaged_disks_never_panic() {
    if !have(&["mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "sgdisk"]) {
        return;
    }
    let t = tmp("damage");
    let disk = debian_like(&t.0, "6.1");
    let clean = std::fs::read(&disk).expect("read");
    // Only the metadata-heavy regions: GPT, the ext4 start, the ESP start.
    let hot = [
        (0usize, 34 * 512),
        (2048 * 512, 2048 * 512 + 300_000),
        (34816 * 512, 34816 * 512 + 65536),
    ];
    let mut x = 0x9e37_79b9u32;
    let started = std::time::Instant::now();
    for round in 0..150 {
        let mut d = clean.clone();
        for _ in 0..(1 + round % 16) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let (a, b) = hot[(x as usize >> 3) % hot.len()];
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let at = a + (x as usize % (b - a));
            d[at] = (x >> 16) as u8;
        }
        let _ = find(&&d[..], LIMITS);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
}

/// Regression: every path component is a directory read, and nothing bounded how many a disk
/// could ask for. Forty symlinks chained, each a 4 KiB target `d/z/../z/../…` that looks `z`
/// up in a 450 KiB directory 680 times, made a 4 MiB disk read about 12 GiB. The reads of one
/// `find` are now budgeted (64 × the disk's size + 16 MiB here).
#[test]
fn path_lookups_cannot_read_the_disk_over_and_over() {
    if !have(&["mkfs.ext4"]) {
        return;
    }
    let t = tmp("lookups");
    let root = t.0.join("root");
    let d = root.join("d");
    std::fs::create_dir_all(d.join("z")).expect("dir");
    for i in 0..2000 {
        write(&d.join(format!("{i:0>200}")), b"");
    }
    let mut target = "d".to_string();
    while target.len() < 4000 {
        target.push_str("/z/..");
    }
    std::os::unix::fs::symlink(format!("{target}/../vmlinuz-1"), root.join("vmlinuz")).expect("ln");
    for i in 1..45 {
        std::os::unix::fs::symlink(
            format!("{target}/../vmlinuz-{}", i + 1),
            root.join(format!("vmlinuz-{i}")),
        )
        .expect("ln");
    }
    let image = t.0.join("disk.img");
    mkfs_ext4(&root, &image, "4M", &["-b", "4096", "-N", "2100"]);
    let started = std::time::Instant::now();
    let e = find_file(&image).expect_err("no kernel");
    assert!(e.to_string().contains("MiB of the disk"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

/// Regression: a GPT entry from LBA 0 to u64::MAX overflowed `last - first + 1` (a panic with
/// overflow checks, a zero-length partition without).
#[test]
fn a_gpt_entry_to_the_last_lba_is_past_the_end() {
    let mut d = vec![0u8; 64 << 10];
    d[446 + 4] = 0xee;
    d[510] = 0x55;
    d[511] = 0xaa;
    d[512..520].copy_from_slice(b"EFI PART");
    d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
    d[512 + 80..512 + 84].copy_from_slice(&1u32.to_le_bytes());
    d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
    d[1024] = 1;
    d[1024 + 40..1024 + 48].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = part::partitions(&d.as_slice()).expect_err("past the end");
    assert!(e.to_string().contains("past the end"), "{e}");
}
