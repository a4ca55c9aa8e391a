//! Issue 9, finding 9: the VMMs `yunhe serve` starts are confined (vmm/jail.rs).
//!
//! * `served_vmm_is_jailed`: a server's VMM runs under its own uid with no
//!   capabilities, NoNewPrivs, a seccomp filter on every thread, its own
//!   mount/PID/IPC/UTS/network namespaces, a root holding only the server's
//!   files and /dev/kvm, no descriptor beyond the expected ones, and a cgroup
//!   with the flavor's limits; suspend/resume (save/restore through the
//!   jail's paths) and delete still work, and delete leaves no cgroup or
//!   mount point behind.
//! * `guest_memory_is_charged_to_the_vms_cgroup`: every VMM thread is in the
//!   server's cgroup, and the guest memory the VMM touched is charged there
//!   (the VMM was in it before it touched any).
//! * `non_root_serve_refuses_a_socket_directory_it_does_not_own`: serve run
//!   as an unprivileged user refuses a socket directory another user created
//!   or that others may write to.
//!
//! Root and /dev/kvm are needed (skipped with a message otherwise). Guards
//! kill leftover VMMs by pid and remove state, socket directories and cgroups
//! even when an assertion fails.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, http, http_bytes};

const YUNHE: &str = env!("CARGO_BIN_EXE_yunhe");
const READY: &str = "yunhe echo guest: ready";
const MV: &str = "2.73";

fn root_with_kvm() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let kvm = Path::new("/dev/kvm").exists();
    if !root || !kvm {
        eprintln!("SKIPPED: needs root and /dev/kvm (root {root}, kvm {kvm})");
    }
    root && kvm
}

/// The sockets directory serve uses for `state` (src/compute/virt.rs).
fn sockets_dir(state: &Path) -> PathBuf {
    use sha2::Digest;
    let real = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    let digest = sha2::Sha256::digest(real.to_string_lossy().as_bytes());
    PathBuf::from("/run/yunhe").join(hex::encode(&digest[..6]))
}

/// Every cgroup directory a VMM of server `id` may have (v2 and v1 layouts).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/yunhe",
        "/sys/fs/cgroup/unified/yunhe",
        "/sys/fs/cgroup/cpu/yunhe",
        "/sys/fs/cgroup/memory/yunhe",
        "/sys/fs/cgroup/pids/yunhe",
    ]
    .iter()
    .map(|p| Path::new(p).join(id))
    .collect()
}

