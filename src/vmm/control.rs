//! `yunhe vmm --spec FILE`: one VM from a JSON spec, driven over a unix
//! control socket that speaks JSON lines (see docs/vmm.md).
//!
//! The process detaches into its own session so it outlives the control plane
//! that started it; a restarted control plane re-attaches by connecting to the
//! socket again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::VmmArgs;
use super::bus::lock;
use super::console::Console;
use super::devices::legacy::VmEvent;
use super::vm::{RunningVm, Vm, VmConfig};

/// The `yunhe vmm` spec file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmmSpec {
    /// The machine (optional with `restore_from`, whose saved configuration is used).
    #[serde(default)]
    pub vm: Option<VmConfig>,
    /// Resume the VM saved in this directory (the `save` command) instead of booting.
    #[serde(default)]
    pub restore_from: Option<PathBuf>,
    /// Path of the unix control socket (created; an existing stale socket is replaced).
    pub control_socket: PathBuf,
    /// End the VMM when the guest resets, instead of rebooting it.
    #[serde(default)]
    pub no_reboot: bool,
    /// Confine the VMM (namespaces, new root, unprivileged uid, cgroup); set
    /// by `yunhe serve` (see jail.rs).
    #[serde(default)]
    pub jail: Option<super::jail::JailSpec>,
}

/// Errors of the VMM process.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Cannot read the spec {0}: {1}
    #[error("cannot read the spec {0}: {1}")]
    SpecRead(String, std::io::Error),
    /// The spec is not valid: {0}
    #[error("the spec is not valid: {0}")]
    SpecParse(serde_json::Error),
    /// Cannot listen on {0}: {1}
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    /// Cannot restore: {0}
    #[error("cannot restore: {0}")]
    Restore(super::snapshot::SnapshotError),
    /// The spec has neither `vm` nor `restore_from`
    #[error("the spec has neither `vm` nor `restore_from`")]
    NoVm,
    /// Another VMM already serves {0}
    #[error("another VMM already serves {0}")]
    SocketInUse(String),
    /// The VMM could not confine itself: {0}
    #[error("{0}")]
    Jail(#[from] super::jail::JailError),
    /// The main thread's seccomp filter: {0}
    #[error("{0}")]
    Seccomp(#[from] super::seccomp::SeccompError),
}

/// A control-socket request.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// State, pid, uptime, the spec's VM.
    Status,
    /// Pause all vCPUs.
    Pause,
    /// Resume them.
    Resume,
    /// Press the ACPI power button.
    Powerdown,
    /// Stop the VM now (hard) and end the VMM.
    Stop,
    /// Reset the VM (reboot).
    Reset,
    /// Switch this connection to the serial console.
    Console,
    /// Counters.
    Stats,
    /// Save the whole VM into `dir` and stop.
    Save {
        /// The state directory (created).
        dir: PathBuf,
    },
}

/// Console clients one VM serves at once; the next is refused.
pub const MAX_CONSOLE_CLIENTS: usize = 4;

/// The VM the socket controls; replaced on reboot.
struct Shared {
    current: Mutex<Option<Arc<RunningVm>>>,
    console: Arc<Console>,
    config: VmConfig,
    started: Instant,
    pid: u32,
    boots: Mutex<u64>,
    ending: AtomicBool,
    /// An event to send once the current reply is written.
    after_reply: Mutex<Option<VmEvent>>,
    /// Console clients connected now (at most [`MAX_CONSOLE_CLIENTS`]).
    console_clients: AtomicUsize,
}

/// A console client's place among the [`MAX_CONSOLE_CLIENTS`]; freed on drop.
struct ConsoleSlot<'a>(&'a AtomicUsize);

impl<'a> ConsoleSlot<'a> {
    fn take(clients: &'a AtomicUsize) -> Option<Self> {
        clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_CONSOLE_CLIENTS).then_some(n + 1)
            })
            .ok()
            .map(|_| ConsoleSlot(clients))
    }
}

impl Drop for ConsoleSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn vm(&self) -> Option<Arc<RunningVm>> {
        lock(&self.current).clone()
    }
}

fn reply(ok: bool, mut body: Value) -> String {
    if let Value::Object(ref mut m) = body {
        m.insert("ok".into(), Value::Bool(ok));
    }
    let mut s = body.to_string();
    s.push('\n');
    s
}

fn error(msg: impl std::fmt::Display) -> String {
    reply(false, json!({ "error": msg.to_string() }))
}

