//! Security regression tests for issue 9, findings 7, 8 and 10 (parts), and
//! the API rate limits, against the real `yunhe serve` (and, where /dev/kvm
//! works, real servers running the echo guest):
//!
//! - serial consoles: no VMM thread outlives its client, at most 4 clients
//!   per VM, single-use console tokens bound to the rights of their user,
//!   foreign `Origin` refused;
//! - console output cut to a bounded tail, the console log capped across
//!   restarts;
//! - hostnames validated as Nova does;
//! - per-user API rate limits (429 with Retry-After).
//!
//! Each test owns its state directory; the guard kills (by pid) every VMM
//! whose spec lies in it and removes it, even when an assertion fails.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, http, http_bytes};

const YUNHE: &str = env!("CARGO_BIN_EXE_yunhe");
const READY: &str = "yunhe echo guest: ready";

fn kvm_usable() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: /dev/kvm is missing or not accessible");
    }
    ok
}

/// A state directory; on drop, SIGKILL every `yunhe vmm` whose spec lies
/// below it, remove its socket directory and itself. Declare it before the
/// `Server` so that it is dropped after the server.
struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("yunhe-sc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the state directory");
        StateDir(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.clone()
    }

    /// Pids of the live `yunhe vmm` processes whose spec path contains `needle`.
    fn vmm_pids(&self, needle: &str) -> Vec<i32> {
        let prefix = format!("{}/", self.0.display());
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
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
            let is_vmm = args.len() >= 4
                && args[1] == "vmm"
                && args[2] == "--spec"
                && args[3].starts_with(&prefix)
                && args[3].contains(needle);
            let zombie = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            if is_vmm && !zombie {
                pids.push(pid);
            }
        }
        pids
    }

    fn vmm_of(&self, id: &str) -> Option<i32> {
        self.vmm_pids(&format!("/instances/{id}/")).first().copied()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        for pid in self.vmm_pids("") {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.vmm_pids("").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(real) = std::fs::canonicalize(&self.0) {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(real.to_string_lossy().as_bytes());
            let tag = hex::encode(&digest[..6]);
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            let base = if uid == 0 {
                PathBuf::from("/run/yunhe")
            } else {
                std::env::temp_dir().join(format!("yunhe-{uid}"))
            };
            let _ = std::fs::remove_dir_all(base.join(tag));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compute API calls with one token at one microversion.
struct Nova<'a> {
    server: &'a Server,
    token: String,
    mv: &'a str,
}

impl Nova<'_> {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        http(
            &self.server.addr,
            method,
            &format!("/compute/v2.1{path}"),
            &[
                ("X-Auth-Token", self.token.clone()),
                ("OpenStack-API-Version", format!("compute {}", self.mv)),
            ],
            body,
        )
    }

    fn action(&self, id: &str, body: Value) -> Reply {
        self.call("POST", &format!("/servers/{id}/action"), Some(&body))
    }

    fn create(&self, name: &str, image: &str) -> String {
        let reply = self.call(
            "POST",
            "/servers",
            Some(&json!({"server": {
                "name": name, "imageRef": image, "flavorRef": "42", "networks": "none"}})),
        );
        assert_eq!(reply.status, 202, "create {name}: {}", reply.text);
        reply.json()["server"]["id"]
            .as_str()
            .expect("server id")
            .to_string()
    }

    fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = self.call("GET", &format!("/servers/{id}"), None);
            assert_eq!(reply.status, 200, "GET server {id}: {}", reply.text);
            let server = reply.json()["server"].clone();
            if server["status"] == status && server["OS-EXT-STS:task_state"].is_null() {
                return server;
            }
            assert!(
                server["status"] != "ERROR",
                "server {id} went to ERROR: {}",
                server["fault"]
            );
            assert!(
                Instant::now() < deadline,
                "server {id} not {status}: {server}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A fresh serial console URL (`os-getSerialConsole`).
    fn console_url(&self, id: &str) -> String {
        let reply = self.action(id, json!({"os-getSerialConsole": {"type": "serial"}}));
        assert_eq!(reply.status, 200, "os-getSerialConsole: {}", reply.text);
        reply.json()["console"]["url"]
            .as_str()
            .expect("url")
            .to_string()
    }

    fn console_output(&self, id: &str, length: Option<i64>) -> Reply {
        let arg = match length {
            Some(n) => json!({"length": n}),
            None => json!({}),
        };
        self.action(id, json!({"os-getConsoleOutput": arg}))
    }
}