/// A state directory; on drop kills (by pid) every VMM whose spec lies in it,
/// then removes its cgroups, its socket directory and itself.
struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("yunhe-sj-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the state directory");
        StateDir(dir)
    }

    fn vmm_pids(&self) -> Vec<i32> {
        let prefix = format!("{}/", self.0.display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let text = String::from_utf8_lossy(&raw);
            let args: Vec<&str> = text.split('\0').collect();
            let zombie = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            if args.get(1) == Some(&"vmm")
                && args.get(3).is_some_and(|s| s.starts_with(&prefix))
                && !zombie
            {
                pids.push(pid);
            }
        }
        pids
    }

    fn vmm_of(&self, id: &str) -> Option<i32> {
        let pids: Vec<i32> = self
            .vmm_pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(id))
            })
            .collect();
        assert!(pids.len() <= 1, "server {id} has several VMMs: {pids:?}");
        pids.first().copied()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        for pid in self.vmm_pids() {
            eprintln!("killing leftover VMM {pid}");
            // SAFETY: kill(2) with a pid read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.vmm_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let instances = self.0.join("instances");
        for entry in std::fs::read_dir(&instances)
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            for dir in cgroup_dirs(&id) {
                for _ in 0..50 {
                    if !dir.exists() || std::fs::remove_dir(&dir).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = std::fs::remove_dir_all(sockets_dir(&self.0));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nova(addr: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    http(
        addr,
        method,
        &format!("/compute/v2.1{path}"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("OpenStack-API-Version", format!("compute {MV}")),
        ],
        body,
    )
}

fn upload_image(addr: &str, token: &str, meta: Value, data: &[u8]) -> String {
    let created = http(
        addr,
        "POST",
        "/image/v2/images",
        &[("X-Auth-Token", token.to_string())],
        Some(&meta),
    );
    assert_eq!(created.status, 201, "image create: {}", created.text);
    let id = created.json()["id"].as_str().expect("image id").to_string();
    let put = http_bytes(
        addr,
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

/// The echo guest as a kernel image.
fn echo_kernel(addr: &str, token: &str, scratch: &Path) -> String {
    let elf = scratch.join("echo.elf");
    let status = std::process::Command::new(YUNHE)
        .args(["vm", "guest", "echo", "-o"])
        .arg(&elf)
        .status()
        .expect("yunhe vm guest echo");
    assert!(status.success());
    upload_image(
        addr,
        token,
        json!({"name": "echo-kernel", "disk_format": "aki", "container_format": "aki"}),
        &std::fs::read(&elf).expect("echo.elf"),
    )
}

/// The echo guest as a kernel image and a 1 MiB disk image naming it.
fn echo_image(addr: &str, token: &str, scratch: &Path) -> String {
    let kernel = echo_kernel(addr, token, scratch);
    upload_image(
        addr,
        token,
        json!({"name": "echo-disk", "disk_format": "raw", "container_format": "bare",
               "kernel_id": kernel}),
        &vec![0u8; 1 << 20],
    )
}

fn wait_status(addr: &str, token: &str, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = nova(addr, token, "GET", &format!("/servers/{id}"), None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let sv = reply.json()["server"].clone();
        if sv["status"] == want && sv["OS-EXT-STS:task_state"].is_null() {
            return sv;
        }
        assert!(
            sv["status"] != "ERROR" || want == "ERROR",
            "server went to ERROR: {}",
            sv["fault"]
        );
        assert!(Instant::now() < deadline, "not {want} within 30 s: {sv}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn action(addr: &str, token: &str, id: &str, body: Value) {
    let reply = nova(
        addr,
        token,
        "POST",
        &format!("/servers/{id}/action"),
        Some(&body),
    );
    assert_eq!(reply.status, 202, "{body}: {}", reply.text);
}

fn console_has(addr: &str, token: &str, id: &str, needle: &str, times: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let reply = nova(
            addr,
            token,
            "POST",
            &format!("/servers/{id}/action"),
            Some(&json!({"os-getConsoleOutput": {}})),
        );
        if reply.json()["output"]
            .as_str()
            .unwrap_or("")
            .matches(needle)
            .count()
            >= times
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The value of `field` in a /proc status file.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in status"))
}

/// Every path below `root` (relative), not following symlinks or leaving it.
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in entries.flatten() {
        let r = rel.join(e.file_name());
        out.push(r.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &r, out);
        }
    }
}

fn assert_confined(pid: i32, id: &str, instance_dir: &Path) {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc_dir.join("status")).expect("status");
    for field in ["Uid", "Gid"] {
        let ids = status_field(&status, field);
        assert!(
            ids.split_whitespace().all(|v| v != "0"),
            "VMM {pid} {field}: {ids}"
        );
    }
    assert_eq!(status_field(&status, "Groups"), "", "supplementary groups");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");

    // Every thread has a seccomp filter.
    let mut threads = Vec::new();
    for task in std::fs::read_dir(proc_dir.join("task"))
        .expect("tasks")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let st = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if st.is_empty() {
            continue; // exited meanwhile
        }
        threads.push(comm.trim().to_string());
        assert_eq!(
            status_field(&st, "Seccomp"),
            "2",
            "thread {} ({}) has no seccomp filter",
            task.file_name().to_string_lossy(),
            comm.trim()
        );
    }
    for want in [
        "yunhe-control",
        "yunhe-devices",
        "yunhe-vcpu0",
        "yunhe-watchdog",
    ] {
        assert!(
            threads.iter().any(|t| t == want),
            "no {want} in {threads:?}"
        );
    }

    // Its own namespaces (serve runs in this test's).
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("own ns");
        let its = std::fs::read_link(proc_dir.join("ns").join(ns)).expect("VMM ns");
        assert_ne!(mine, its, "the VMM shares the {ns} namespace");
    }

    // Its root holds /dev/kvm (and /dev/net/tun) and the server's directory only.
    let root = proc_dir.join("root");
    let inside = instance_dir.strip_prefix("/").expect("absolute");
    let mut all = Vec::new();
    walk(&root, Path::new(""), &mut all);
    for path in &all {
        let allowed = inside.starts_with(path)
            || path.starts_with(inside)
            || ["dev", "dev/kvm", "dev/net", "dev/net/tun"]
                .iter()
                .any(|d| path == Path::new(d));
        assert!(allowed, "the VMM's root holds {}", path.display());
    }
    assert!(all.iter().any(|p| p == Path::new("dev/kvm")), "no /dev/kvm");
    let kernel = root.join(inside).join("kernel");
    assert!(kernel.exists(), "the server's kernel is not in the root");
    // Nothing of the host: no /proc, /etc, /tmp, the state file.
    for host in ["proc", "etc", "usr", "bin"] {
        assert!(!root.join(host).exists(), "the VMM's root has /{host}");
    }

    // Descriptors: standard ones, KVM, eventfds/epoll, sockets, the server's files.
    for fd in std::fs::read_dir(proc_dir.join("fd"))
        .expect("fds")
        .flatten()
    {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        let ok = t == "/dev/null"
            || t == "/dev/kvm"
            || t.starts_with("anon_inode:")
            || t.starts_with("socket:")
            || t == format!("/proc/{pid}/statm")
            || t.contains(id);
        assert!(ok, "VMM fd {} is {t}", fd.file_name().to_string_lossy());
    }
}

/// The VMM's cgroup limits: (memory bytes, cpu quota µs per 100 ms).
fn cgroup_limits(pid: i32, id: &str) -> Option<(u64, String)> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let suffix = format!("/yunhe/{id}");
    assert!(
        cgroups.contains(&suffix),
        "VMM not in a yunhe cgroup: {cgroups}"
    );
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    for v2 in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Some(mem) = read(&format!("{v2}{suffix}/memory.max")) {
            let cpu = read(&format!("{v2}{suffix}/cpu.max"))?;
            return Some((mem.parse().ok()?, cpu));
        }
    }
    let mem = read(&format!(
        "/sys/fs/cgroup/memory{suffix}/memory.limit_in_bytes"
    ))?;
    let quota = read(&format!("/sys/fs/cgroup/cpu{suffix}/cpu.cfs_quota_us"))?;
    let period = read(&format!("/sys/fs/cgroup/cpu{suffix}/cpu.cfs_period_us"))?;
    Some((mem.parse().ok()?, format!("{quota} {period}")))
}

