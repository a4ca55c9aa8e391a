//! `yunhe vmm --spec FILE`: one VM from a JSON spec, driven over a unix
//! control socket that speaks JSON lines (see docs/vmm.md).
//!
//! The process detaches into its own session so it outlives the control plane
//! that started it; a restarted control plane re-attaches by connecting to the
//! socket again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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
use super::fdpass::FdReader;
use super::vm::{RunningVm, Vm};
use super::vmm_config::{NetConfig, VmConfig};

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

// ------------------------------------------------------------ the protocol
//
// One JSON object per line each way. A request is `{"cmd": "<name>", ...}`
// ([`Request`]); its reply is the reply type of that command with `"ok": true`
// added, or `{"ok": false, "error": "..."}` ([`encode_reply`], [`decode_reply`]).
// The VMM's server (below) and its clients (compute's driver, `yunhe vm ctl`)
// share these types, so the two sides cannot drift apart.

/// A control-socket request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// State, pid, uptime, the spec's VM ([`StatusReply`]).
    Status,
    /// Pause all vCPUs ([`StateReply`]).
    Pause,
    /// Resume them ([`StateReply`]).
    Resume,
    /// Press the ACPI power button ([`EmptyReply`]).
    Powerdown,
    /// Stop the VM now (hard) and end the VMM ([`StateReply`]).
    Stop,
    /// Reset the VM (reboot) ([`EmptyReply`]).
    Reset,
    /// Switch this connection to the serial console ([`ConsoleReply`]).
    Console,
    /// Counters ([`StatsReply`]).
    Stats,
    /// Save the whole VM into `dir` and stop ([`SavedReply`]).
    Save {
        /// The state directory (created).
        dir: PathBuf,
    },
    /// Hot-add a virtio-blk disk whose image descriptor comes with the request line
    /// (SCM_RIGHTS) ([`DeviceReply`]).
    AddDisk {
        /// The device's id (`disk<N>` when absent): what `remove_device` takes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The image's path as the client knows it (recorded by `save`, never opened).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        /// Attach read-only.
        #[serde(default)]
        read_only: bool,
        /// The serial the guest sees (the id when absent; at most 20 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
    },
    /// Hot-add a virtio-net NIC whose tap descriptor comes with the request line
    /// (SCM_RIGHTS) ([`DeviceReply`]).
    AddNet {
        /// The device's id (`net<N>` when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The tap's name (recorded by `save`, never opened).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tap: Option<String>,
        /// MAC address (a random locally administered one when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// Ask the guest to eject device `id` and wait for it ([`DeviceReply`]); refused with
    /// kind `eject_timeout` when the guest does not eject within `timeout_s` (default 10, at
    /// most 120).
    RemoveDevice {
        /// The device's id (as `add_disk`/`add_net` replied, or `disk0`, `net0`...).
        id: String,
        /// Seconds to wait for the guest's eject.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_s: Option<u64>,
    },
    /// Disk `id`'s image grew: the disk takes the image's size now (the file is the truth, no
    /// size comes with the request) and the guest gets a configuration-change interrupt
    /// ([`ResizedReply`]); refused with kind `invalid` when the image shrank.
    ResizeDisk {
        /// The disk's id (as `add_disk` replied, or `disk0`...).
        id: String,
    },
}

/// What the VMM is doing, as `status` (and pause, resume, stop) report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmState {
    /// The VM is being built (or rebuilt after a reset).
    Starting,
    /// The vCPUs run.
    Running,
    /// The vCPUs are parked.
    Paused,
    /// The VMM is ending (stop, save, power-off).
    Stopping,
}

impl std::fmt::Display for VmmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmmState::Starting => "starting",
            VmmState::Running => "running",
            VmmState::Paused => "paused",
            VmmState::Stopping => "stopping",
        })
    }
}

/// The reply to `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReply {
    pub state: VmmState,
    /// The VMM's pid (in the host's PID namespace).
    pub pid: u32,
    /// Seconds since the VMM started (absent while the VM is starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<f64>,
    /// Boots so far (a reset boots again).
    pub boots: u64,
    /// Console clients connected now (absent while the VM is starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_clients: Option<usize>,
    /// The machine the VMM runs (None when a VMM of another build
    /// describes it in a way this build cannot read: the rest of the status
    /// still counts, so a restarted serve finds its VMMs again).
    #[serde(default, deserialize_with = "lenient")]
    pub vm: Option<VmConfig>,
}