/// Creates an image, uploads `data`, returns its id.
fn upload_image(server: &Server, token: &str, meta: Value, data: &[u8]) -> String {
    let created = server.request("POST", "/image/v2/images", Some(token), Some(&meta));
    assert_eq!(created.status, 201, "image create: {}", created.text);
    let id = created.json()["id"].as_str().expect("image id").to_string();
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

/// The echo guest as a kernel image and a small raw disk booting it.
fn echo_images(server: &Server, token: &str, scratch: &Path) -> String {
    let elf = scratch.join("echo.elf");
    let status = std::process::Command::new(YUNHE)
        .args(["vm", "guest", "echo", "-o"])
        .arg(&elf)
        .status()
        .expect("run yunhe vm guest echo");
    assert!(status.success(), "yunhe vm guest echo -o: {status}");
    let kernel = std::fs::read(&elf).expect("read echo.elf");
    let kernel_id = upload_image(
        server,
        token,
        json!({"name": "echo-kernel", "disk_format": "aki", "container_format": "aki"}),
        &kernel,
    );
    upload_image(
        server,
        token,
        json!({"name": "echo-disk", "disk_format": "raw", "container_format": "bare",
               "kernel_id": kernel_id}),
        &vec![0u8; 1 << 20],
    )
}

/// A project `demo` with user `carol` as its member; returns
/// (project id, user id, member role id, carol's token).
fn member_of_demo(server: &Server, admin: &str) -> (String, String, String, String) {
    let project = server.request(
        "POST",
        "/identity/v3/projects",
        Some(admin),
        Some(&json!({"project": {"name": "demo"}})),
    );
    assert_eq!(project.status, 201, "{}", project.text);
    let project_id = project.json()["project"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let user = server.request(
        "POST",
        "/identity/v3/users",
        Some(admin),
        Some(&json!({"user": {"name": "carol", "password": "s3cret-Carol"}})),
    );
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = user.json()["user"]["id"].as_str().expect("id").to_string();
    let member = server
        .get("/identity/v3/roles?name=member", Some(admin))
        .json()["roles"][0]["id"]
        .as_str()
        .expect("member role")
        .to_string();
    let grant = format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{member}");
    assert_eq!(server.request("PUT", &grant, Some(admin), None).status, 204);
    let token = carol_token(server);
    (project_id, user_id, member, token)
}

fn carol_token(server: &Server) -> String {
    let reply = server.token("carol", "s3cret-Carol", Some("demo"));
    assert_eq!(reply.status, 201, "carol's token: {}", reply.text);
    reply
        .header("x-subject-token")
        .expect("X-Subject-Token")
        .to_string()
}

fn thread_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// The peak resident set size of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------ websocket client

/// A websocket handshake's outcome: the status, and the open connection on 101.
struct Handshake {
    status: u16,
    head: String,
    stream: Option<TcpStream>,
}

/// Opens a websocket to a `ws://host:port/path?query` URL.
fn ws_connect(url: &str, origin: Option<&str>) -> Handshake {
    let rest = url.strip_prefix("ws://").expect("a ws:// URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = TcpStream::connect(authority).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: binary\r\n"
    );
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        // Read the error body too, for the assertion messages.
        let mut body = String::new();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.read_to_string(&mut body);
        return Handshake {
            status,
            head: format!("{head}{body}"),
            stream: None,
        };
    }
    Handshake {
        status,
        head,
        stream: Some(stream),
    }
}

/// Sends one masked binary frame.
fn ws_send(stream: &mut TcpStream, payload: &[u8]) {
    assert!(payload.len() < 126);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).expect("send frame");
}

/// Reads frames until their payloads contain `needle` (or the deadline).
fn ws_read_until(stream: &mut TcpStream, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    // Raw bytes not yet parsed into frames, and the payloads so far: the
    // console may send each echoed byte in a frame of its own, so the
    // needle is looked for in the payloads, never in the raw stream.
    let mut raw = Vec::new();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains(needle) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        while let Some((payload, used)) = parse_frame(&raw) {
            seen.extend_from_slice(&payload);
            raw.drain(..used);
        }
    }
    String::from_utf8_lossy(&seen).to_string()
}

/// One complete unmasked server frame at the start of `raw`: its payload
/// and the bytes it took.
fn parse_frame(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    let second = *raw.get(1)?;
    let (len, header): (usize, usize) = match second & 0x7f {
        126 => (u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]) as usize, 4),
        127 => {
            let bytes: [u8; 8] = raw.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let end = header.checked_add(len)?;
    let payload = raw.get(header..end)?.to_vec();
    Some((payload, end))
}

// ------------------------------------------------------------ tests