#[test]
fn served_vmm_is_jailed() {
    if !root_with_kvm() {
        return;
    }
    let state = StateDir::new("jailed");
    let serve = Server::start_in(state.0.clone(), true);
    let token = serve.admin_token();
    let server = serve.addr.as_str();
    let image = echo_image(server, &token, &state.0);
    let created = nova(
        server,
        &token,
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "jailed", "imageRef": image, "flavorRef": "42",
                                "networks": "none"}}),
        ),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let shown = wait_status(server, &token, &id, "ACTIVE");
    assert!(console_has(server, &token, &id, READY, 1), "no ready line");
    let pid = state.vmm_of(&id).expect("a VMM");
    let instance_dir = std::fs::canonicalize(state.0.join("instances").join(&id)).expect("dir");
    assert_confined(pid, &id, &instance_dir);
    assert_threads_in_cgroup(pid, &id);

    // The cgroup carries the flavor's limits.
    let flavor = nova(server, &token, "GET", "/flavors/42", None).json();
    let ram = flavor["flavor"]["ram"].as_u64().expect("ram");
    let vcpus = flavor["flavor"]["vcpus"].as_u64().expect("vcpus");
    match cgroup_limits(pid, &id) {
        Some((memory, cpu)) => {
            assert!(
                memory > ram << 20,
                "memory limit {memory} not above the RAM"
            );
            assert!(
                memory <= (ram + 128) << 20,
                "memory limit {memory} too loose"
            );
            assert_eq!(cpu, format!("{} 100000", vcpus * 100_000), "cpu limit");
        }
        None => eprintln!("NOTE: this host has no cpu/memory cgroup controllers"),
    }
    assert!(shown["OS-EXT-STS:power_state"] == 1, "{shown}");

    // Suspend writes the state through the jail; resume reads it back.
    action(server, &token, &id, json!({"suspend": null}));
    wait_status(server, &token, &id, "SUSPENDED");
    action(server, &token, &id, json!({"resume": null}));
    wait_status(server, &token, &id, "ACTIVE");
    let resumed = state.vmm_of(&id).expect("a VMM after resume");
    assert_ne!(resumed, pid);
    assert_confined(resumed, &id, &instance_dir);
    assert_threads_in_cgroup(resumed, &id);

    // Reboot (a VM rebuilt inside the jail) and console still work.
    action(server, &token, &id, json!({"reboot": {"type": "HARD"}}));
    wait_status(server, &token, &id, "ACTIVE");
    assert!(
        console_has(server, &token, &id, READY, 2),
        "no ready line after reboot"
    );

    // Delete: VMM, cgroup, socket and mount point are gone.
    let delete = nova(server, &token, "DELETE", &format!("/servers/{id}"), None);
    assert_eq!(delete.status, 204, "{}", delete.text);
    let deadline = Instant::now() + Duration::from_secs(30);
    while nova(server, &token, "GET", &format!("/servers/{id}"), None).status != 404 {
        assert!(Instant::now() < deadline, "server not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let leftovers = || -> Vec<PathBuf> {
        let mut left: Vec<PathBuf> = cgroup_dirs(&id)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        for name in [format!("{id}.root"), format!("{id}.sock")] {
            let p = sockets_dir(&state.0).join(name);
            if p.exists() {
                left.push(p);
            }
        }
        left
    };
    while !leftovers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        leftovers(),
        Vec::<PathBuf>::new(),
        "left behind after delete"
    );
    assert_eq!(state.vmm_of(&id), None);
}

