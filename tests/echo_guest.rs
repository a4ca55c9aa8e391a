//! The echo guest through the real binary: `yunhe vm guest echo -o FILE`
//! writes it out, `yunhe vmm --spec` boots it as a kernel, the console
//! connection of the control socket types a line and sees it echoed, and
//! `powerdown` makes the guest power off (the VMM exits 0). Skipped (with a
//! message) where /dev/kvm is missing.
//!
//! Every process and file the tests create is removed by a guard's `Drop`, so
//! a failing assertion leaves nothing behind either.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const YUNHE: &str = env!("CARGO_BIN_EXE_yunhe");
const READY: &str = "yunhe echo guest: ready\n";
const POWER_BUTTON: &str = "yunhe echo guest: power button, powering off\n";

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

/// A scratch directory, removed with everything in it on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("yunhe-echo-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A VMM process (in its own session, so it would outlive the test): killed and
/// reaped on drop unless it has already exited.
struct Vmm(Child);

impl Vmm {
    fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the VMM to exit.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time (user + system) the VMM has used so far.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).expect("stat");
        // After the parenthesised command name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat format")
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Duration::from_secs_f64(ticks as f64 / per_second.max(1) as f64)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn request(sock: &Path, cmd: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("reply");
    serde_json::from_str(&line).expect("json")
}

/// Reads `stream` into `seen` until `needle` appears after `from`; panics after `limit`.
fn read_until(
    stream: &mut UnixStream,
    seen: &mut Vec<u8>,
    from: usize,
    needle: &str,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen[from.min(seen.len())..]).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on the console within {limit:?}; it shows {:?}",
            String::from_utf8_lossy(seen)
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "the console closed before {needle:?}; it showed {:?}",
                String::from_utf8_lossy(seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("console read: {e}"),
        }
    }
}

#[test]
fn echo_guest_echoes_and_powers_off() {
    if !kvm_usable() {
        return;
    }
    let scratch = Scratch::new("echo");
    let kernel = scratch.path("echo.elf");
    let sock = scratch.path("vmm.sock");
    let spec = scratch.path("spec.json");
    let log = scratch.path("console.log");

    let out = Command::new(YUNHE)
        .args(["vm", "guest", "echo", "-o"])
        .arg(&kernel)
        .output()
        .expect("run yunhe vm guest");
    assert!(
        out.status.success(),
        "yunhe vm guest echo: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        &spec,
        serde_json::json!({
            "vm": {"boot": {"type": "kernel", "path": kernel}, "memory_mib": 32,
                   "console_log": log},
            "control_socket": sock,
        })
        .to_string(),
    )
    .expect("spec");
    let start = Instant::now();
    let mut vmm = Vmm(Command::new(YUNHE)
        .args(["vmm", "--spec"])
        .arg(&spec)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn yunhe vmm"));

    // The socket answers before the VM runs; a console wants a running VM.
    let deadline = start + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() || request(&sock, "status")["state"] != "running" {
        if let Some(status) = vmm.exited() {
            panic!("the VMM exited early: {status:?}");
        }
        assert!(
            Instant::now() < deadline,
            "no running VM behind the control socket"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut console = UnixStream::connect(&sock).expect("connect");
    console
        .write_all(b"{\"cmd\":\"console\"}\n")
        .expect("console request");
    console
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut seen = Vec::new();
    read_until(&mut console, &mut seen, 0, READY, Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&seen).contains("\"console\":true"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    eprintln!(
        "the echo guest was ready {} ms after the VMM started",
        start.elapsed().as_millis()
    );

    // Idle in `hlt`: the VMM uses (almost) no CPU. A guest spinning instead
    // would cost a whole CPU second here.
    let before = vmm.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let idle = vmm.cpu_time() - before;
    assert!(
        idle < Duration::from_millis(250),
        "idle VMM used {idle:?} of CPU in 1 s"
    );

    let after_ready = seen.len();
    console.write_all(b"ping\r").expect("type");
    read_until(
        &mut console,
        &mut seen,
        after_ready,
        "ping\r\n",
        Duration::from_secs(5),
    );

    assert_eq!(request(&sock, "powerdown")["ok"], true);
    let status = vmm
        .wait_for(Duration::from_secs(5))
        .expect("the VMM did not exit within 5 s of powerdown");
    assert!(status.success(), "the VMM exited with {status:?}");
    assert!(!sock.exists(), "the VMM left its socket behind");

    let logged = std::fs::read_to_string(&log).expect("console log");
    let ready_at = logged.find(READY).expect("the ready line");
    let ping_at = logged.find("ping").expect("the echoed ping");
    assert!(ready_at < ping_at, "{logged:?}");
    assert!(logged.ends_with(POWER_BUTTON), "{logged:?}");
}

#[test]
fn vm_guest_writes_each_guest_to_a_file_or_a_pipe() {
    let scratch = Scratch::new("guests");
    for name in ["probe", "hello", "echo"] {
        let file = scratch.path(name);
        let out = Command::new(YUNHE)
            .args(["vm", "guest", name, "-o"])
            .arg(&file)
            .output()
            .expect("run yunhe vm guest");
        assert!(out.status.success(), "{name}: {out:?}");
        let written = std::fs::read(&file).expect("written guest");
        assert!(written.starts_with(b"\x7fELF"), "{name} is not an ELF");

        let piped = Command::new(YUNHE)
            .args(["vm", "guest", name])
            .stdout(Stdio::piped())
            .output()
            .expect("run yunhe vm guest");
        assert!(piped.status.success(), "{name}: {:?}", piped.status);
        assert_eq!(piped.stdout, written, "{name}: stdout and -o differ");
    }

    let bad = Command::new(YUNHE)
        .args(["vm", "guest", "nonesuch"])
        .output()
        .expect("run yunhe vm guest");
    assert_eq!(bad.status.code(), Some(2));
}

/// A pseudo-terminal's secondary side, or None where there are none.
fn pty() -> Option<(std::fs::File, std::fs::File)> {
    let primary = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx")
        .ok()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&primary);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `fd` is an open pseudo-terminal primary owned by `primary`; `name`
    // is a writable buffer of the length given.
    let ok = unsafe {
        libc::grantpt(fd) == 0
            && libc::unlockpt(fd) == 0
            && libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) == 0
    };
    if !ok {
        return None;
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let secondary = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.to_str().ok()?)
        .ok()?;
    Some((primary, secondary))
}

#[test]
fn vm_guest_refuses_to_write_to_a_terminal() {
    let Some((_primary, secondary)) = pty() else {
        eprintln!("SKIPPED: no pseudo-terminals here");
        return;
    };
    let out = Command::new(YUNHE)
        .args(["vm", "guest", "echo"])
        .stdout(secondary)
        .stderr(Stdio::piped())
        .output()
        .expect("run yunhe vm guest");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("terminal") && err.contains("-o FILE"), "{err}");
}