#[test]
fn serial_consoles_are_capped_single_use_bound_to_rights_origin_checked_and_leak_no_threads() {
    if !kvm_usable() {
        return;
    }
    let state = StateDir::new("console");
    let server = Server::start_in(state.path(), true);
    let admin = server.admin_token();
    let (project_id, user_id, member, carol) = member_of_demo(&server, &admin);
    let image = echo_images(&server, &carol, &state.path());
    let nova = Nova {
        server: &server,
        token: carol.clone(),
        mv: "2.73",
    };
    let id = nova.create("console-vm", &image);
    nova.wait_status(&id, "ACTIVE");
    let vmm = state.vmm_of(&id).expect("the server's VMM");

    // The console works: the guest's ready line, then an echo of our input.
    let mut first = ws_connect(&nova.console_url(&id), None);
    assert_eq!(first.status, 101, "handshake: {}", first.head);
    let stream = first.stream.as_mut().expect("stream");
    let seen = ws_read_until(stream, READY, Duration::from_secs(20));
    assert!(seen.contains(READY), "console: {seen:?}");
    ws_send(stream, b"ping-1\r");
    let seen = ws_read_until(stream, "ping-1", Duration::from_secs(10));
    assert!(seen.contains("ping-1"), "echo: {seen:?}");
    drop(first);

    // Threads: 50 clients come and go; the VMM's thread count returns.
    std::thread::sleep(Duration::from_millis(300));
    let before = thread_count(vmm);
    for round in 0..50 {
        let handshake = ws_connect(&nova.console_url(&id), None);
        assert_eq!(handshake.status, 101, "client {round}: {}", handshake.head);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = thread_count(vmm);
    while after > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = thread_count(vmm);
    }
    eprintln!("VMM threads: {before} before 50 console clients, {after} after they left");
    assert!(
        after <= before,
        "VMM threads {before} -> {after} after 50 console clients left"
    );

    // At most 4 clients at once: the 5th handshake is refused with 409.
    let mut open: Vec<TcpStream> = (0..4)
        .map(|i| {
            let h = ws_connect(&nova.console_url(&id), None);
            assert_eq!(h.status, 101, "client {i}: {}", h.head);
            h.stream.expect("stream")
        })
        .collect();
    let fifth = ws_connect(&nova.console_url(&id), None);
    assert_eq!(fifth.status, 409, "5th client: {}", fifth.head);
    assert!(
        fifth.head.contains("4 clients"),
        "5th client: {}",
        fifth.head
    );
    let peak = thread_count(vmm);
    open.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = ws_connect(&nova.console_url(&id), None);
        if again.status == 101 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a client left: {}",
            again.head
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(open);
    eprintln!("VMM threads with 4 console clients: {peak}");

    // Single use: the second handshake with the same URL is refused. The VMM notices the
    // clients dropped above a moment later, so a fresh URL is tried while it is still full.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (url, once) = loop {
        let url = nova.console_url(&id);
        let once = ws_connect(&url, None);
        if once.status != 409 || Instant::now() >= deadline {
            break (url, once);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(once.status, 101, "first use: {}", once.head);
    drop(once);
    let twice = ws_connect(&url, None);
    assert_eq!(twice.status, 403, "second use: {}", twice.head);

    // Origin: another host is refused (and it spends no token), ours is not.
    let url = nova.console_url(&id);
    let foreign = ws_connect(&url, Some("http://evil.example"));
    assert_eq!(foreign.status, 403, "foreign origin: {}", foreign.head);
    assert!(
        foreign
            .head
            .contains("Origin header does not match this host."),
        "{}",
        foreign.head
    );
    let other_scheme = ws_connect(&url, Some(&server.base.replace("http://", "https://")));
    assert_eq!(
        other_scheme.status, 403,
        "https origin: {}",
        other_scheme.head
    );
    let ours = ws_connect(&url, Some(&server.base));
    assert_eq!(ours.status, 101, "own origin: {}", ours.head);
    drop(ours);

    // Rights: a URL made with a token revoked since is refused.
    let revoked_token = carol_token(&server);
    let as_revoked = Nova {
        server: &server,
        token: revoked_token.clone(),
        mv: "2.73",
    };
    let url = as_revoked.console_url(&id);
    let revoke = http(
        &server.addr,
        "DELETE",
        "/identity/v3/auth/tokens",
        &[
            ("X-Auth-Token", admin.clone()),
            ("X-Subject-Token", revoked_token),
        ],
        None,
    );
    assert_eq!(revoke.status, 204, "revoke: {}", revoke.text);
    let refused = ws_connect(&url, None);
    assert_eq!(refused.status, 403, "revoked token: {}", refused.head);

    // ... and so is one made before the user lost their role on the project.
    let url = nova.console_url(&id);
    let grant = format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{member}");
    assert_eq!(
        server.request("DELETE", &grant, Some(&admin), None).status,
        204
    );
    let refused = ws_connect(&url, None);
    assert_eq!(refused.status, 403, "role removed: {}", refused.head);
}

#[test]
fn console_output_is_a_bounded_tail_and_the_log_is_capped_across_restarts() {
    if !kvm_usable() {
        return;
    }
    let state = StateDir::new("log");
    let server = Server::start_in(state.path(), true);
    let nova = Nova {
        server: &server,
        token: server.admin_token(),
        mv: "2.90",
    };
    let image = echo_images(&server, &nova.token, &state.path());
    let id = nova.create("Log Test_1!", &image);
    let shown = nova.wait_status(&id, "ACTIVE");
    assert_eq!(shown["OS-EXT-SRV-ATTR:hostname"], "log-test-1", "{shown}");
    let log = state.path().join("instances").join(&id).join("console.log");
    let rotated = state
        .path()
        .join("instances")
        .join(&id)
        .join("console.log.1");

    // 24 MiB of output in the log, as a chatty guest would leave it.
    let line = format!("{}\n", "x".repeat(1023));
    let append = |mib: usize| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("console.log");
        let chunk = line.repeat(1024);
        for _ in 0..mib {
            f.write_all(chunk.as_bytes()).expect("append");
        }
        f.write_all(b"the last line\n").expect("append");
    };
    append(24);
    let rss_before = peak_rss_kib(server.pid());
    let all = nova.console_output(&id, None);
    assert_eq!(all.status, 200, "{}", all.text);
    let rss_after = peak_rss_kib(server.pid());
    eprintln!(
        "os-getConsoleOutput of a 24 MiB log: {} bytes; serve peak RSS {rss_before} -> {rss_after} KiB",
        all.text.len()
    );
    assert!(
        all.text.len() <= 110 * 1024,
        "the whole log came back: {} bytes",
        all.text.len()
    );
    assert!(
        all.json()["output"]
            .as_str()
            .is_some_and(|o| o.ends_with("the last line\n"))
    );
    assert!(
        rss_after < rss_before + 8 * 1024,
        "serve peak RSS {rss_before} -> {rss_after} KiB"
    );
    let three = nova.console_output(&id, Some(3));
    assert_eq!(
        three.json()["output"],
        format!("{}the last line\n", line),
        "length 3"
    );

    // Stop and start three times, each time after the guest "printed" 12 MiB:
    // the log and its one rotated copy stay under 16 MiB together.
    for round in 0..3 {
        let stop = nova.action(&id, json!({"os-stop": null}));
        assert_eq!(stop.status, 202, "os-stop: {}", stop.text);
        nova.wait_status(&id, "SHUTOFF");
        let start = nova.action(&id, json!({"os-start": null}));
        assert_eq!(start.status, 202, "os-start: {}", start.text);
        nova.wait_status(&id, "ACTIVE");
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let total = size(&log) + size(&rotated);
        eprintln!(
            "round {round}: console.log {} + console.log.1 {} bytes",
            size(&log),
            size(&rotated)
        );
        assert!(total <= 16 << 20, "the log holds {total} bytes");
        append(12);
    }
    let output = nova.console_output(&id, None);
    assert!(
        output.text.len() <= 110 * 1024,
        "{} bytes",
        output.text.len()
    );
    assert!(
        output.text.contains("the last line"),
        "output tail: {:?}",
        &output.text[output.text.len().saturating_sub(200)..]
    );
}

