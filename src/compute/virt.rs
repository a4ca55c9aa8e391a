//! The compute driver: turns a server into files on disk and a `yunhe vmm`
//! process, and talks to that process over its control socket.
//!
//! Each server owns `<state>/instances/<id>/`:
//!
//! | file | what |
//! | --- | --- |
//! | `disk` | root disk: a reflink or sparse copy of the image, grown to the flavor's size (none for a volume-backed server: its root disk is the boot volume's file) |
//! | `config.iso` | config drive (ISO 9660, label `config-2`) |
//! | `kernel`, `ramdisk` | the boot kernel and initrd (hard links to the Glance data) |
//! | `spec.json` | the VMM spec (docs/vmm.md) |
//! | `console.log` | serial output, written by the VMM |
//! | `vmm.log` | the VMM's own stderr |
//! | `saved/` | memory and device state while suspended |
//!
//! The VMM's control socket is `/run/yunhe/<state dir hash>/<id>.sock` (see
//! `sockets_dir`). The VMM outlives the control plane (it calls `setsid`); a restarted
//! control plane finds it again through the socket. Exits of VMMs this
//! process spawned are reported on a channel; the others are noticed by
//! polling (`is_alive`).
//!
//! The driver's parts: this file holds the `Virt` state and bookkeeping, the control-socket
//! calls (commands, console, hotplug) and the `ComputeDriver` impl; `files.rs` the instance
//! directory (boot files, root disk, rescue files, console log); `spec.rs` the VMM spec built
//! from a server; `process.rs` the VMM process (jail, spawn, exit watch, stop, save).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::db::servers::{Server, ServerPort, ServerVolume};
use crate::vmm::control::{
    ConsoleReply, DeviceReply, EmptyReply, Request, ResizedReply, StateReply, StatsReply,
    StatusReply, decode_reply, refusal_kind,
};

use super::driver::{
    BootFiles, ComputeDriver, ConsoleStream, ControlFailure, DriverError, DriverFuture,
    DriverResult, VmmExit, nic_device_id,
};

mod files;
mod process;
mod spec;
mod vfat;

pub use process::sockets_dir;

use files::sweep_kernel_cache;
use process::pid_is_vmm_of;

/// How long a NIC's removal waits for the guest's eject (Linux's acpiphp takes well under a
/// second; a guest without it never ejects).
const EJECT_WAIT_S: u64 = 30;
/// The longest reply line read from a VMM.
const MAX_REPLY: u64 = 64 * 1024;

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DriverError {
    let what = what.into();
    move |source| DriverError::Io { what, source }
}

/// The driver, one per control plane.
pub struct Virt {
    instances_dir: PathBuf,
    /// Unpacked kernels (vmm/unpack.rs), hard-linked into instance directories.
    kernel_cache_dir: PathBuf,
    /// Control sockets live here, not in the instance directory: a unix
    /// socket path is limited to 107 bytes, and state directories can be long.
    sockets_dir: PathBuf,
    exe: PathBuf,
    /// This driver, for the tasks that wait for its VMMs' exits.
    me: std::sync::Weak<Virt>,
    /// Whether VMMs are confined (`--no-jail` not given) when serve is root.
    jail_vmms: bool,
    /// Boot the uncompressed vmlinux inside bzImage kernels.
    unpack_kernels: bool,
    /// Servers whose VMM exit we are causing (stop, delete, suspend, ...).
    expected_exits: Mutex<HashSet<String>>,
    /// Pids of the VMMs we know about (spawned or found again).
    pids: Mutex<HashMap<String, i32>>,
    /// Servers whose VMM is our child: its exit arrives on the channel.
    children: Mutex<HashSet<String>>,
    exits: mpsc::UnboundedSender<VmmExit>,
    /// Uids of the jailed VMMs this process started (docs/vmm.md, "The jail").
    jail_uids: Mutex<HashMap<String, u32>>,
    /// For each server, the exit of the last VMM this process started: set
    /// once the VMM has exited and its jail's leftovers are removed.
    exited: Mutex<HashMap<String, ExitWatch>>,
    /// The network dataplane (`serve --dataplane`): servers' NICs get their
    /// ports' taps from it; without it a server has no NIC.
    dataplane: std::sync::OnceLock<Arc<crate::dataplane::Dataplane>>,
}

