//! Disk boot and qcow2 root disks through the real `yunhe serve` on /dev/kvm:
//! images without `kernel_id` boot the kernel their disk declares (here the
//! echo guest, a PVH ELF, placed as `/boot/vmlinuz-…` behind Debian's
//! `/vmlinuz` link on an ext4 filesystem built with mkfs.ext4 -d), also
//! uploaded as a compressed qcow2; bad disks (nothing bootable, a symlink
//! loop, a truncated partition table, a corrupt qcow2) put the server in
//! ERROR with a fault that says what was wrong, and no VMM is left running.
//! Skipped (with a message) where /dev/kvm, mkfs.ext4, sgdisk or qemu-img is missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, http, http_bytes};

const YUNHE: &str = env!("CARGO_BIN_EXE_yunhe");
const READY: &str = "yunhe echo guest: ready";

fn usable() -> bool {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let tools = [
        "/usr/sbin/mkfs.ext4",
        "/usr/sbin/sgdisk",
        "/usr/bin/qemu-img",
    ]
    .iter()
    .all(|t| Path::new(t).exists());
    if !kvm || !tools {
        eprintln!(
            "SKIPPED: needs /dev/kvm, mkfs.ext4, sgdisk and qemu-img (Debian: e2fsprogs gdisk qemu-utils)"
        );
    }
    kvm && tools
}