/// Reads a value, or None when it is not what this build expects.
fn lenient<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(de)?;
    Ok(serde_json::from_value(value).ok())
}

/// The reply to `pause`, `resume` and `stop`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateReply {
    pub state: VmmState,
}

/// The reply to `powerdown` and `reset`: nothing but `ok`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EmptyReply {}

/// The reply to `stats`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatsReply {
    /// The VM's counters (`VmStats` of vm.rs).
    pub stats: Value,
}

/// The reply to `save`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedReply {
    /// The state directory written.
    pub saved: PathBuf,
    pub state: VmmState,
}

/// The reply to `console`, after which the connection carries the serial console.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsoleReply {
    pub console: bool,
}

/// The reply to `add_disk`, `add_net` and `remove_device`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceReply {
    /// The device's id.
    pub id: String,
    /// Its PCI slot (device number on bus 0).
    pub slot: u8,
    /// A NIC's MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The reply to `resize_disk`: capacities in bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResizedReply {
    /// The disk's id.
    pub id: String,
    /// Its capacity now.
    pub capacity: u64,
    /// Its capacity before.
    pub previous: u64,
}

/// The kind of a refused hotplug request (`kind` beside `error` in the refusal), as
/// [`refusal_kind`] reads it.
pub fn refusal_kind(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("ok") != Some(&Value::Bool(false)) {
        return None;
    }
    v.get("kind").and_then(Value::as_str).map(str::to_string)
}

/// A successful reply of any command (what the server sends).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Status(Box<StatusReply>),
    State(StateReply),
    Empty(EmptyReply),
    Stats(StatsReply),
    Saved(SavedReply),
    Console(ConsoleReply),
    Device(DeviceReply),
    Resized(ResizedReply),
}

/// A reply that says `"ok": false`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Refusal {
    #[serde(default)]
    error: Option<String>,
}

/// Why a reply line is not the reply that was asked for.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplyError {
    /// The VMM refused the command: {0}
    #[error("{0}")]
    Refused(String),
    /// The reply is not a reply of the protocol: {0}
    #[error("{0}")]
    Malformed(String),
}

