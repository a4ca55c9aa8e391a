//! `yunhe bench compute`: servers on the real control plane and VMM.
//!
//! Boots the built-in echo guest (an aki image plus a raw disk naming it as
//! kernel_id) on flavor m1.nano and reports, each against a baseline measured
//! in the same run:
//! * POST /servers latency (202), against an authenticated GET of one flavor;
//! * POST to ACTIVE, against the POST latency;
//! * GET /servers/detail with 1,000 servers, against the same list with limit=1
//!   (the 1,000 are real rows: a flavor too big for the host sends them to
//!   ERROR with a NoValidHost fault, so no 1,000 VMMs are needed);
//! * the VMM memory per idle server beyond the guest memory it touched
//!   (proportional set size, so the binary's shared text is split among the
//!   VMMs that share it), against the whole RSS.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{
    BenchError, ServerUnderTest, admin_token, median, request, request_bytes, self_exe,
    start_server,
};

const BOOTED: usize = 6;
const LISTED: usize = 1000;

pub(super) struct Api<'a> {
    pub(super) server: &'a ServerUnderTest,
    pub(super) token: String,
}

impl Api<'_> {
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String, Value), BenchError> {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![("X-Auth-Token", self.token.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        headers.push(("OpenStack-API-Version", "compute 2.96"));
        let (status, head, body) = request(&self.server.addr, method, path, &headers, &text)
            .map_err(|e| BenchError::Io("calling the API", e))?;
        let value = serde_json::from_str(&body).unwrap_or(Value::Null);
        Ok((status, head, value))
    }

    /// A GET timed from connect to the end of the response body (ms, body).
    pub(super) fn raw_get(&self, path: &str) -> Result<(f64, String), BenchError> {
        let headers = [
            ("X-Auth-Token", self.token.as_str()),
            ("OpenStack-API-Version", "compute 2.96"),
        ];
        let t = Instant::now();
        let (status, _, body) = request(&self.server.addr, "GET", path, &headers, "")
            .map_err(|e| BenchError::Io("calling the API", e))?;
        let took = t.elapsed().as_secs_f64() * 1000.0;
        if status != 200 {
            return Err(BenchError::Server(format!("GET {path}: {status}")));
        }
        Ok((took, body))
    }

    pub(super) fn upload(&self, meta: Value, data: &[u8]) -> Result<String, BenchError> {
        let (status, _, image) = self.call("POST", "/image/v2/images", Some(&meta))?;
        let id = image["id"]
            .as_str()
            .ok_or_else(|| BenchError::Server(format!("image create: {status} {image}")))?
            .to_string();
        let (status, _, _) = request_bytes(
            &self.server.addr,
            "PUT",
            &format!("/image/v2/images/{id}/file"),
            &[
                ("X-Auth-Token", self.token.as_str()),
                ("Content-Type", "application/octet-stream"),
            ],
            data,
        )
        .map_err(|e| BenchError::Io("uploading image data", e))?;
        if status != 204 {
            return Err(BenchError::Server(format!("image upload: {status}")));
        }
        Ok(id)
    }

    pub(super) fn create(
        &self,
        name: &str,
        image: &str,
        flavor: &str,
    ) -> Result<(String, Duration), BenchError> {
        let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": "none"}});
        let t = Instant::now();
        let (status, _, reply) = self.call("POST", "/compute/v2.1/servers", Some(&body))?;
        let took = t.elapsed();
        let id = reply["server"]["id"]
            .as_str()
            .ok_or_else(|| BenchError::Server(format!("server create: {status} {reply}")))?
            .to_string();
        Ok((id, took))
    }

    fn status(&self, id: &str) -> Result<String, BenchError> {
        let (_, _, reply) = self.call("GET", &format!("/compute/v2.1/servers/{id}"), None)?;
        Ok(reply["server"]["status"].as_str().unwrap_or("").to_string())
    }
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The pid of the VMM whose command line names `instance_dir`.
fn vmm_pid(instance_dir: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline);
            (text.contains("vmm") && text.contains(instance_dir)).then_some(pid)
        })
}

/// Guest memory touched, from the VMM's `stats`.
fn touched_bytes(socket: &std::path::Path) -> Option<u64> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"{\"cmd\":\"stats\"}\n").ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    let reply: Value = serde_json::from_str(&line).ok()?;
    reply["stats"]["guest_memory_touched"].as_u64()
}