#[test]
fn hostnames_are_validated_as_nova_does() {
    let server = Server::start();
    let admin = server.admin_token();
    let create = |mv: &str, server_body: Value| -> Reply {
        Nova {
            server: &server,
            token: admin.clone(),
            mv,
        }
        .call("POST", "/servers", Some(&json!({"server": server_body})))
    };
    let base = |hostname: Value| {
        json!({"name": "h", "imageRef": "6d0c7a8e-8b0f-4c53-9f4b-2b5e1c3f2a10",
               "flavorRef": "42", "networks": "none", "hostname": hostname})
    };
    for bad in [
        "bad_host",
        "a",
        "-lead",
        "trail-",
        "two words",
        "new\nline",
        "semi;colon",
    ] {
        let reply = create("2.90", base(json!(bad)));
        assert_eq!(reply.status, 400, "hostname {bad:?}: {}", reply.text);
        let message = reply.json()["badRequest"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            message.starts_with("Invalid input for field/attribute hostname."),
            "{message}"
        );
    }
    let reply = create("2.90", base(json!("a".repeat(64))));
    assert_eq!(reply.status, 400, "64 characters: {}", reply.text);
    assert!(reply.text.contains("is too long"), "{}", reply.text);
    let reply = create("2.90", base(json!("bad_host")));
    assert_eq!(
        reply.json()["badRequest"]["message"],
        "Invalid input for field/attribute hostname. Value: bad_host. 'bad_host' does not match '^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$'"
    );
    // 2.94 takes FQDNs, still nothing outside letters, digits, '-', '.', '_'.
    let reply = create("2.94", base(json!("web;reboot")));
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = create("2.94", base(json!("a".repeat(256))));
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = create("2.90", base(Value::Null));
    assert_eq!(reply.status, 400, "{}", reply.text);
    // One hostname cannot name several servers.
    let mut several = base(json!("web-1"));
    several["max_count"] = json!(2);
    let reply = create("2.90", several);
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply
            .text
            .contains("Unable to allocate a single hostname to multiple instances"),
        "{}",
        reply.text
    );
    // A valid hostname passes validation (and fails later, on the image).
    let reply = create("2.94", base(json!("web.example.org")));
    assert!(
        !reply.text.contains("field/attribute hostname"),
        "{}",
        reply.text
    );
}