/// Set to the VMM's exit (its code, None when killed by a signal) once it is
/// gone and cleaned up after.
type ExitWatch = tokio::sync::watch::Receiver<Option<Option<i32>>>;

impl Virt {
    /// A driver keeping instances below `state_dir/instances`; the receiver
    /// gets the exits of the VMMs it spawns.
    pub fn new(
        state_dir: &Path,
        jail_vmms: bool,
        unpack_kernels: bool,
    ) -> (Arc<Virt>, mpsc::UnboundedReceiver<VmmExit>) {
        // Cgroups of VMMs that were killed with an earlier serve.
        let swept = crate::vmm::jail::sweep_empty_cgroups(std::time::Duration::from_secs(60));
        if swept > 0 {
            tracing::info!(swept, "removed the empty cgroups of VMMs that are gone");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        (
            Arc::new_cyclic(|me| Virt {
                me: me.clone(),
                jail_vmms,
                unpack_kernels,
                instances_dir: state_dir.join("instances"),
                kernel_cache_dir: sweep_kernel_cache(&state_dir.join("kernel-cache")),
                sockets_dir: sockets_dir(state_dir),
                exe,
                expected_exits: Mutex::new(HashSet::new()),
                pids: Mutex::new(HashMap::new()),
                children: Mutex::new(HashSet::new()),
                exits: tx,
                jail_uids: Mutex::new(HashMap::new()),
                exited: Mutex::new(HashMap::new()),
                dataplane: std::sync::OnceLock::new(),
            }),
            rx,
        )
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.instances_dir.join(id)
    }

    /// Gives servers' VMMs NICs on the dataplane's taps (once, at start-up).
    pub fn set_dataplane(&self, dataplane: Arc<crate::dataplane::Dataplane>) {
        let _ = self.dataplane.set(dataplane);
    }

    pub fn socket(&self, id: &str) -> PathBuf {
        self.sockets_dir.join(format!("{id}.sock"))
    }

    pub fn disk_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("disk")
    }