/// Kills every VMM started below `state_dir` (they outlive `serve` by design).
pub(super) fn kill_vmms(state_dir: &std::path::Path) {
    let needle = state_dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline);
        if text.contains("vmm") && text.contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub fn run() -> Result<(), BenchError> {
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("yunhe bench compute: skipped (no /dev/kvm)");
        return Ok(());
    }
    let exe = self_exe()?;
    let state_dir =
        std::env::temp_dir().join(format!("yunhe-bench-compute-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    println!("yunhe bench compute ({})", exe.display());
    let result = (|| {
        let (server, _) = start_server(&exe, &state_dir)?;
        let api = Api {
            token: admin_token(&server)?,
            server: &server,
        };
        let kernel = api.upload(
            json!({"name": "bench-echo-kernel", "disk_format": "aki", "container_format": "aki"}),
            crate::vmm::guests::ECHO_ELF,
        )?;
        let image = api.upload(
            json!({"name": "bench-echo", "disk_format": "raw", "container_format": "bare", "kernel_id": kernel}),
            &vec![0u8; 1 << 20],
        )?;

        // Baseline: an authenticated read of one flavor.
        let mut base = Vec::new();
        for _ in 0..BOOTED {
            let t = Instant::now();
            api.call("GET", "/compute/v2.1/flavors/42", None)?;
            base.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let base = median(base);

        let mut post = Vec::new();
        let mut active = Vec::new();
        let mut ids = Vec::new();
        for i in 0..BOOTED {
            let t = Instant::now();
            let (id, took) = api.create(&format!("bench-{i}"), &image, "42")?;
            post.push(took.as_secs_f64() * 1000.0);
            loop {
                let status = api.status(&id)?;
                if status == "ACTIVE" {
                    break;
                }
                if status == "ERROR" || t.elapsed() > Duration::from_secs(60) {
                    let (_, _, reply) =
                        api.call("GET", &format!("/compute/v2.1/servers/{id}"), None)?;
                    return Err(BenchError::Server(format!(
                        "server {id} ended {status}: {}",
                        reply["server"]["fault"]
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            active.push(t.elapsed().as_secs_f64() * 1000.0);
            ids.push(id);
        }
        let post = median(post);
        // The range too: one median of six hides how much boots vary.
        let fastest = active.iter().copied().fold(f64::INFINITY, f64::min);
        let slowest = active.iter().copied().fold(0.0, f64::max);
        let active = median(active);
        println!(
            "create    POST /servers to 202: {post:.1} ms (median of {BOOTED}; goal <= 20 ms)\n          \
             baseline GET /flavors/42: {base:.1} ms; ratio {:.1}x",
            post / base
        );
        println!(
            "boot      POST /servers to ACTIVE (echo guest, m1.nano): {active:.0} ms (median of {BOOTED}, range {fastest:.0}-{slowest:.0} ms; goal <= 1000 ms)\n          \
             baseline POST to 202: {post:.1} ms; ratio {:.1}x",
            active / post
        );

        // Memory of idle VMMs.
        std::thread::sleep(crate::vmm::vm::SETTLE + Duration::from_millis(500));
        let mut beyond = Vec::new();
        let mut rss = Vec::new();
        for id in &ids {
            let dir = state_dir.join("instances").join(id);
            let Some(pid) = vmm_pid(&dir.to_string_lossy()) else {
                continue;
            };
            let socket = std::fs::read_to_string(dir.join("spec.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| v["control_socket"].as_str().map(std::path::PathBuf::from))
                .unwrap_or_default();
            let touched = touched_bytes(&socket).unwrap_or(0) as f64 / 1024.0;
            if let (Some(p), Some(r)) = (pss_kib(pid), super::harness::rss_kib(pid)) {
                beyond.push((p as f64 - touched) / 1024.0);
                rss.push(r as f64 / 1024.0);
            }
        }
        let beyond = median(beyond);
        let rss = median(rss);
        println!(
            "memory    VMM PSS beyond guest memory touched, idle echo server: {beyond:.2} MiB (median of {BOOTED} VMMs; goal <= 5 MiB)\n          \
             baseline whole RSS of one VMM (shared binary pages counted in full): {rss:.2} MiB; ratio {:.2}",
            beyond / rss
        );

        // 1,000 servers in the list: a flavor no host can hold sends them to ERROR.
        let (status, _, _) = api.call(
            "POST",
            "/compute/v2.1/flavors",
            Some(&json!({"flavor": {"name": "bench-huge", "ram": 1 << 30, "vcpus": 1, "disk": 1, "id": "bench-huge"}})),
        )?;
        if status != 200 {
            return Err(BenchError::Server(format!("flavor create: {status}")));
        }
        let project = {
            let (_, _, reply) =
                api.call("GET", &format!("/compute/v2.1/servers/{}", ids[0]), None)?;
            reply["server"]["tenant_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        api.call(
            "PUT",
            &format!("/compute/v2.1/os-quota-sets/{project}"),
            Some(&json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}})),
        )?;
        for i in ids.len()..LISTED {
            api.create(&format!("bench-{i}"), &image, "bench-huge")?;
        }
        let mut full = Vec::new();
        let mut one = Vec::new();
        let mut count = 0;
        for _ in 0..5 {
            // Timed: the request until the whole response is read; parsing
            // the 2 MB reply on the client side is not the server's time.
            let (took, body) = api.raw_get("/compute/v2.1/servers/detail")?;
            full.push(took);
            count = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["servers"].as_array().map(|a| a.len()))
                .unwrap_or(0);
            let (took, _) = api.raw_get("/compute/v2.1/servers/detail?limit=1")?;
            one.push(took);
        }
        let full = median(full);
        let one = median(one);
        println!(
            "list      GET /servers/detail with {count} servers: {full:.1} ms (median of 5; goal <= 50 ms)\n          \
             baseline the same with limit=1: {one:.1} ms; ratio {:.1}x",
            full / one
        );
        drop(server);
        Ok(())
    })();
    clean_up(&state_dir);
    result
}

/// Kills the VMMs below `state_dir`, removes their cgroups, sockets and the directory.
pub(super) fn clean_up(state_dir: &std::path::Path) {
    kill_vmms(state_dir);
    // The killed VMMs' cgroups (serve would only sweep them a minute later).
    for entry in std::fs::read_dir(state_dir.join("instances"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(id) = entry.file_name().to_str() {
            crate::vmm::jail::remove_cgroup(id);
        }
    }
    let _ = std::fs::remove_dir_all(crate::compute::virt::sockets_dir(state_dir));
    let _ = std::fs::remove_dir_all(state_dir);
}