/// One reply line (with its newline): the reply with `"ok": true`, or the
/// error with `"ok": false`. Keys come out sorted, as they always have.
pub fn encode_reply(reply: Result<Reply, String>) -> String {
    let (ok, body) = match reply {
        Ok(r) => (true, serde_json::to_value(r).unwrap_or_else(|_| json!({}))),
        Err(e) => (false, json!({ "error": e })),
    };
    let mut body = match body {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    body.insert("ok".into(), Value::Bool(ok));
    let mut s = Value::Object(body).to_string();
    s.push('\n');
    s
}

/// Reads one reply line as the reply type `T` of the command sent.
pub fn decode_reply<T: serde::de::DeserializeOwned>(line: &str) -> Result<T, ReplyError> {
    let value: Value = serde_json::from_str(line.trim())
        .map_err(|e| ReplyError::Malformed(format!("bad reply {line:?}: {e}")))?;
    match value.get("ok") {
        Some(Value::Bool(true)) => serde_json::from_value(value)
            .map_err(|e| ReplyError::Malformed(format!("bad reply {line:?}: {e}"))),
        Some(Value::Bool(false)) => {
            let refusal: Refusal = serde_json::from_value(value).unwrap_or(Refusal { error: None });
            Err(ReplyError::Refused(
                refusal.error.unwrap_or_else(|| "refused".into()),
            ))
        }
        _ => Err(ReplyError::Malformed(format!("bad reply {line:?}: no ok"))),
    }
}

// ------------------------------------------------------------ the server

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
    /// A duplicate of each hot-added device's descriptor, by the device's name, open until
    /// the device is removed: a guest reboot builds the device again from it.
    hot_added: Mutex<HashMap<String, OwnedFd>>,
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

fn error(msg: impl std::fmt::Display) -> String {
    encode_reply(Err(msg.to_string()))
}

fn ok(reply: Reply) -> String {
    encode_reply(Ok(reply))
}

fn state(state: VmmState) -> Reply {
    Reply::State(StateReply { state })
}

/// A refusal of a hotplug request: `error` and its `kind`.
fn hotplug_error(e: super::hotplug::HotplugError) -> String {
    let mut s = json!({ "ok": false, "error": e.to_string(), "kind": e.kind() }).to_string();
    s.push('\n');
    s
}

fn device_reply(added: super::hotplug::Added) -> String {
    ok(Reply::Device(DeviceReply {
        id: added.id,
        slot: added.slot,
        mac: added.mac,
    }))
}

/// Handles one request; `None` means "switch to console mode". `fd`: the descriptor that
/// came with the request line, if any.
fn handle(shared: &Shared, line: &str, fd: Option<std::os::fd::OwnedFd>) -> Option<String> {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Some(error(format!("bad request: {e}"))),
    };
    let vm = shared.vm();
    let ending = shared.ending.load(Ordering::SeqCst);
    let Some(vm) = vm else {
        if matches!(req, Request::Status) {
            return Some(ok(Reply::Status(Box::new(StatusReply {
                state: if ending {
                    VmmState::Stopping
                } else {
                    VmmState::Starting
                },
                pid: shared.pid,
                uptime_s: None,
                boots: *lock(&shared.boots),
                console_clients: None,
                vm: Some(shared.config.clone()),
            }))));
        }
        return Some(error("the VM is not running"));
    };
    Some(match req {
        Request::Status => ok(Reply::Status(Box::new(StatusReply {
            state: if ending {
                VmmState::Stopping
            } else if vm.is_paused() {
                VmmState::Paused
            } else {
                VmmState::Running
            },
            pid: shared.pid,
            uptime_s: Some(shared.started.elapsed().as_secs_f64()),
            boots: *lock(&shared.boots),
            console_clients: Some(shared.console_clients.load(Ordering::SeqCst)),
            vm: Some(shared.config.clone()),
        }))),
        Request::Pause => {
            vm.pause();
            ok(state(VmmState::Paused))
        }
        Request::Resume => {
            vm.resume();
            ok(state(VmmState::Running))
        }
        Request::Powerdown => match vm.power_button() {
            Ok(()) => ok(Reply::Empty(EmptyReply {})),
            Err(e) => error(format!("cannot press the power button: {e}")),
        },
        Request::Stop => {
            shared.ending.store(true, Ordering::SeqCst);
            // Sent by the client thread once this reply is written (see serve_client).
            *lock(&shared.after_reply) = Some(VmEvent::PowerOff);
            ok(state(VmmState::Stopping))
        }
        Request::Reset => {
            let _ = vm.event_sender().send(VmEvent::Reset);
            ok(Reply::Empty(EmptyReply {}))
        }
        Request::Stats => match serde_json::to_value(vm.stats()) {
            Ok(stats) => ok(Reply::Stats(StatsReply { stats })),
            Err(e) => error(e),
        },
        Request::Save { dir } => match vm.save(&dir) {
            Ok(()) => {
                shared.ending.store(true, Ordering::SeqCst);
                *lock(&shared.after_reply) = Some(VmEvent::PowerOff);
                ok(Reply::Saved(SavedReply {
                    saved: dir,
                    state: VmmState::Stopping,
                }))
            }
            Err(e) => {
                vm.resume();
                error(e)
            }
        },
        Request::AddDisk {
            id,
            path,
            read_only,
            serial,
        } => {
            let Some(fd) = fd else {
                return Some(error(
                    "add_disk: the image's descriptor must come with the request",
                ));
            };
            let kept = match fd.try_clone() {
                Ok(k) => k,
                Err(e) => return Some(error(format!("add_disk: {e}"))),
            };
            match vm.add_disk(super::hotplug::DiskRequest {
                file: std::fs::File::from(fd),
                read_only,
                serial,
                id,
                path,
            }) {
                Ok(a) => {
                    lock(&shared.hot_added).insert(a.id.clone(), kept);
                    device_reply(a)
                }
                Err(e) => hotplug_error(e),
            }
        }
        Request::AddNet { id, tap, mac } => {
            let Some(fd) = fd else {
                return Some(error(
                    "add_net: the tap's descriptor must come with the request",
                ));
            };
            let kept = match fd.try_clone() {
                Ok(k) => k,
                Err(e) => return Some(error(format!("add_net: {e}"))),
            };
            match vm.add_net(super::hotplug::NetRequest {
                tap_fd: fd,
                tap,
                mac,
                id,
            }) {
                Ok(a) => {
                    lock(&shared.hot_added).insert(a.id.clone(), kept);
                    device_reply(a)
                }
                Err(e) => hotplug_error(e),
            }
        }
        Request::RemoveDevice { id, timeout_s } => {
            let timeout = match timeout_s {
                None => super::hotplug::DEFAULT_EJECT_TIMEOUT,
                Some(s) if (1..=super::hotplug::MAX_EJECT_TIMEOUT_S).contains(&s) => {
                    Duration::from_secs(s)
                }
                Some(_) => {
                    return Some(hotplug_error(super::hotplug::HotplugError::Invalid(
                        format!("timeout_s is 1 to {}", super::hotplug::MAX_EJECT_TIMEOUT_S),
                    )));
                }
            };
            match vm.remove_device(&id, timeout) {
                Ok(slot) => {
                    lock(&shared.hot_added).remove(&id);
                    ok(Reply::Device(DeviceReply {
                        id,
                        slot,
                        mac: None,
                    }))
                }
                Err(e) => hotplug_error(e),
            }
        }
        Request::ResizeDisk { id } => match vm.resize_disk(&id) {
            Ok(r) => ok(Reply::Resized(ResizedReply {
                id,
                capacity: r.new,
                previous: r.old,
            })),
            Err(e) => hotplug_error(e),
        },
        Request::Console => return None,
    })
}