    fn saved_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("saved")
    }

    pub fn has_saved_state(&self, id: &str) -> bool {
        self.saved_dir(id).join("state.json").exists()
    }

    /// Marks the next exit of this server's VMM as one we caused.
    pub fn expect_exit(&self, id: &str) {
        self.expected_exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
    }

    /// True (once) when the exit of this server's VMM was caused by us.
    pub fn take_expected_exit(&self, id: &str) -> bool {
        self.expected_exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// True when the server's VMM is this process's child (its exit will be reported).
    pub fn is_child(&self, id: &str) -> bool {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    pub fn known_pid(&self, id: &str) -> Option<i32> {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn set_pid(&self, id: &str, pid: Option<i32>) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        match pid {
            Some(p) => pids.insert(id.to_string(), p),
            None => pids.remove(id),
        };
    }

    // ------------------------------------------------------------ control socket

    /// Sends one command on the server's control socket and returns its
    /// reply, read as the reply type `T` of that command.
    async fn call<T: DeserializeOwned>(&self, id: &str, request: &Request) -> DriverResult<T> {
        let socket = self.socket(id);
        let exchange = async {
            let stream = UnixStream::connect(&socket)
                .await
                .map_err(ControlFailure::Connect)?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_string(request)
                .map_err(|e| ControlFailure::Io(std::io::Error::other(e)))?;
            line.push('\n');
            write
                .write_all(line.as_bytes())
                .await
                .map_err(ControlFailure::Io)?;
            let mut reader = BufReader::new(read);
            let mut reply = String::new();
            reader
                .read_line(&mut reply)
                .await
                .map_err(ControlFailure::Io)?;
            Ok::<T, ControlFailure>(decode_reply(&reply)?)
        };
        match tokio::time::timeout(Duration::from_secs(60), exchange).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ControlFailure::TimedOut.into()),
        }
    }

    /// Parks the VM's vCPUs.
    pub async fn pause(&self, id: &str) -> DriverResult<()> {
        self.call::<StateReply>(id, &Request::Pause).await.map(drop)
    }

    /// Lets the VM's vCPUs run again.
    pub async fn resume(&self, id: &str) -> DriverResult<()> {
        self.call::<StateReply>(id, &Request::Resume)
            .await
            .map(drop)
    }

    /// Resets the VM (a hard reboot inside the same VMM).
    pub async fn reset(&self, id: &str) -> DriverResult<()> {
        self.call::<EmptyReply>(id, &Request::Reset).await.map(drop)
    }

    /// The VM's counters (`VmStats`).
    pub async fn stats(&self, id: &str) -> DriverResult<serde_json::Value> {
        Ok(self.call::<StatsReply>(id, &Request::Stats).await?.stats)
    }

    /// Opens a console connection (serial both ways) to the server's VMM.
    pub async fn console_stream(&self, id: &str) -> DriverResult<ConsoleStream> {
        let stream = UnixStream::connect(self.socket(id))
            .await
            .map_err(ControlFailure::Connect)?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(&Request::Console)
            .map_err(|e| ControlFailure::Io(std::io::Error::other(e)))?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .map_err(ControlFailure::Io)?;
        let mut reader = BufReader::new(read);
        let mut reply = String::new();
        reader
            .read_line(&mut reply)
            .await
            .map_err(ControlFailure::Io)?;
        if decode_reply::<ConsoleReply>(&reply).is_err() {
            return Err(ControlFailure::ConsoleRefused(reply.trim().to_string()).into());
        }
        Ok((Box::new(reader), Box::new(write)))
    }

    /// The VMM's `status`, or None when nothing answers on the socket.
    pub async fn status(&self, id: &str) -> Option<StatusReply> {
        let reply = self.call::<StatusReply>(id, &Request::Status).await.ok()?;
        if let Ok(pid) = i32::try_from(reply.pid) {
            self.set_pid(id, Some(pid));
        }
        Some(reply)
    }

    // ------------------------------------------------------------ hotplug

    /// Sends one hotplug request, with `fd` passed along (SCM_RIGHTS), and returns the
    /// VMM's reply line as it came (the caller reads its refusal kind).
    async fn hotplug_call(
        &self,
        id: &str,
        request: Request,
        fd: Option<std::os::fd::OwnedFd>,
        wait: Duration,
    ) -> DriverResult<String> {
        use std::io::{BufRead, Write};
        let socket = self.socket(id);
        let exchange = move || -> Result<String, ControlFailure> {
            let stream = std::os::unix::net::UnixStream::connect(&socket)
                .map_err(ControlFailure::Connect)?;
            stream
                .set_read_timeout(Some(wait))
                .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(10))))
                .map_err(ControlFailure::Io)?;
            let mut line = serde_json::to_string(&request)
                .map_err(|e| ControlFailure::Io(std::io::Error::other(e)))?;
            line.push('\n');
            match &fd {
                Some(fd) => crate::vmm::fdpass::send_with_fd(&stream, line.as_bytes(), fd.as_fd()),
                None => (&stream).write_all(line.as_bytes()),
            }
            .map_err(ControlFailure::Io)?;
            // The descriptor is the VMM's now (or lost with the connection).
            drop(fd);
            let mut reply = String::new();
            std::io::BufReader::new((&stream).take(MAX_REPLY))
                .read_line(&mut reply)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        ControlFailure::TimedOut
                    }
                    _ => ControlFailure::Io(e),
                })?;
            Ok(reply)
        };
        Ok(tokio::task::spawn_blocking(exchange).await??)
    }

    /// Hot-adds the NIC of `port`: its tap from the dataplane, its MAC, named after it.
    pub async fn attach_nic(&self, id: &str, port: &ServerPort) -> DriverResult<()> {
        let dataplane = self
            .dataplane
            .get()
            .ok_or_else(|| DriverError::Device("no dataplane: a NIC has no tap".into()))?;
        let tap = dataplane
            .tap_for_port(&port.port_id)
            .await
            .map_err(|e| DriverError::Device(format!("port {}: {e}", port.port_id)))?;
        let request = Request::AddNet {
            id: Some(nic_device_id(&port.port_id)),
            tap: Some(crate::dataplane::desired::tap_name(&port.port_id)),
            mac: Some(port.mac.clone()),
        };
        let reply = self
            .hotplug_call(id, request, Some(tap), Duration::from_secs(30))
            .await?;
        // Already plugged: an attach retried after serve stopped half way.
        if refusal_kind(&reply).as_deref() == Some("duplicate_id") {
            return Ok(());
        }
        decode_reply::<DeviceReply>(&reply)
            .map(drop)
            .map_err(|e| ControlFailure::Reply(e).into())
    }

    /// Hot-adds a volume's disk: its backing file opened here, the descriptor passed.
    pub async fn attach_disk(&self, id: &str, volume: &ServerVolume) -> DriverResult<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!volume.read_only)
            .open(&volume.path)
            .map_err(io_error(format!("volume {}", volume.volume_id)))?;
        let request = Request::AddDisk {
            id: Some(super::driver::disk_device_id(&volume.volume_id)),
            path: Some(volume.path.clone()),
            read_only: volume.read_only,
            serial: Some(super::driver::disk_serial(&volume.volume_id)),
        };
        let reply = self
            .hotplug_call(id, request, Some(file.into()), Duration::from_secs(30))
            .await?;
        if refusal_kind(&reply).as_deref() == Some("duplicate_id") {
            return Ok(());
        }
        decode_reply::<DeviceReply>(&reply)
            .map(drop)
            .map_err(|e| ControlFailure::Reply(e).into())
    }

    /// A volume's file grew (Cinder's online extend): the VMM re-reads the size of its disk
    /// and tells the guest (`resize_disk`); returns the capacity in bytes.
    pub async fn resize_disk(&self, id: &str, volume: &ServerVolume) -> DriverResult<u64> {
        let request = Request::ResizeDisk {
            id: super::driver::disk_device_id(&volume.volume_id),
        };
        let reply = self
            .hotplug_call(id, request, None, Duration::from_secs(30))
            .await?;
        decode_reply::<ResizedReply>(&reply)
            .map(|r| r.capacity)
            .map_err(|e| ControlFailure::Reply(e).into())
    }

    /// Removes a volume's disk (the guest's eject, [`EJECT_WAIT_S`] at most).
    pub async fn detach_disk(&self, id: &str, volume: &ServerVolume) -> DriverResult<()> {
        let device = super::driver::disk_device_id(&volume.volume_id);
        let request = Request::RemoveDevice {
            id: device.clone(),
            timeout_s: Some(EJECT_WAIT_S),
        };
        let reply = self
            .hotplug_call(id, request, None, Duration::from_secs(EJECT_WAIT_S + 10))
            .await?;
        match refusal_kind(&reply).as_deref() {
            Some("unknown_id") => Ok(()),
            Some("eject_timeout") => Err(DriverError::EjectTimeout(device)),
            _ => decode_reply::<DeviceReply>(&reply)
                .map(drop)
                .map_err(|e| ControlFailure::Reply(e).into()),
        }
    }

    /// Removes the NIC of `port`: by its name, or (a VMM started by an older serve, whose
    /// NICs are `net<N>` in port order) by its position.
    pub async fn detach_nic(&self, id: &str, port: &ServerPort, index: usize) -> DriverResult<()> {
        for device in [nic_device_id(&port.port_id), format!("net{index}")] {
            let request = Request::RemoveDevice {
                id: device.clone(),
                timeout_s: Some(EJECT_WAIT_S),
            };
            let reply = self
                .hotplug_call(id, request, None, Duration::from_secs(EJECT_WAIT_S + 10))
                .await?;
            match refusal_kind(&reply).as_deref() {
                Some("unknown_id") => continue,
                Some("eject_timeout") => return Err(DriverError::EjectTimeout(device)),
                _ => {
                    return decode_reply::<DeviceReply>(&reply)
                        .map(drop)
                        .map_err(|e| ControlFailure::Reply(e).into());
                }
            }
        }
        Ok(())
    }
}