/// Every thread of VMM `pid` is in the server's cgroup, in each hierarchy
/// the jail uses (the v2 one, or v1's cpu, memory and pids).
fn assert_threads_in_cgroup(pid: i32, id: &str) {
    let suffix = format!("/yunhe/{id}");
    let mut seen = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(task.path().join("cgroup")) else {
            continue; // exited meanwhile
        };
        seen += 1;
        let tid = task.file_name().to_string_lossy().into_owned();
        let ours: Vec<&str> = text.lines().filter(|l| l.ends_with(&suffix)).collect();
        if ours.iter().any(|l| l.starts_with("0::")) {
            continue;
        }
        for controller in ["cpu", "memory", "pids"] {
            assert!(
                ours.iter().any(|l| l
                    .split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))),
                "thread {tid} of VMM {pid} is not in {controller}:{suffix}: {text}"
            );
        }
    }
    assert!(seen > 1, "VMM {pid} has no threads");
}

/// Anonymous memory charged to the server's memory cgroup (bytes).
fn cgroup_anon_bytes(id: &str) -> Option<u64> {
    let stat = |path: String, key: &str| -> Option<u64> {
        std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    for v2 in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Some(anon) = stat(format!("{v2}/yunhe/{id}/memory.stat"), "anon") {
            return Some(anon);
        }
    }
    stat(
        format!("/sys/fs/cgroup/memory/yunhe/{id}/memory.stat"),
        "rss",
    )
}

