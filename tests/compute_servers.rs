//! Nova servers through HTTP against the real `yunhe serve`, booting the
//! built-in echo guest (`yunhe vm guest echo`) on /dev/kvm: create → ACTIVE,
//! console output, stop/start, a 409 for an action the state forbids, a
//! flavor no host can fit → ERROR "No valid host", delete → 204 then 404, and
//! a `kill -9` of the control plane that leaves running servers running, and
//! one during a burst whose interrupted builds run again after the restart.
//! Skipped (with a message) where /dev/kvm is missing.
//!
//! Each test owns a state directory; a guard's `Drop` kills (by pid) every
//! `yunhe vmm` whose spec lies in it and removes it, so a failing assertion
//! leaves no process or file behind.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, http, http_bytes};

const YUNHE: &str = env!("CARGO_BIN_EXE_yunhe");
const READY: &str = "yunhe echo guest: ready";
/// Compute microversion of every request (2.37+ takes `"networks": "none"`).
const MV: &str = "2.73";

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

/// A state directory for `yunhe serve`. On drop: SIGKILL every `yunhe vmm`
/// whose spec lies below it (found through /proc/*/cmdline), then remove it.
/// Declare it before the `Server` so that it is dropped after the server.
struct StateDir(PathBuf);

impl StateDir {
    /// `<tmp>/yunhe-sv-<pid>-<name>`: short, because a server's control socket
    /// is `<state>/instances/<uuid>/vmm.sock` and a Unix socket path has at most
    /// 107 bytes (see `a_long_state_dir_still_boots_servers`).
    fn new(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("yunhe-sv-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the state directory");
        StateDir(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.clone()
    }

    /// Pids of the `yunhe vmm` processes whose spec path contains `needle`
    /// (below this directory).
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
            let is_vmm = args.len() >= 3
                && args[1] == "vmm"
                && args[2] == "--spec"
                && args
                    .get(3)
                    .is_some_and(|spec| spec.starts_with(&prefix) && spec.contains(needle));
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

    /// The one VMM of server `id` (None when there is none).
    fn vmm_of(&self, id: &str) -> Option<i32> {
        let pids = self.vmm_pids(&format!("/instances/{id}/"));
        assert!(pids.len() <= 1, "server {id} has several VMMs: {pids:?}");
        pids.first().copied()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        for pid in self.vmm_pids("") {
            eprintln!("killing leftover VMM {pid}");
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.vmm_pids("").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The VMM control sockets live in /run/yunhe/<hash of the state dir>
        // (src/compute/virt.rs); killed VMMs leave theirs behind.
        // A test may keep its state one level down (the long-path test).
        let mut dirs = vec![self.0.clone()];
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for dir in dirs {
            if let Ok(real) = std::fs::canonicalize(&dir) {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(real.to_string_lossy().as_bytes());
                let _ = std::fs::remove_dir_all(
                    std::path::Path::new("/run/yunhe").join(hex::encode(&digest[..6])),
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compute API calls with a token and the test's microversion.
struct Nova<'a> {
    server: &'a Server,
    token: String,
}

impl Nova<'_> {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        http(
            &self.server.addr,
            method,
            &format!("/compute/v2.1{path}"),
            &[
                ("X-Auth-Token", self.token.clone()),
                ("OpenStack-API-Version", format!("compute {MV}")),
            ],
            body,
        )
    }

    fn action(&self, id: &str, body: Value) -> Reply {
        self.call("POST", &format!("/servers/{id}/action"), Some(&body))
    }

    /// POST /servers for the echo guest; asserts the 202 and returns the server id.
    fn create(&self, name: &str, image: &str, flavor: &str) -> String {
        let reply = self.call(
            "POST",
            "/servers",
            Some(&json!({"server": {
                "name": name, "imageRef": image, "flavorRef": flavor, "networks": "none"}})),
        );
        assert_eq!(reply.status, 202, "create {name}: {}", reply.text);
        let body = reply.json();
        let server = &body["server"];
        assert!(
            server["adminPass"].as_str().is_some_and(|p| !p.is_empty()),
            "create {name}: no adminPass in {body}"
        );
        let id = server["id"].as_str().expect("server id").to_string();
        assert!(
            reply
                .header("location")
                .is_some_and(|l| l.ends_with(&format!("/servers/{id}"))),
            "create {name}: Location header {:?}",
            reply.header("location")
        );
        id
    }

    fn show(&self, id: &str) -> Reply {
        self.call("GET", &format!("/servers/{id}"), None)
    }

    /// Polls GET /servers/{id} every 100 ms until `status` with no task state;
    /// panics on timeout or an unexpected ERROR. Returns the server and the wait.
    fn wait_status(&self, id: &str, status: &str, limit: Duration) -> (Value, Duration) {
        let start = Instant::now();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let reply = self.show(id);
            assert_eq!(reply.status, 200, "GET server {id}: {}", reply.text);
            let server = reply.json()["server"].clone();
            let now = format!(
                "{}/{}",
                server["status"].as_str().unwrap_or("?"),
                server["OS-EXT-STS:task_state"]
            );
            if seen.last() != Some(&now) {
                seen.push(now);
            }
            if server["status"] == status && server["OS-EXT-STS:task_state"].is_null() {
                return (server, start.elapsed());
            }
            if server["status"] == "ERROR" && status != "ERROR" {
                panic!(
                    "server {id} went to ERROR while waiting for {status} (states {seen:?}); fault: {}",
                    server["fault"]
                );
            }
            assert!(
                start.elapsed() < limit,
                "server {id} not {status} within {limit:?}; states seen: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until GET /servers/{id} answers 404.
    fn wait_gone(&self, id: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let reply = self.show(id);
            if reply.status == 404 {
                return start.elapsed();
            }
            assert_eq!(reply.status, 200, "GET server {id}: {}", reply.text);
            assert!(
                start.elapsed() < limit,
                "server {id} still there after {limit:?}: {}",
                reply.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The console output, polled until it has `needle` (up to 5 s).
    fn console_with(&self, id: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let reply = self.action(id, json!({"os-getConsoleOutput": {}}));
            assert_eq!(reply.status, 200, "os-getConsoleOutput: {}", reply.text);
            let output = reply.json()["output"].as_str().unwrap_or("").to_string();
            if output.contains(needle) || Instant::now() > deadline {
                return output;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Creates an image, uploads `data`, and returns its id.
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
        "image upload: {}",
        String::from_utf8_lossy(&put.body)
    );
    let shown = server.get(&format!("/image/v2/images/{id}"), Some(token));
    assert_eq!(shown.json()["status"], "active", "{}", shown.text);
    id
}

/// The echo guest as an aki image and a 1 MiB raw disk booting it; returns the disk image's id.
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

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn server_create_console_stop_start_no_valid_host_and_delete() {
    if !kvm_usable() {
        return;
    }
    let state = StateDir::new("lifecycle");
    let server = Server::start_in(state.path(), true);
    let nova = Nova {
        server: &server,
        token: server.admin_token(),
    };
    let image = echo_images(&server, &nova.token, &state.path());

    // Create → 202 with adminPass → ACTIVE.
    let id = nova.create("vm1", &image, "42");
    let (shown, took) = nova.wait_status(&id, "ACTIVE", Duration::from_secs(30));
    eprintln!("vm1: ACTIVE {took:?} after the 202");
    assert!(took < Duration::from_secs(10), "ACTIVE took {took:?}");
    assert_eq!(shown["OS-EXT-STS:power_state"], 1, "{shown}");
    assert_eq!(shown["flavor"]["original_name"], "m1.nano", "{shown}");
    let pid = state.vmm_of(&id).expect("vm1 has a VMM process");
    let output = nova.console_with(&id, READY);
    assert!(output.contains(READY), "console output: {output:?}");

    // stop → SHUTOFF, and no VMM.
    let stop = nova.action(&id, json!({"os-stop": null}));
    assert_eq!(stop.status, 202, "os-stop: {}", stop.text);
    let (shown, took) = nova.wait_status(&id, "SHUTOFF", Duration::from_secs(30));
    eprintln!("vm1: SHUTOFF {took:?} after os-stop");
    assert_eq!(shown["OS-EXT-STS:power_state"], 4, "{shown}");
    assert_eq!(
        state.vmm_of(&id),
        None,
        "vm1's VMM {pid} still runs after os-stop"
    );

    // pause while SHUTOFF → 409.
    let pause = nova.action(&id, json!({"pause": null}));
    assert_eq!(pause.status, 409, "pause while SHUTOFF: {}", pause.text);
    let message = pause.json()["conflictingRequest"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains("stopped"), "409 message: {message:?}");

    // start → ACTIVE, booted again.
    let start = nova.action(&id, json!({"os-start": null}));
    assert_eq!(start.status, 202, "os-start: {}", start.text);
    let (_, took) = nova.wait_status(&id, "ACTIVE", Duration::from_secs(30));
    eprintln!("vm1: ACTIVE {took:?} after os-start");
    let new_pid = state.vmm_of(&id).expect("vm1 has a VMM after os-start");
    assert_ne!(new_pid, pid, "os-start reused the old VMM pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut output = nova.console_with(&id, READY);
    while count(&output, READY) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        output = nova.console_with(&id, READY);
    }
    assert_eq!(
        count(&output, READY),
        2,
        "console after os-start: {output:?}"
    );

    // A flavor bigger than the host's RAM (ram_allocation_ratio 1.0) → ERROR, No valid host.
    let hypervisors = nova.call("GET", "/os-hypervisors/detail", None);
    assert_eq!(hypervisors.status, 200, "{}", hypervisors.text);
    let host_ram = hypervisors.json()["hypervisors"][0]["memory_mb"]
        .as_i64()
        .expect("memory_mb");
    let flavor = nova.call(
        "POST",
        "/flavors",
        Some(
            &json!({"flavor": {"name": "too-big", "id": "too-big", "ram": host_ram + 1,
                                 "vcpus": 1, "disk": 1}}),
        ),
    );
    assert_eq!(flavor.status, 200, "flavor create: {}", flavor.text);
    let big = nova.create("too-big", &image, "too-big");
    let (shown, took) = nova.wait_status(&big, "ERROR", Duration::from_secs(10));
    eprintln!(
        "too-big: ERROR {took:?} after the 202 (ram {} MiB > host {host_ram} MiB)",
        host_ram + 1
    );
    let fault = shown["fault"]["message"].as_str().unwrap_or("");
    assert!(fault.contains("No valid host"), "fault: {}", shown["fault"]);
    assert_eq!(
        state.vmm_of(&big),
        None,
        "a server that was not scheduled has a VMM"
    );

    // Two servers in one request where one fits but two do not: all or
    // nothing, as Nova's scheduler — both ERROR, neither boots.
    let flavor = nova.call(
        "POST",
        "/flavors",
        Some(
            &json!({"flavor": {"name": "half", "id": "half", "ram": host_ram / 2 + 1,
                                 "vcpus": 1, "disk": 1}}),
        ),
    );
    assert_eq!(flavor.status, 200, "flavor create: {}", flavor.text);
    let pair = nova.call(
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "pair", "imageRef": image, "flavorRef": "half",
                                "networks": "none", "min_count": 2, "max_count": 2,
                                "return_reservation_id": true}}),
        ),
    );
    assert_eq!(pair.status, 202, "pair create: {}", pair.text);
    let reservation = pair.json()["reservation_id"]
        .as_str()
        .expect("reservation_id")
        .to_string();
    let listed = nova.call(
        "GET",
        &format!("/servers/detail?reservation_id={reservation}"),
        None,
    );
    let pair_ids: Vec<String> = listed.json()["servers"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(pair_ids.len(), 2, "{}", listed.text);
    for sid in &pair_ids {
        let (shown, _) = nova.wait_status(sid, "ERROR", Duration::from_secs(10));
        let fault = shown["fault"]["message"].as_str().unwrap_or("");
        assert!(fault.contains("No valid host"), "fault: {}", shown["fault"]);
        assert_eq!(state.vmm_of(sid), None, "a server of the pair booted");
    }

    // DELETE → 204, then 404; the VMM and the instance directory are gone.
    let mut doomed = vec![("vm1", &id), ("too-big", &big)];
    doomed.extend(pair_ids.iter().map(|sid| ("pair", sid)));
    for (name, sid) in doomed {
        let delete = nova.call("DELETE", &format!("/servers/{sid}"), None);
        assert_eq!(delete.status, 204, "DELETE {name}: {}", delete.text);
        let took = nova.wait_gone(sid, Duration::from_secs(30));
        eprintln!("{name}: 404 {took:?} after the DELETE");
    }
    assert_eq!(state.vmm_of(&id), None, "vm1's VMM outlived its delete");
    assert!(
        !state.path().join("instances").join(&id).exists(),
        "vm1's instance directory outlived its delete"
    );
    let again = nova.call("DELETE", &format!("/servers/{id}"), None);
    assert_eq!(again.status, 404, "second DELETE: {}", again.text);
}

#[test]
fn kill9_of_serve_keeps_running_servers_and_deleted_ones_deleted() {
    if !kvm_usable() {
        return;
    }
    let state = StateDir::new("kill9");
    let server = Server::start_in(state.path(), true);
    let token = server.admin_token();
    let nova = Nova {
        server: &server,
        token: token.clone(),
    };
    let image = echo_images(&server, &token, &state.path());

    let keep = nova.create("keep", &image, "42");
    let gone = nova.create("gone", &image, "42");
    let late = nova.create("late", &image, "42");
    for id in [&keep, &gone, &late] {
        nova.wait_status(id, "ACTIVE", Duration::from_secs(30));
    }
    let output = nova.console_with(&keep, READY);
    assert_eq!(count(&output, READY), 1, "keep's console: {output:?}");
    let pid = state.vmm_of(&keep).expect("keep has a VMM");

    // `gone` is deleted completely before the kill.
    let delete = nova.call("DELETE", &format!("/servers/{gone}"), None);
    assert_eq!(delete.status, 204, "DELETE gone: {}", delete.text);
    nova.wait_gone(&gone, Duration::from_secs(30));
    // `late` is deleted (204) and the control plane killed right away.
    let delete = nova.call("DELETE", &format!("/servers/{late}"), None);
    assert_eq!(delete.status, 204, "DELETE late: {}", delete.text);

    let dir = server.kill9();
    let started = Instant::now();
    let server = Server::start_in(dir, true);
    let nova = Nova {
        server: &server,
        token,
    };
    let (shown, took) = nova.wait_status(&keep, "ACTIVE", Duration::from_secs(10));
    eprintln!(
        "keep: ACTIVE {:?} after the restart began ({took:?} of polling)",
        started.elapsed()
    );
    assert_eq!(shown["OS-EXT-STS:power_state"], 1, "{shown}");
    assert_eq!(
        state.vmm_of(&keep),
        Some(pid),
        "keep's VMM changed across the restart"
    );
    let output = nova.console_with(&keep, READY);
    assert_eq!(count(&output, READY), 1, "keep rebooted: {output:?}");
    // The re-attached VMM still obeys: stop → SHUTOFF.
    let stop = nova.action(&keep, json!({"os-stop": null}));
    assert_eq!(stop.status, 202, "os-stop after the restart: {}", stop.text);
    nova.wait_status(&keep, "SHUTOFF", Duration::from_secs(30));
    assert_eq!(state.vmm_of(&keep), None, "keep's VMM runs after os-stop");

    let shown = nova.show(&gone);
    assert_eq!(shown.status, 404, "gone came back: {}", shown.text);
    assert_eq!(state.vmm_of(&gone), None, "gone has a VMM again");
    let took = nova.wait_gone(&late, Duration::from_secs(30));
    eprintln!("late: 404 {took:?} after the restart");
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.vmm_of(&late).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state.vmm_of(&late), None, "late's VMM outlived its delete");
    let listed = nova.call("GET", "/servers", None);
    let names: Vec<String> = listed.json()["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, vec!["keep".to_string()], "servers after the restart");

    let delete = nova.call("DELETE", &format!("/servers/{keep}"), None);
    assert_eq!(delete.status, 204, "DELETE keep: {}", delete.text);
    nova.wait_gone(&keep, Duration::from_secs(30));
}

/// A `kill -9` of the control plane as the first VMM of a ten-server request
/// (the default instance quota) starts: after the restart the builds it
/// interrupted run again (beyond Nova, which leaves them ERROR), so every server ends ACTIVE
/// with exactly one VMM that booted the guest once, and no VMM is left over.
#[test]
fn kill9_during_a_burst_resumes_the_interrupted_builds() {
    if !kvm_usable() {
        return;
    }
    const N: usize = 10;
    let state = StateDir::new("burst");
    let args = ["--cpu-allocation-ratio", "64"];
    let server = Server::start_in_with_args(Some(state.path()), &args);
    let token = server.admin_token();
    let nova = Nova {
        server: &server,
        token: token.clone(),
    };
    let image = echo_images(&server, &token, &state.path());
    let burst = nova.call(
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "burst", "imageRef": image, "flavorRef": "42",
                                 "networks": "none", "min_count": N, "max_count": N,
                                 "return_reservation_id": true}}),
        ),
    );
    assert_eq!(burst.status, 202, "burst create: {}", burst.text);
    let reservation = burst.json()["reservation_id"]
        .as_str()
        .expect("reservation_id")
        .to_string();
    // Killed once the first VMM runs: some builds finished (re-attached
    // after the restart), the others are interrupted (built again).
    let deadline = Instant::now() + Duration::from_secs(20);
    while state.vmm_pids("").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let dir = server.kill9();
    let started = state.vmm_pids("").len();
    eprintln!("{started} of {N} VMMs had started when serve was killed");

    let server = Server::start_in_with_args(Some(dir), &args);
    let nova = Nova {
        server: &server,
        token,
    };
    let listed = nova.call(
        "GET",
        &format!("/servers/detail?reservation_id={reservation}"),
        None,
    );
    let ids: Vec<String> = listed.json()["servers"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids.len(), N, "{}", listed.text);
    let begun = Instant::now();
    for id in &ids {
        nova.wait_status(id, "ACTIVE", Duration::from_secs(90));
    }
    eprintln!("all {N} ACTIVE {:?} after the restart", begun.elapsed());
    for id in &ids {
        assert!(state.vmm_of(id).is_some(), "server {id} has no VMM");
        let output = nova.console_with(id, READY);
        assert_eq!(
            count(&output, READY),
            1,
            "server {id}'s console: {output:?}"
        );
    }
    assert_eq!(state.vmm_pids("").len(), N, "VMMs beyond one per server");
    for id in &ids {
        let delete = nova.call("DELETE", &format!("/servers/{id}"), None);
        assert_eq!(delete.status, 204, "DELETE {id}: {}", delete.text);
    }
    for id in &ids {
        nova.wait_gone(id, Duration::from_secs(60));
    }
}

/// A state directory of 70 bytes is an ordinary path, but with it
/// `<state>/instances/<uuid>/vmm.sock` is longer than a Unix socket path may
/// be (107 bytes): servers must boot all the same.
#[test]
fn a_long_state_dir_still_boots_servers() {
    if !kvm_usable() {
        return;
    }
    let base = StateDir::new("long");
    let pad = 70usize.saturating_sub(base.path().as_os_str().len() + 1);
    let state_path = base.path().join(format!("{:x<pad$}", "state"));
    std::fs::create_dir_all(&state_path).expect("create the long state directory");
    let state_len = state_path.as_os_str().len();
    let socket_len = state_len + "/instances/".len() + 36 + "/vmm.sock".len();
    eprintln!("state dir of {state_len} bytes; control socket path of {socket_len} bytes");
    let server = Server::start_in(state_path, true);
    let nova = Nova {
        server: &server,
        token: server.admin_token(),
    };
    let image = echo_images(&server, &nova.token, &base.path());
    let id = nova.create("long", &image, "42");
    nova.wait_status(&id, "ACTIVE", Duration::from_secs(30));
    let output = nova.console_with(&id, READY);
    assert!(output.contains(READY), "console output: {output:?}");
    let delete = nova.call("DELETE", &format!("/servers/{id}"), None);
    assert_eq!(delete.status, 204, "DELETE: {}", delete.text);
    nova.wait_gone(&id, Duration::from_secs(30));
}

/// The VMM's disks as the admin's diagnostics (2.48) count them.
fn disks_of(nova: &Nova, id: &str) -> u64 {
    let reply = http(
        &nova.server.addr,
        "GET",
        &format!("/compute/v2.1/servers/{id}/diagnostics"),
        &[
            ("X-Auth-Token", nova.token.clone()),
            ("OpenStack-API-Version", "compute 2.48".into()),
        ],
        None,
    );
    assert_eq!(reply.status, 200, "diagnostics: {}", reply.text);
    let body = reply.json();
    let disks = body["num_disks"].as_u64().expect("num_disks");
    assert_eq!(
        body["disk_details"].as_array().map(Vec::len),
        Some(disks as usize),
        "{body}"
    );
    disks
}

/// Nova's rescue: the rescue image boots with the server's own disk as the
/// next disk (RESCUE), refusals as Nova's, and unrescue boots the server's
/// own image again (ACTIVE); a rescued server can be deleted.
#[test]
fn rescue_boots_the_rescue_image_with_the_root_disk_and_unrescue_returns() {
    if !kvm_usable() {
        return;
    }
    let state = StateDir::new("rescue");
    let server = Server::start_in(state.path(), true);
    let nova = Nova {
        server: &server,
        token: server.admin_token(),
    };
    let image = echo_images(&server, &nova.token, &state.path());
    let id = nova.create("vm1", &image, "42");
    nova.wait_status(&id, "ACTIVE", Duration::from_secs(30));
    let own_disks = disks_of(&nova, &id);
    let pid = state.vmm_of(&id).expect("vm1 has a VMM");

    // Bad input first: nothing changes.
    let unknown = nova.action(
        &id,
        json!({"rescue": {"rescue_image_ref": "6b1d7b4c-1b0e-4a35-9a3c-2f7c3c6c0d11"}}),
    );
    assert_eq!(
        unknown.status, 400,
        "unknown rescue image: {}",
        unknown.text
    );
    let extra = nova.action(&id, json!({"rescue": {"bogus": 1}}));
    assert_eq!(extra.status, 400, "unknown key: {}", extra.text);
    let not_rescued = nova.action(&id, json!({"unrescue": null}));
    assert_eq!(
        not_rescued.status, 409,
        "unrescue of ACTIVE: {}",
        not_rescued.text
    );
    assert_eq!(
        state.vmm_of(&id),
        Some(pid),
        "a refused rescue touched the VMM"
    );

    // rescue → 200 with adminPass → RESCUE, a new VMM with one more disk.
    let rescue = nova.action(&id, json!({"rescue": {"adminPass": "s3cret-rescue"}}));
    assert_eq!(rescue.status, 200, "rescue: {}", rescue.text);
    assert_eq!(rescue.json()["adminPass"], "s3cret-rescue");
    let (shown, took) = nova.wait_status(&id, "RESCUE", Duration::from_secs(30));
    eprintln!("vm1: RESCUE {took:?} after the rescue");
    assert_eq!(shown["OS-EXT-STS:vm_state"], "rescued", "{shown}");
    assert_eq!(shown["OS-EXT-STS:power_state"], 1, "{shown}");
    let rescue_pid = state.vmm_of(&id).expect("the rescue VM runs");
    assert_ne!(rescue_pid, pid, "rescue reused the server's VMM");
    assert_eq!(disks_of(&nova, &id), own_disks + 1, "the rescue disk");
    let output = nova.console_with(&id, READY);
    assert!(count(&output, READY) >= 1, "rescue boot: {output:?}");

    // Only unrescue (and delete) may follow.
    for refused in [
        json!({"rescue": null}),
        json!({"os-stop": null}),
        json!({"pause": null}),
    ] {
        let reply = nova.action(&id, refused.clone());
        assert_eq!(reply.status, 409, "{refused} while RESCUE: {}", reply.text);
    }

    // unrescue → ACTIVE on the server's own disks.
    let unrescue = nova.action(&id, json!({"unrescue": null}));
    assert_eq!(unrescue.status, 202, "unrescue: {}", unrescue.text);
    let (shown, _) = nova.wait_status(&id, "ACTIVE", Duration::from_secs(30));
    assert_eq!(shown["OS-EXT-STS:power_state"], 1, "{shown}");
    assert_eq!(
        disks_of(&nova, &id),
        own_disks,
        "unrescue kept the rescue disk"
    );
    let actions = nova.call("GET", &format!("/servers/{id}/os-instance-actions"), None);
    let names: Vec<String> = actions.json()["instanceActions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["action"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        names.contains(&"rescue".to_string()) && names.contains(&"unrescue".to_string()),
        "instance actions: {names:?}"
    );

    // A stopped server can be rescued too (Nova: ACTIVE, STOPPED, ERROR), and
    // a rescued server deleted.
    let stop = nova.action(&id, json!({"os-stop": null}));
    assert_eq!(stop.status, 202, "os-stop: {}", stop.text);
    nova.wait_status(&id, "SHUTOFF", Duration::from_secs(30));
    let rescue = nova.action(&id, json!({"rescue": {"rescue_image_ref": image}}));
    assert_eq!(rescue.status, 200, "rescue of SHUTOFF: {}", rescue.text);
    nova.wait_status(&id, "RESCUE", Duration::from_secs(30));
    let delete = nova.call("DELETE", &format!("/servers/{id}"), None);
    assert_eq!(delete.status, 204, "delete while RESCUE: {}", delete.text);
    nova.wait_gone(&id, Duration::from_secs(30));
    assert_eq!(state.vmm_of(&id), None, "the rescue VM outlived its server");
}
