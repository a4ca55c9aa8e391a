//! VMM benchmarks for `yunhe bench`, each a ratio against a baseline measured
//! in the same run:
//!
//! * process start → first serial line of the minimal PVH guest under
//!   `yunhe vm run` vs `qemu-system-x86_64 -M microvm` (median of alternated runs);
//! * VMM RSS beyond the guest memory it touched (the probe guest counting);
//! * the virtio-blk request path without KVM (the virtio module's bench).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::guests::{HELLO_ELF, PROBE_ELF};

/// Alternated runs of each start-up measurement.
const STARTUP_RUNS: usize = 10;

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("yunhe-bench-{}-{name}", std::process::id()))
}

/// Milliseconds from spawning `cmd` to the first line on its stdout, or `None`.
fn time_to_first_line(cmd: &mut Command) -> Option<f64> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let ok = child
        .stdout
        .take()
        .map(|o| BufReader::new(o).read_line(&mut line).is_ok() && line.ends_with('\n'))
        .unwrap_or(false);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let _ = child.kill();
    let _ = child.wait();
    ok.then_some(ms)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Start-up time of the minimal PVH guest: (yunhe median ms, qemu median ms).
pub fn startup(runs: usize) -> (Option<f64>, Option<f64>) {
    let guest = temp_path("hello.elf");
    if std::fs::write(&guest, HELLO_ELF).is_err() {
        return (None, None);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut ours = Vec::new();
    let mut qemu = Vec::new();
    for _ in 0..runs {
        if let Some(ms) = time_to_first_line(
            Command::new(&exe)
                .args(["vm", "run", "--memory", "128", "--kernel"])
                .arg(&guest),
        ) {
            ours.push(ms);
        }
        if let Some(ms) = time_to_first_line(
            Command::new("qemu-system-x86_64")
                .args([
                    "-M",
                    "microvm,accel=kvm",
                    "-cpu",
                    "host,-arch-capabilities",
                    "-nodefaults",
                ])
                .args([
                    "-no-user-config",
                    "-nographic",
                    "-serial",
                    "stdio",
                    "-m",
                    "128",
                    "-kernel",
                ])
                .arg(&guest),
        ) {
            qemu.push(ms);
        }
    }
    let _ = std::fs::remove_file(&guest);
    (median(&mut ours), median(&mut qemu))
}

fn request(sock: &Path, cmd: &str) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// Anonymous (private, not file-backed) resident bytes of a process: the
/// memory only this VMM holds, unlike the binary's text pages, which every
/// VMM and the control plane share through the page cache.
fn anonymous_bytes(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// (VMM RSS, guest memory touched, VMM anonymous memory) in bytes for the
/// counting probe guest.
pub fn rss() -> Option<(u64, u64, u64)> {
    let guest = temp_path("probe.elf");
    let sock = temp_path("vmm.sock");
    let spec = temp_path("spec.json");
    std::fs::write(&guest, PROBE_ELF).ok()?;
    let body = serde_json::json!({
        "vm": {"boot": {"type": "firmware", "path": guest}, "cmdline": "count", "memory_mib": 128, "rng": true},
        "control_socket": sock,
    });
    std::fs::write(&spec, body.to_string()).ok()?;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut child = Command::new(exe)
        .args(["vmm", "--spec"])
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut result = None;
    while Instant::now() < deadline {
        if request(&sock, "status")
            .map(|s| s["state"] == "running")
            .unwrap_or(false)
        {
            // Idle: past the point where the VMM gives back its start-up code's pages.
            std::thread::sleep(super::vm::SETTLE + Duration::from_millis(500));
            let anonymous = anonymous_bytes(child.id()).unwrap_or(0);
            result = request(&sock, "stats").and_then(|s| {
                Some((
                    s["stats"]["vmm_rss"].as_u64()?,
                    s["stats"]["guest_memory_touched"].as_u64()?,
                    anonymous,
                ))
            });
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = request(&sock, "stop");
    let _ = child.kill();
    let _ = child.wait();
    for p in [&guest, &spec, &sock] {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// All VMM benchmarks as (name, printed result) pairs.
pub fn run_benchmarks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    match startup(STARTUP_RUNS) {
        (Some(ours), Some(qemu)) => out.push((
            "vmm.startup_to_first_line".into(),
            format!(
                "{ours:.1} ms vs qemu microvm {qemu:.1} ms: ratio {:.3} (median of {STARTUP_RUNS} alternated runs; target <= 0.5)",
                ours / qemu
            ),
        )),
        (Some(ours), None) => out.push((
            "vmm.startup_to_first_line".into(),
            format!("{ours:.1} ms; baseline missing (is qemu-system-x86_64 installed?)"),
        )),
        _ => out.push(("vmm.startup_to_first_line".into(), "failed: no first line (is /dev/kvm usable?)".into())),
    }
    match rss() {
        Some((rss, touched, anonymous)) => out.push((
            "vmm.rss_beyond_touched_guest_memory".into(),
            format!(
                "{:.2} MiB (RSS {:.2} MiB, guest memory touched {:.2} MiB; target <= 5 MiB); \
                 of the RSS, anonymous memory {:.2} MiB (includes the touched guest memory), \
                 the rest is the binary's shared text",
                rss.saturating_sub(touched) as f64 / 1048576.0,
                rss as f64 / 1048576.0,
                touched as f64 / 1048576.0,
                anonymous as f64 / 1048576.0
            ),
        )),
        None => out.push((
            "vmm.rss_beyond_touched_guest_memory".into(),
            "failed: the VMM did not report".into(),
        )),
    }
    let blk = super::devices::virtio::bench::bench_blk_path();
    out.push((
        "vmm.virtio_blk_requests_per_core".into(),
        format!(
            "{:.0} 4-KiB requests/s per core vs {:.0} 4-KiB memcpy/s: ratio {:.3} ({} errors; target >= 1,000,000 req/s)",
            blk.requests_per_sec, blk.memcpy_per_sec, blk.ratio_to_memcpy, blk.errors
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