/// An uncompressed initramfs (cpio "newc") holding one file of `size` bytes
/// of 0x5a: the VMM copies every byte of it into guest memory.
fn filler_initramfs(size: usize) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let fields = [1, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(format!("{:08x}{:08x}", name.len() + 1, 0).as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::with_capacity(size + 512);
    entry(&mut out, "filler", 0o100644, &vec![0x5a; size]);
    entry(&mut out, "TRAILER!!!", 0, &[]);
    out
}

/// One command on a VMM's control socket.
fn vmm_command(state: &Path, id: &str, cmd: &str) -> Value {
    use std::io::{BufRead, Write};
    let path = sockets_dir(state).join(format!("{id}.sock"));
    let mut stream = std::os::unix::net::UnixStream::connect(&path).expect("control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .expect("reply");
    serde_json::from_str(&line).expect("JSON reply")
}

/// The VMM is in its cgroup before it touches guest memory: serve makes the
/// cgroup first, and the VMM is started in it (cgroup v2) or moves itself
/// into it before it maps guest memory (v1, which never moves pages charged
/// before a migration). So the guest memory the VMM touched, here a 16 MiB
/// ramdisk it copies in, is charged to the VM's memory cgroup, far above the
/// VMM's own anonymous memory (under 1 MiB).
#[test]
fn guest_memory_is_charged_to_the_vms_cgroup() {
    if !root_with_kvm() {
        return;
    }
    const RAMDISK: usize = 16 << 20;
    let state = StateDir::new("charge");
    let serve = Server::start_in(state.0.clone(), true);
    let token = serve.admin_token();
    let server = serve.addr.as_str();
    let kernel = echo_kernel(server, &token, &state.0);
    let ramdisk = upload_image(
        server,
        &token,
        json!({"name": "filler", "disk_format": "ari", "container_format": "ari"}),
        &filler_initramfs(RAMDISK),
    );
    let image = upload_image(
        server,
        &token,
        json!({"name": "echo-ramdisk", "disk_format": "raw", "container_format": "bare",
               "kernel_id": kernel, "ramdisk_id": ramdisk}),
        &vec![0u8; 1 << 20],
    );
    let created = nova(
        server,
        &token,
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "charged", "imageRef": image, "flavorRef": "42",
                                "networks": "none"}}),
        ),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_status(server, &token, &id, "ACTIVE");
    assert!(console_has(server, &token, &id, READY, 1), "no ready line");
    let pid = state.vmm_of(&id).expect("a VMM");
    assert_threads_in_cgroup(pid, &id);
    let stats = vmm_command(&state.0, &id, "stats");
    let touched = stats["stats"]["guest_memory_touched"]
        .as_u64()
        .expect("guest_memory_touched");
    assert!(
        touched >= RAMDISK as u64,
        "guest memory touched {touched} < the ramdisk"
    );
    match cgroup_anon_bytes(&id) {
        Some(anon) => assert!(
            anon >= touched,
            "the VM's memory cgroup holds {anon} bytes of anonymous memory, \
             less than the {touched} bytes of guest memory touched"
        ),
        None => eprintln!("NOTE: this host has no memory cgroup controller"),
    }
    let delete = nova(server, &token, "DELETE", &format!("/servers/{id}"), None);
    assert_eq!(delete.status, 204, "{}", delete.text);
    let deadline = Instant::now() + Duration::from_secs(30);
    while nova(server, &token, "GET", &format!("/servers/{id}"), None).status != 404 {
        assert!(Instant::now() < deadline, "server not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `yunhe serve` as uid/gid 65534 with TMPDIR = `tmp`; returns the child and its base URL.
fn serve_as_nobody(state: &Path, tmp: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(YUNHE)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-password",
            support::ADMIN_PASSWORD,
            // The test client speaks plain HTTP.
            "--insecure-http",
        ])
        .arg("--state-dir")
        .arg(state)
        .env("TMPDIR", tmp)
        .env("HOME", tmp)
        .env("YUNHE_DATAPLANE", "false")
        .env("YUNHE_LOG", "warn")
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addr = String::new();
    while addr.is_empty() && Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(url) = line.trim().strip_prefix("identity:") {
            addr = url
                .trim()
                .trim_end_matches("/identity/v3")
                .trim_start_matches("http://")
                .into();
        }
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut sink);
    });
    (child, addr)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn non_root_serve_refuses_a_socket_directory_it_does_not_own() {
    if !root_with_kvm() {
        return;
    }
    let scratch = StateDir::new("nonroot");
    let tmp = scratch.0.join("tmp");
    let state = scratch.0.join("state");
    for d in [&tmp, &state] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown state");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    // Another user (root here) got there first: the per-user socket directory
    // exists, owned by them and open to everyone.
    let squatted = tmp.join("yunhe-65534");
    std::fs::create_dir_all(&squatted).expect("mkdir");
    std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let (child, addr) = serve_as_nobody(&state, &tmp);
    let _guard = KillOnDrop(child);
    assert!(!addr.is_empty(), "serve as nobody did not start");
    let auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": support::ADMIN_PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
    let reply = http(&addr, "POST", "/identity/v3/auth/tokens", &[], Some(&auth));
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token = reply.header("x-subject-token").expect("token").to_string();
    let server = addr.as_str();
    let image = echo_image(server, &token, &tmp);
    let created = nova(
        server,
        &token,
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "n", "imageRef": image, "flavorRef": "42",
                                "networks": "none"}}),
        ),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let shown = wait_status(server, &token, &id, "ERROR");
    let fault = shown["fault"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        fault.contains("owned by uid 0") || fault.contains("writable by others"),
        "fault: {fault}"
    );
    // Nothing was created inside the squatted directory.
    assert_eq!(
        std::fs::read_dir(&squatted).map(|d| d.count()).unwrap_or(0),
        0
    );
    assert_eq!(std::fs::metadata(&squatted).expect("dir").uid(), 0);
}