/// Handles one request; `None` means "switch to console mode".
fn handle(shared: &Shared, line: &str) -> Option<String> {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Some(error(format!("bad request: {e}"))),
    };
    let vm = shared.vm();
    let Some(vm) = vm else {
        if matches!(req, Request::Status) {
            let state = if shared.ending.load(Ordering::SeqCst) {
                "stopping"
            } else {
                "starting"
            };
            return Some(reply(
                true,
                json!({ "state": state, "pid": shared.pid, "boots": *lock(&shared.boots), "vm": shared.config }),
            ));
        }
        return Some(error("the VM is not running"));
    };
    Some(match req {
        Request::Status => reply(
            true,
            json!({
                "state": if shared.ending.load(Ordering::SeqCst) { "stopping" }
                         else if vm.is_paused() { "paused" } else { "running" },
                "pid": shared.pid,
                "uptime_s": shared.started.elapsed().as_secs_f64(),
                "boots": *lock(&shared.boots),
                "console_clients": shared.console_clients.load(Ordering::SeqCst),
                "vm": shared.config,
            }),
        ),
        Request::Pause => {
            vm.pause();
            reply(true, json!({ "state": "paused" }))
        }
        Request::Resume => {
            vm.resume();
            reply(true, json!({ "state": "running" }))
        }
        Request::Powerdown => match vm.power_button() {
            Ok(()) => reply(true, json!({})),
            Err(e) => error(format!("cannot press the power button: {e}")),
        },
        Request::Stop => {
            shared.ending.store(true, Ordering::SeqCst);
            // Sent by the client thread once this reply is written (see serve_client).
            *lock(&shared.after_reply) = Some(VmEvent::PowerOff);
            reply(true, json!({ "state": "stopping" }))
        }
        Request::Reset => {
            let _ = vm.event_sender().send(VmEvent::Reset);
            reply(true, json!({}))
        }
        Request::Stats => match serde_json::to_value(vm.stats()) {
            Ok(v) => reply(true, json!({ "stats": v })),
            Err(e) => error(e),
        },
        Request::Save { dir } => match vm.save(&dir) {
            Ok(()) => {
                shared.ending.store(true, Ordering::SeqCst);
                *lock(&shared.after_reply) = Some(VmEvent::PowerOff);
                reply(true, json!({ "saved": dir, "state": "stopping" }))
            }
            Err(e) => {
                vm.resume();
                error(e)
            }
        },
        Request::Console => return None,
    })
}

fn serve_client(shared: Arc<Shared>, stream: UnixStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > 64 * 1024 {
            let _ = writer.write_all(error("request too long").as_bytes());
            return;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match handle(&shared, trimmed) {
            Some(r) => {
                let written = writer.write_all(r.as_bytes()).and_then(|()| writer.flush());
                // A stop (or save) ends the process: only after the reply is out.
                let after = lock(&shared.after_reply).take();
                if let (Some(ev), Some(vm)) = (after, shared.vm()) {
                    let _ = vm.event_sender().send(ev);
                }
                if written.is_err() {
                    return;
                }
            }
            None => {
                let Some(_slot) = ConsoleSlot::take(&shared.console_clients) else {
                    let refusal = error(format!(
                        "the console already has {MAX_CONSOLE_CLIENTS} clients"
                    ));
                    let _ = writer.write_all(refusal.as_bytes());
                    return;
                };
                if writer
                    .write_all(reply(true, json!({ "console": true })).as_bytes())
                    .is_err()
                {
                    return;
                }
                console_mode(&shared, reader, writer);
                return;
            }
        }
    }
}

/// Streams serial output to the client and its bytes to the serial input,
/// until either side ends. Both threads of the client (this one and its
/// output thread) end when the client leaves: closing the socket ends the
/// input loop, which unsubscribes (ending the output thread's stream at
/// once, even when the guest prints nothing) and shuts the socket down
/// (waking a write blocked on a client that stopped reading); an output
/// thread that fails to write, or is dropped for falling behind, shuts the
/// socket down so the input loop ends too.
fn console_mode(shared: &Shared, mut reader: BufReader<UnixStream>, mut writer: UnixStream) {
    let (backlog, rx, subscriber) = shared.console.subscribe();
    let out = std::thread::Builder::new()
        .name("yunhe-console".into())
        .spawn(move || {
            if writer.write_all(&backlog).is_ok() {
                while let Ok(chunk) = rx.recv() {
                    if writer.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
            let _ = writer.shutdown(Shutdown::Both);
        });
    let mut buf = [0u8; 256];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            let Some(vm) = shared.vm() else { break };
            let took = vm.serial_input(data);
            data = &data[took..];
            if !data.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    shared.console.unsubscribe(subscriber);
    let _ = reader.get_ref().shutdown(Shutdown::Both);
    if let Ok(out) = out {
        let _ = out.join();
    }
}

fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::SocketInUse(path.display().to_string()));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|e| ControlError::Listen(path.display().to_string(), e))
}