impl ComputeDriver for Virt {
    fn prepare<'a>(
        &'a self,
        id: &'a str,
        boot: BootFiles,
        disk_gb: i64,
        config_drive: Option<Vec<(String, Vec<u8>)>>,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::prepare(self, id, boot, disk_gb, config_drive))
    }

    fn prepare_rescue<'a>(
        &'a self,
        id: &'a str,
        boot: BootFiles,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::prepare_rescue(self, id, boot))
    }

    fn drop_rescue<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(Virt::drop_rescue(self, id))
    }

    fn drop_local_disks<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(Virt::drop_local_disks(self, id))
    }

    fn grow_disk<'a>(&'a self, id: &'a str, disk_gb: i64) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::grow_disk(self, id, disk_gb))
    }

    fn copy_disk<'a>(&'a self, id: &'a str, dest: PathBuf) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::copy_disk(self, id, dest))
    }

    fn destroy_files<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(Virt::destroy_files(self, id))
    }

    fn console_output<'a>(&'a self, id: &'a str, lines: Option<usize>) -> DriverFuture<'a, String> {
        Box::pin(Virt::console_output(self, id, lines))
    }

    fn log_tail(&self, id: &str) -> String {
        let log = std::fs::read_to_string(self.dir(id).join("vmm.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        tail.join(" / ")
    }

    fn has_saved_state(&self, id: &str) -> bool {
        Virt::has_saved_state(self, id)
    }

    fn drop_saved_state<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(Virt::drop_saved_state(self, id))
    }

    fn spawn<'a>(
        &'a self,
        server: &'a Server,
        restore: bool,
    ) -> DriverFuture<'a, DriverResult<i32>> {
        Box::pin(Virt::spawn(self, server, restore))
    }

    fn stop<'a>(&'a self, id: &'a str, clean_timeout: Option<Duration>) -> DriverFuture<'a, ()> {
        Box::pin(Virt::stop(self, id, clean_timeout))
    }

    fn pause<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::pause(self, id))
    }

    fn resume<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::resume(self, id))
    }

    fn reset<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::reset(self, id))
    }

    fn save<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::save(self, id))
    }

    fn status<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Option<StatusReply>> {
        Box::pin(Virt::status(self, id))
    }

    fn stats<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<serde_json::Value>> {
        Box::pin(Virt::stats(self, id))
    }

    fn console_stream<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<ConsoleStream>> {
        Box::pin(Virt::console_stream(self, id))
    }

    fn attach_nic<'a>(
        &'a self,
        id: &'a str,
        port: &'a ServerPort,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::attach_nic(self, id, port))
    }

    fn detach_nic<'a>(
        &'a self,
        id: &'a str,
        port: &'a ServerPort,
        index: usize,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::detach_nic(self, id, port, index))
    }

    fn attach_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::attach_disk(self, id, volume))
    }

    fn detach_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(Virt::detach_disk(self, id, volume))
    }

    fn resize_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<u64>> {
        Box::pin(Virt::resize_disk(self, id, volume))
    }

    fn is_alive(&self, id: &str) -> bool {
        Virt::is_alive(self, id)
    }

    fn is_child(&self, id: &str) -> bool {
        Virt::is_child(self, id)
    }

    fn known_pid(&self, id: &str) -> Option<i32> {
        Virt::known_pid(self, id)
    }

    fn adopt_unknown_vm(&self, id: &str) -> Option<i32> {
        let pid = std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| pid_is_vmm_of(*pid, id))?;
        self.set_pid(id, Some(pid));
        Some(pid)
    }

    fn take_expected_exit(&self, id: &str) -> bool {
        Virt::take_expected_exit(self, id)
    }
}