/// The VMM cgroups a SIGKILLed serve leaves behind: the next serve removes
/// the empty ones older than a minute, and keeps a fresh one a VMM may be
/// about to join.
#[test]
fn serve_sweeps_the_empty_cgroups_of_killed_vmms() {
    if !root_with_kvm() {
        return;
    }
    let stale = format!("sweep-stale-{}", std::process::id());
    let fresh = format!("sweep-fresh-{}", std::process::id());
    // Only the hierarchies the jail uses on this host (their parent exists).
    let made = |name: &str| -> Vec<PathBuf> {
        cgroup_dirs(name)
            .into_iter()
            .filter(|d| d.parent().is_some_and(Path::exists))
            .filter(|d| std::fs::create_dir(d).is_ok())
            .collect()
    };
    let stale_dirs = made(&stale);
    let fresh_dirs = made(&fresh);
    if stale_dirs.is_empty() {
        eprintln!("SKIPPED: no yunhe cgroup parent on this host");
        return;
    }
    for dir in &stale_dirs {
        let status = std::process::Command::new("touch")
            .args(["-d", "-5 min"])
            .arg(dir)
            .status()
            .expect("touch");
        assert!(status.success());
    }
    let server = Server::start();
    drop(server);
    let left: Vec<&PathBuf> = stale_dirs.iter().filter(|d| d.exists()).collect();
    let fresh_kept = fresh_dirs.iter().all(|d| d.exists());
    for dir in stale_dirs.iter().chain(&fresh_dirs) {
        let _ = std::fs::remove_dir(dir);
    }
    assert!(left.is_empty(), "stale cgroups left: {left:?}");
    assert!(fresh_kept, "a fresh cgroup was removed");
}