/// The state directory; on drop kills (by pid) the VMMs whose spec lies in it.
struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("yunhe-db-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        StateDir(dir)
    }

    fn vmm_pids(&self) -> Vec<i32> {
        let prefix = format!("{}/", self.0.display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let zombie = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            if args.len() >= 4 && args[1] == "vmm" && args[3].starts_with(&prefix) && !zombie {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        for pid in self.vmm_pids() {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.vmm_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(real) = std::fs::canonicalize(&self.0) {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(real.to_string_lossy().as_bytes());
            let _ =
                std::fs::remove_dir_all(Path::new("/run/yunhe").join(hex::encode(&digest[..6])));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn upload(server: &Server, token: &str, meta: Value, data: &[u8]) -> String {
    let created = server.request("POST", "/image/v2/images", Some(token), Some(&meta));
    assert_eq!(created.status, 201, "image create: {}", created.text);
    let id = created.json()["id"].as_str().expect("id").to_string();
    let put = http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        data,
    );
    assert_eq!(
        put.status,
        204,
        "upload: {}",
        String::from_utf8_lossy(&put.body)
    );
    id
}

fn nova(
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> support::Reply {
    http(
        &server.addr,
        method,
        &format!("/compute/v2.1{path}"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("OpenStack-API-Version", "compute 2.73".into()),
        ],
        body,
    )
}

/// Creates a server from `image` and waits until it is ACTIVE or ERROR.
fn boot(server: &Server, token: &str, name: &str, image: &str) -> (String, Value) {
    boot_body(
        server,
        token,
        name,
        json!({"name": name, "imageRef": image, "flavorRef": "42", "networks": "none"}),
    )
}

/// Creates a server from the request's `server` member and waits until it
/// is ACTIVE or ERROR.
fn boot_body(server: &Server, token: &str, name: &str, body: Value) -> (String, Value) {
    let reply = nova(
        server,
        token,
        "POST",
        "/servers",
        Some(&json!({ "server": body })),
    );
    assert_eq!(reply.status, 202, "create {name}: {}", reply.text);
    let id = reply.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let start = Instant::now();
    loop {
        let shown = nova(server, token, "GET", &format!("/servers/{id}"), None);
        let s = shown.json()["server"].clone();
        if (s["status"] == "ACTIVE" || s["status"] == "ERROR")
            && s["OS-EXT-STS:task_state"].is_null()
        {
            return (id, s);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name}: still {}",
            s["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn console(server: &Server, token: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = nova(
            server,
            token,
            "POST",
            &format!("/servers/{id}/action"),
            Some(&json!({"os-getConsoleOutput": {}})),
        );
        let out = r.json()["output"].as_str().unwrap_or("").to_string();
        if out.contains(READY) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An ext4 filesystem holding `files` (path → bytes) and `links` (path → target).
fn ext4(dir: &Path, name: &str, files: &[(&str, &[u8])], links: &[(&str, &str)]) -> PathBuf {
    let root = dir.join(format!("{name}-root"));
    for (p, data) in files {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, data).expect("write");
    }
    std::fs::create_dir_all(&root).expect("root");
    for (p, target) in links {
        std::os::unix::fs::symlink(target, root.join(p)).expect("symlink");
    }
    let img = dir.join(format!("{name}.ext4"));
    run(
        "/usr/sbin/mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            root.to_str().expect("p"),
            img.to_str().expect("p"),
            "8M",
        ],
    );
    img
}

/// A GPT disk with `fs` as partition 1 (sectors 2048..18431).
fn gpt_disk(dir: &Path, name: &str, fs: &Path) -> PathBuf {
    let disk = dir.join(format!("{name}.disk"));
    let f = std::fs::File::create(&disk).expect("disk");
    f.set_len(10 << 20).expect("size");
    drop(f);
    run(
        "/usr/sbin/sgdisk",
        &[
            "-n",
            "1:2048:18431",
            "-t",
            "1:8300",
            disk.to_str().expect("p"),
        ],
    );
    let data = std::fs::read(fs).expect("fs");
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .expect("disk");
    f.write_all_at(&data, 2048 * 512).expect("write");
    disk
}

#[test]
fn disks_boot_their_own_kernel_and_bad_disks_say_why() {
    if !usable() {
        return;
    }
    let state = StateDir::new("diskboot");
    let server = Server::start_in(state.0.clone(), true);
    let token = server.admin_token();
    let dir = state.0.join("scratch");
    std::fs::create_dir_all(&dir).expect("scratch");
    let elf = dir.join("echo.elf");
    run(
        YUNHE,
        &["vm", "guest", "echo", "-o", elf.to_str().expect("p")],
    );
    let kernel = std::fs::read(&elf).expect("echo.elf");

    // A GPT disk whose root has Debian's /vmlinuz link, uploaded as a
    // compressed qcow2 without kernel_id: boots the echo guest from the disk.
    let fs = ext4(
        &dir,
        "good",
        &[("boot/vmlinuz-6.1.0-echo", &kernel)],
        &[("vmlinuz", "boot/vmlinuz-6.1.0-echo")],
    );
    let raw = gpt_disk(&dir, "good", &fs);
    let qcow2 = dir.join("good.qcow2");
    run(
        "/usr/bin/qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().expect("p"),
            qcow2.to_str().expect("p"),
        ],
    );
    let image = upload(
        &server,
        &token,
        json!({"name": "disk-qcow2", "disk_format": "qcow2", "container_format": "bare"}),
        &std::fs::read(&qcow2).expect("qcow2"),
    );
    let (id, s) = boot(&server, &token, "good", &image);
    assert_eq!(s["status"], "ACTIVE", "fault: {}", s["fault"]);
    let out = console(&server, &token, &id);
    assert!(out.contains(READY), "console: {out}");
    // The same qcow2 image as a boot volume (block device mapping image ->
    // volume): the volume service converts it with the qcow2 reader, and
    // the volume's disk boots.
    let (vol_id, vs) = boot_body(
        &server,
        &token,
        "good-volume",
        json!({"name": "good-volume", "flavorRef": "42", "networks": "none",
               "block_device_mapping_v2": [{
                   "source_type": "image", "destination_type": "volume", "uuid": image,
                   "boot_index": 0, "volume_size": 1, "delete_on_termination": true}]}),
    );
    assert_eq!(vs["status"], "ACTIVE", "fault: {}", vs["fault"]);
    let out = console(&server, &token, &vol_id);
    assert!(out.contains(READY), "volume-backed console: {out}");
    let r = nova(
        &server,
        &token,
        "DELETE",
        &format!("/servers/{vol_id}"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    // Reboot: the disk is read again (and still boots).
    let r = nova(
        &server,
        &token,
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"reboot": {"type": "HARD"}})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let start = Instant::now();
    loop {
        let s =
            nova(&server, &token, "GET", &format!("/servers/{id}"), None).json()["server"].clone();
        if s["status"] == "ACTIVE" && s["OS-EXT-STS:task_state"].is_null() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "reboot: {}",
            s["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        state
            .0
            .join("images-raw")
            .join(format!("{image}.raw"))
            .exists()
    );

    // Bad disks → ERROR with the reason.
    let empty = ext4(&dir, "empty", &[("etc/hostname", b"x\n")], &[]);
    let looped = ext4(&dir, "loop", &[], &[("vmlinuz", "a"), ("a", "vmlinuz")]);
    // A GPT made for a 64 GiB disk, cut to its first 10 MiB (the root disk is
    // grown to the flavor's size, still far short of where partition 1 ends).
    let truncated = {
        let disk = dir.join("trunc.disk");
        let f = std::fs::File::create(&disk).expect("disk");
        f.set_len(64 << 30).expect("size");
        drop(f);
        run(
            "/usr/sbin/sgdisk",
            &["-n", "1:2048:0", "-t", "1:8300", disk.to_str().expect("p")],
        );
        let mut data = std::fs::read(&fs).expect("fs");
        data.truncate((10 << 20) - 2048 * 512);
        let mut head = vec![0u8; 2048 * 512];
        use std::io::Read;
        std::fs::File::open(&disk)
            .expect("disk")
            .read_exact(&mut head)
            .expect("head");
        let _ = std::fs::remove_file(&disk);
        head.extend_from_slice(&data);
        head
    };
    let mut corrupt = std::fs::read(&qcow2).expect("qcow2");
    // The L1 table's offset (header bytes 40..48) far past the end.
    corrupt[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes());
    let cases: [(&str, &str, Vec<u8>, &str); 4] = [
        (
            "empty",
            "raw",
            std::fs::read(gpt_disk(&dir, "empty", &empty)).expect("disk"),
            "no bootable kernel found",
        ),
        (
            "loop",
            "raw",
            std::fs::read(&looped).expect("disk"),
            "filesystem loop",
        ),
        ("truncated", "raw", truncated, "bad partition table"),
        ("corrupt", "qcow2", corrupt, "corrupt qcow2 image"),
    ];
    for (name, format, data, why) in cases {
        let image = upload(
            &server,
            &token,
            json!({"name": name, "disk_format": format, "container_format": "bare"}),
            &data,
        );
        let (id, s) = boot(&server, &token, name, &image);
        assert_eq!(s["status"], "ERROR", "{name}: {s}");
        let fault = s["fault"]["message"].as_str().unwrap_or("").to_string();
        assert!(
            fault.contains(why),
            "{name}: fault {fault:?} should say {why:?}"
        );
        let r = nova(&server, &token, "DELETE", &format!("/servers/{id}"), None);
        assert_eq!(r.status, 204);
    }
    let start = Instant::now();
    while state.vmm_pids().len() > 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state.vmm_pids().len(), 1, "only the good server's VMM runs");
}