fn serve_client(shared: Arc<Shared>, stream: UnixStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = FdReader::new(read_half);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line, 64 * 1024) {
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
        let fd = reader.take_fd();
        reader.drop_fds();
        match handle(&shared, trimmed, fd) {
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
                    .write_all(ok(Reply::Console(ConsoleReply { console: true })).as_bytes())
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
fn console_mode(shared: &Shared, mut reader: FdReader, mut writer: UnixStream) {
    let (backlog, rx, subscriber) = shared.console.subscribe();
    let out = super::vm::thread("yunhe-console").spawn(move || {
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

/// Gives each saved NIC the tap the spawner hands over for it now: the one with the same MAC
/// address (hot-added and removed NICs can leave the saved order, which follows the PCI slots,
/// different from the spawner's), else the one at the same position.
fn adopt_taps(saved: &mut [NetConfig], now: &[NetConfig]) {
    let mac_of = |n: &NetConfig| n.mac.as_deref().and_then(super::parse_mac);
    let mut taken = vec![false; now.len()];
    let mut pending = Vec::new();
    for (i, s) in saved.iter_mut().enumerate() {
        let found = mac_of(s).and_then(|m| {
            now.iter()
                .enumerate()
                .find(|(j, n)| !taken[*j] && mac_of(n) == Some(m))
                .map(|(j, _)| j)
        });
        match found {
            Some(j) => {
                taken[j] = true;
                s.fd = now[j].fd;
                s.tap = now[j].tap.clone();
            }
            None => pending.push(i),
        }
    }
    for i in pending {
        let same_place = (i < now.len() && !taken[i]).then_some(i);
        if let Some(j) = same_place.or_else(|| (0..now.len()).find(|j| !taken[*j])) {
            taken[j] = true;
            saved[i].fd = now[j].fd;
            saved[i].tap = now[j].tap.clone();
        }
    }
}

/// `config` with each descriptor the spec handed over replaced by a fresh duplicate: a boot's
/// devices own (and close) their copies, and the originals stay open for the VMM's life, so a
/// reboot (which builds the devices again) finds its disks and taps open. Without this the
/// second build found the first one's closed descriptor (or another file under its number).
fn boot_config(config: &VmConfig) -> VmConfig {
    let dup = |fd: Option<i32>| {
        fd.map(|fd| {
            // SAFETY: F_DUPFD_CLOEXEC only makes a new descriptor for the same file; `fd` is
            // one the spec handed over, which nothing closes while the VMM runs.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if copy >= 0 { copy } else { fd }
        })
    };
    let mut c = config.clone();
    for d in &mut c.disks {
        d.fd = dup(d.fd);
    }
    for n in &mut c.nets {
        n.fd = dup(n.fd);
    }
    c
}

/// Each descriptor `config` hands over, by the name its device gets when `config` is built:
/// the name in `placement` (a restore: the saved bus, disks then network cards), else the
/// device's id, else the factory's `disk<N>` / `net<N>`.
fn descriptors_by_name(
    config: &VmConfig,
    placement: Option<&[(String, u8)]>,
) -> HashMap<String, RawFd> {
    let saved_name = |k: usize| placement.and_then(|p| p.get(k)).map(|(n, _)| n.clone());
    let disks = config.disks.iter().enumerate().map(|(i, d)| {
        let name = (d.id.clone()).unwrap_or_else(|| format!("disk{i}"));
        (saved_name(i).unwrap_or(name), d.fd)
    });
    let nets = config.nets.iter().enumerate().map(|(i, n)| {
        let name = (n.id.clone()).unwrap_or_else(|| format!("net{i}"));
        (saved_name(config.disks.len() + i).unwrap_or(name), n.fd)
    });
    disks
        .chain(nets)
        .filter_map(|(name, fd)| fd.map(|fd| (name, fd)))
        .collect()
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
                // The saved NICs' tap descriptors were the old process's:
                // the spawner hands this one the same taps anew.
                adopt_taps(&mut c.nets, &vm.nets);
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
    // Whether guests may use POPCNT/XSAVE here: asked once, before the jail and the
    // seccomp filters (the builder then reuses the answer).
    let _ = super::cpu_probe::host_lacks_instructions();
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
        hot_added: Mutex::new(HashMap::new()),
    });
    {
        let shared = shared.clone();
        super::vm::thread("yunhe-control")
            .spawn(move || {
                if let Err(e) = super::seccomp::install(super::seccomp::ThreadKind::Control) {
                    eprintln!("yunhe vmm: {e}");
                    return;
                }
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    let _ = super::vm::thread("yunhe-client")
                        .spawn(move || serve_client(shared, stream));
                }
            })
            .map_err(|e| ControlError::Listen("control thread".into(), e))?;
    }
    // The descriptors the spec handed over, by the name each device gets on the first boot:
    // a reboot builds the devices still on the bus from them (and the hot-added ones from
    // `Shared::hot_added`).
    let handed_over_by_name = descriptors_by_name(
        &config,
        restore.as_ref().map(|(_, st)| st.placement.as_slice()),
    );
    // What the next boot builds: the spec (or the saved state) first, then after each reset
    // the devices as the bus had them (a guest reboot keeps hot-added devices, as on a PC).
    let mut next_boot = config.clone();
    let code = loop {
        // Only the first boot resumes the saved state; a reboot starts afresh.
        let from = if *lock(&shared.boots) == 0 {
            restore.as_ref().map(|(d, st)| (d.as_path(), st))
        } else {
            None
        };
        let vm = match Vm::new(
            &boot_config(&next_boot),
            console.clone(),
            super::virtio_devices,
            start,
            from,
        )
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
        let event = vm.wait_settled();
        vm.stop();
        match event {
            VmEvent::PowerOff => break ExitCode::SUCCESS,
            VmEvent::Reset if spec.no_reboot || shared.ending.load(Ordering::SeqCst) => {
                break ExitCode::SUCCESS;
            }
            VmEvent::Reset => {
                let mut descriptors = handed_over_by_name.clone();
                for (name, fd) in lock(&shared.hot_added).iter() {
                    descriptors.insert(name.clone(), fd.as_raw_fd());
                }
                next_boot = vm.reboot_config(&descriptors);
                // The old guest's RAM goes before the next boot maps its own: both at once
                // need twice the guest's memory, over the jail's memory.max (RAM + 64 MiB)
                // once a guest has touched all of its RAM (docs/vmm.md, "Reset").
                *lock(&shared.current) = None;
                super::vm::release(vm);
                continue;
            }
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

    /// A restore gives each saved NIC the tap of the same MAC, whatever the order.
    #[test]
    fn restored_nics_adopt_the_tap_of_their_mac() {
        let net = |tap: &str, mac: Option<&str>, fd: Option<i32>| NetConfig {
            tap: tap.into(),
            mac: mac.map(str::to_string),
            fd,
            id: None,
        };
        let mut saved = vec![
            net("old-c", Some("fa:16:3e:00:00:0c"), None),
            net("old-b", Some("fa:16:3e:00:00:0b"), None),
            net("old-x", None, None),
        ];
        let now = vec![
            net("tap-b", Some("FA:16:3E:00:00:0B"), Some(10)),
            net("tap-c", Some("fa:16:3e:00:00:0c"), Some(11)),
            net("tap-x", Some("fa:16:3e:00:00:0d"), Some(12)),
        ];
        adopt_taps(&mut saved, &now);
        let got: Vec<_> = saved.iter().map(|n| (n.tap.as_str(), n.fd)).collect();
        assert_eq!(
            got,
            [
                ("tap-c", Some(11)),
                ("tap-b", Some(10)),
                ("tap-x", Some(12))
            ]
        );
    }

    /// Every boot builds its devices on duplicates: the originals stay open.
    #[test]
    fn each_boot_gets_duplicates_of_the_handed_over_descriptors() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let file = std::fs::File::open("/proc/self/exe").expect("a file");
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().expect("pair");
        let raw_tap = std::os::fd::OwnedFd::from(a).into_raw_fd();
        let mut vm: VmConfig = serde_json::from_str(
            r#"{"boot":{"type":"probe"},"memory_mib":64,"cpus":1,"disks":[],"nets":[],"rng":false}"#,
        )
        .expect("config");
        vm.nets.push(NetConfig {
            tap: "t".into(),
            mac: None,
            fd: Some(raw_tap),
            id: None,
        });
        vm.disks.push(crate::vmm::vmm_config::DiskConfig {
            path: "/proc/self/exe".into(),
            read_only: true,
            serial: None,
            fd: Some(file.as_raw_fd()),
            id: None,
        });
        for _ in 0..2 {
            let boot = boot_config(&vm);
            for (copy, original) in [
                (boot.nets[0].fd, raw_tap),
                (boot.disks[0].fd, file.as_raw_fd()),
            ] {
                let copy = copy.expect("a descriptor");
                assert_ne!(copy, original);
                // SAFETY: `copy` is the duplicate boot_config made for this test; closed once.
                drop(unsafe {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy)
                });
            }
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            let open = unsafe { libc::fcntl(raw_tap, libc::F_GETFD) } >= 0;
            assert!(open, "the original stays open");
        }
        // SAFETY: the test made `raw_tap` above and closes it once, here.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw_tap) });
    }

    /// The hotplug requests and replies compute will send and read (docs/vmm.md).
    #[test]
    fn hotplug_wire_format() {
        let line = |r: &Request| serde_json::to_string(r).expect("request");
        assert_eq!(
            line(&Request::AddDisk {
                id: Some("vol1".into()),
                path: None,
                read_only: true,
                serial: None
            }),
            r#"{"cmd":"add_disk","id":"vol1","read_only":true}"#
        );
        assert_eq!(
            line(&Request::RemoveDevice {
                id: "nic1".into(),
                timeout_s: Some(30)
            }),
            r#"{"cmd":"remove_device","id":"nic1","timeout_s":30}"#
        );
        assert!(matches!(
            serde_json::from_str::<Request>(r#"{"cmd":"add_net","tap":"tap0"}"#),
            Ok(Request::AddNet {
                tap: Some(_),
                id: None,
                mac: None
            })
        ));
        let reply = encode_reply(Ok(Reply::Device(DeviceReply {
            id: "nic1".into(),
            slot: 4,
            mac: Some("52:54:00:00:00:01".into()),
        })));
        assert_eq!(
            reply,
            "{\"id\":\"nic1\",\"mac\":\"52:54:00:00:00:01\",\"ok\":true,\"slot\":4}\n"
        );
        let back: DeviceReply = decode_reply(&reply).expect("device reply");
        assert_eq!(back.slot, 4);
        let refused = hotplug_error(super::super::hotplug::HotplugError::NoFreeSlot);
        assert_eq!(refusal_kind(&refused).as_deref(), Some("no_free_slot"));
        assert!(matches!(
            decode_reply::<DeviceReply>(&refused),
            Err(ReplyError::Refused(_))
        ));
        assert_eq!(refusal_kind(&reply), None);
    }

    /// `resize_disk` carries only the disk's id (the VMM reads the size from the image) and
    /// answers both capacities in bytes.
    #[test]
    fn resize_disk_wire_format() {
        let line =
            serde_json::to_string(&Request::ResizeDisk { id: "vol1".into() }).expect("request");
        assert_eq!(line, r#"{"cmd":"resize_disk","id":"vol1"}"#);
        // A size from the caller has no field to land in: only the image counts.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"resize_disk","id":"d","size":1}"#).ok(),
            Some(Request::ResizeDisk { id: "d".into() })
        );
        let reply = encode_reply(Ok(Reply::Resized(ResizedReply {
            id: "vol1".into(),
            capacity: 2 << 30,
            previous: 1 << 30,
        })));
        assert_eq!(
            reply,
            "{\"capacity\":2147483648,\"id\":\"vol1\",\"ok\":true,\"previous\":1073741824}\n"
        );
        let back: ResizedReply = decode_reply(&reply).expect("resized reply");
        assert_eq!(back.capacity, 2 << 30);
        let refused = hotplug_error(super::super::hotplug::HotplugError::Invalid(
            "the image shrank".into(),
        ));
        assert_eq!(refusal_kind(&refused).as_deref(), Some("invalid"));
    }

    /// The lines are those the VMMs of earlier builds send and expect: a
    /// restarted serve talks to VMMs that outlived it.
    #[test]
    fn the_wire_format_is_unchanged() {
        let line = |r: &Request| serde_json::to_string(r).expect("request");
        assert_eq!(line(&Request::Status), r#"{"cmd":"status"}"#);
        assert_eq!(line(&Request::Powerdown), r#"{"cmd":"powerdown"}"#);
        assert_eq!(
            line(&Request::Save {
                dir: "/s/saved".into()
            }),
            r#"{"cmd":"save","dir":"/s/saved"}"#
        );
        assert_eq!(
            encode_reply(Ok(state(VmmState::Paused))),
            "{\"ok\":true,\"state\":\"paused\"}\n"
        );
        assert_eq!(
            encode_reply(Ok(Reply::Empty(EmptyReply {}))),
            "{\"ok\":true}\n"
        );
        assert_eq!(
            encode_reply(Err("the VM is not running".into())),
            "{\"error\":\"the VM is not running\",\"ok\":false}\n"
        );
        assert_eq!(
            encode_reply(Ok(Reply::Saved(SavedReply {
                saved: "/d".into(),
                state: VmmState::Stopping
            }))),
            "{\"ok\":true,\"saved\":\"/d\",\"state\":\"stopping\"}\n"
        );
        // A status of a VM still starting has no uptime; one whose `vm` this
        // build cannot read still counts.
        let st: StatusReply = decode_reply(
            r#"{"boots":0,"ok":true,"pid":7,"state":"starting","vm":{"boot":{"type":"probe"}}}"#,
        )
        .expect("status");
        assert_eq!(
            (st.state, st.pid, st.uptime_s),
            (VmmState::Starting, 7, None)
        );
        assert_eq!(st.vm.map(|v| v.memory_mib), Some(128));
        let st: StatusReply = decode_reply(
            r#"{"boots":1,"console_clients":0,"ok":true,"pid":9,"state":"paused","uptime_s":1.5,"vm":{"what":1}}"#,
        )
        .expect("status");
        assert_eq!(st.state, VmmState::Paused);
        assert!(st.vm.is_none());
        assert_eq!(
            decode_reply::<EmptyReply>(r#"{"error":"no","ok":false}"#).err(),
            Some(ReplyError::Refused("no".into()))
        );
        assert_eq!(
            decode_reply::<EmptyReply>(r#"{"ok":false}"#).err(),
            Some(ReplyError::Refused("refused".into()))
        );
        assert!(matches!(
            decode_reply::<StateReply>(r#"{"ok":true}"#),
            Err(ReplyError::Malformed(_))
        ));
    }
}