#[test]
fn api_rate_limits_answer_429_with_retry_after_per_user() {
    let server = Server::start_with_args(&["--api-rate-limit", "5", "--api-rate-burst", "10"]);
    let admin = server.admin_token();
    let get = |path: &str, token: &str, accept: Option<&str>| -> Reply {
        let mut headers = vec![("X-Auth-Token", token.to_string())];
        if let Some(a) = accept {
            headers.push(("Accept", a.to_string()));
        }
        http(&server.addr, "GET", path, &headers, None)
    };
    let flood = |path: &str, token: &str, accept: Option<&str>| -> Option<Reply> {
        (0..40)
            .map(|_| get(path, token, accept))
            .find(|r| r.status == 429)
    };

    let limited = flood("/compute/v2.1/flavors", &admin, None).expect("a 429 from /compute");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body = limited.json();
    assert_eq!(body["overLimit"]["code"], 429, "{body}");
    assert_eq!(body["overLimit"]["retryAfter"], retry.to_string(), "{body}");
    assert!(limited.header("x-openstack-request-id").is_some());

    // /healthz is never limited.
    for _ in 0..20 {
        assert_eq!(server.get("/healthz", None).status, 200);
    }

    // Another user has a bucket of their own: after its first request
    // (counted against the source address, until identity has validated the
    // token) it is served while the admin is limited.
    std::thread::sleep(Duration::from_millis(2200));
    let reply = server.request(
        "POST",
        "/identity/v3/users",
        Some(&admin),
        Some(&json!({"user": {"name": "dave", "password": "s3cret-Dave"}})),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let dave = server.token("dave", "s3cret-Dave", None);
    assert_eq!(dave.status, 201, "{}", dave.text);
    let dave = dave.header("x-subject-token").expect("token").to_string();
    let own = "/identity/v3/auth/projects";
    let served = get(own, &dave, None);
    assert_eq!(served.status, 200, "dave: {}", served.text);
    let _ = flood("/compute/v2.1/flavors", &admin, None).expect("admin limited again");
    assert_eq!(
        get(own, &dave, None).status,
        200,
        "dave shares the admin's bucket"
    );

    // Keystone's and Glance's formats.
    let limited = flood(own, &dave, None).expect("a 429 from /identity");
    assert_eq!(limited.json()["error"]["code"], 429, "{}", limited.text);
    assert!(limited.header("retry-after").is_some());
    std::thread::sleep(Duration::from_millis(2200));
    let limited =
        flood("/image/v2/images", &dave, Some("application/json")).expect("a 429 from /image");
    assert_eq!(
        limited.json()["code"],
        "429 Too Many Requests",
        "{}",
        limited.text
    );

    // Made-up tokens buy no buckets: they all drain their source's.
    std::thread::sleep(Duration::from_millis(2200));
    let statuses: Vec<u16> = (0..40)
        .map(|i| get("/compute/v2.1/flavors", &format!("made-up-{i}"), None).status)
        .collect();
    assert!(
        statuses.contains(&429),
        "40 made-up tokens were never limited: {statuses:?}"
    );
}