fn run(spec_path: &Path, start: Instant) -> Result<ExitCode, ControlError> {
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| ControlError::SpecRead(spec_path.display().to_string(), e))?;
    let spec: VmmSpec = serde_json::from_str(&text).map_err(ControlError::SpecParse)?;
    let restore = match &spec.restore_from {
        Some(dir) => Some((
            dir.clone(),
            super::snapshot::read_state(dir).map_err(ControlError::Restore)?,
        )),
        None => None,
    };
    let config = match (&restore, &spec.vm) {
        (Some((_, state)), vm) => {
            let mut c = state.config.clone();
            if let Some(vm) = vm {
                c.console_log = vm.console_log.clone();
            }
            c
        }
        (None, Some(vm)) => vm.clone(),
        (None, None) => return Err(ControlError::NoVm),
    };
    // Nothing the spawner leaked stays open: only the descriptors the spec hands over.
    let handed_over: Vec<std::os::fd::RawFd> = config
        .disks
        .iter()
        .filter_map(|d| d.fd)
        .chain(config.nets.iter().filter_map(|n| n.fd))
        .collect();
    super::jail::close_inherited_fds(&handed_over);
    // Outlive the control plane: own session, no terminal signals.
    let _ = nix::unistd::setsid();
    // SAFETY: setting signal dispositions to SIG_IGN has no memory effects.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let log = match &config.console_log {
        Some(p) => match super::vm::open_console_log(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("yunhe vmm: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
        None => None,
    };
    let console = Arc::new(Console::new(log, false));
    let listener = bind(&spec.control_socket)?;
    // Socket and console log are open: now the jail (before any other thread).
    let pid = match &spec.jail {
        Some(jail) => super::jail::enter(jail)?,
        None => std::process::id(),
    };
    // The threads started from here on stack their own filters on this one.
    super::seccomp::install(super::seccomp::ThreadKind::Main)?;
    let shared = Arc::new(Shared {
        current: Mutex::new(None),
        console: console.clone(),
        config: config.clone(),
        started: start,
        pid,
        boots: Mutex::new(0),
        ending: AtomicBool::new(false),
        after_reply: Mutex::new(None),
        console_clients: AtomicUsize::new(0),
    });
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("yunhe-control".into())
            .spawn(move || {
                if let Err(e) = super::seccomp::install(super::seccomp::ThreadKind::Control) {
                    eprintln!("yunhe vmm: {e}");
                    return;
                }
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    let _ = std::thread::Builder::new()
                        .name("yunhe-client".into())
                        .spawn(move || serve_client(shared, stream));
                }
            })
            .map_err(|e| ControlError::Listen("control thread".into(), e))?;
    }
    let code = loop {
        // Only the first boot resumes the saved state; a reboot starts afresh.
        let from = if *lock(&shared.boots) == 0 {
            restore.as_ref().map(|(d, st)| (d.as_path(), st))
        } else {
            None
        };
        let vm = match Vm::new(&config, console.clone(), super::virtio_devices, start, from)
            .and_then(|v| v.start())
        {
            Ok(v) => Arc::new(v),
            Err(e) => {
                eprintln!("yunhe vmm: {e}");
                break ExitCode::FAILURE;
            }
        };
        super::vm::start_watchdog(&vm, Duration::from_millis(250));
        *lock(&shared.current) = Some(vm.clone());
        *lock(&shared.boots) += 1;
        let event = vm.wait();
        vm.stop();
        match event {
            VmEvent::PowerOff => break ExitCode::SUCCESS,
            VmEvent::Reset if spec.no_reboot || shared.ending.load(Ordering::SeqCst) => {
                break ExitCode::SUCCESS;
            }
            VmEvent::Reset => continue,
            VmEvent::Crash(why) => {
                eprintln!("yunhe vmm: the VM stopped: {why}");
                break ExitCode::FAILURE;
            }
        }
    };
    shared.ending.store(true, Ordering::SeqCst);
    *lock(&shared.current) = None;
    let _ = std::fs::remove_file(&spec.control_socket);
    Ok(code)
}

pub fn vmm_main(args: VmmArgs) -> ExitCode {
    let start = Instant::now();
    let Some(spec) = args.spec else {
        eprintln!("yunhe vmm: --spec FILE is required");
        return ExitCode::from(2);
    };
    match run(&spec, start) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("yunhe vmm: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert!(matches!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#),
            Ok(Request::Status)
        ));
        assert!(matches!(
            serde_json::from_str::<Request>(r#"{"cmd":"powerdown"}"#),
            Ok(Request::Powerdown)
        ));
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"rm -rf"}"#).is_err());
        let spec: VmmSpec = serde_json::from_str(
            r#"{"vm":{"boot":{"type":"probe"},"memory_mib":64},"control_socket":"/tmp/x.sock"}"#,
        )
        .expect("spec");
        let vm = spec.vm.expect("vm");
        assert_eq!(vm.cpus, 1);
        assert_eq!(vm.memory_mib, 64);
    }
}
