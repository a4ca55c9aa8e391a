//! The seam between compute and what runs its servers (Nova's
//! `virt/driver.py`): the lifecycle and the API handlers call a
//! [`ComputeDriver`] held in the compute state, never a VMM directly.
//!
//! `virt::Virt` implements it with one `yunhe vmm` process per server
//! (instance files on disk, the typed control protocol of vmm/control.rs);
//! `fake::FakeDriver` implements it in memory for the unit tests of the
//! lifecycle. Networking and volumes add their devices through this seam.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite};

use crate::db::servers::{Server, ServerPort, ServerVolume};
use crate::vmm::control::{ReplyError, StatusReply};

/// Errors of a compute driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A file of the instance could not be prepared.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The config drive could not be built.
    #[error("config drive: {0}")]
    ConfigDrive(#[from] super::configdrive::ConfigDriveError),
    /// The VMM did not start; the text is the end of its log.
    #[error("the VMM did not start: {0}")]
    SpawnFailed(String),
    /// The VMM's control socket did not answer or refused the command.
    #[error("VMM control: {0}")]
    Control(#[from] ControlFailure),
    /// A blocking task of the driver failed.
    #[error("VMM control: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A device for a hot-add could not be had (no dataplane, no tap).
    #[error("device: {0}")]
    Device(String),
    /// The guest did not give the device up in time (the removal stays asked for).
    #[error("the guest did not release device {0} in time")]
    EjectTimeout(String),
}

/// How a command on a VMM's control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlFailure {
    /// Nothing answers on the socket.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed mid-exchange.
    #[error("{0}")]
    Io(std::io::Error),
    /// The VMM refused, or its reply is not the protocol's.
    #[error("{0}")]
    Reply(#[from] ReplyError),
    /// No reply within the timeout.
    #[error("timed out")]
    TimedOut,
    /// The VMM would not switch the connection to its console.
    #[error("console refused: {0}")]
    ConsoleRefused(String),
}

pub type DriverResult<T> = Result<T, DriverError>;

/// A driver's future (boxed, so the trait can be held as `dyn`).
pub type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A VMM that ended: (server id, exit code or None when killed by a signal).
pub type VmmExit = (String, Option<i32>);

/// The two halves of a serial console connection.
pub type ConsoleStream = (
    Box<dyn AsyncBufRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
);

/// What a server boots: kernel, initrd and command line, resolved from its image.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// The kernel; None: the disk's own (disk boot, read by the VMM at every boot).
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    /// The image whose data becomes the root disk, if any (None: an empty disk).
    pub disk_image: Option<PathBuf>,
}

/// Runs servers. Every call names the server by id; calls on one server
/// are serialised by the caller (the lifecycle's per-server lock). Exits
/// the driver causes or notices are reported on the channel it was built with.
pub trait ComputeDriver: Send + Sync {
    // ------------------------------------------------------------ files

    /// Creates the instance's files: boot files, the root disk (grown to
    /// `disk_gb`), and the config drive when it holds files.
    fn prepare<'a>(
        &'a self,
        id: &'a str,
        boot: BootFiles,
        disk_gb: i64,
        config_drive: Option<Vec<(String, Vec<u8>)>>,
    ) -> DriverFuture<'a, DriverResult<()>>;

    /// Creates the rescue files (Nova's rescue): the rescue image's kernel,
    /// ramdisk and a fresh disk from its data, which a server with
    /// `rescue` set boots with its own root disk as the second disk.
    fn prepare_rescue<'a>(
        &'a self,
        id: &'a str,
        boot: BootFiles,
    ) -> DriverFuture<'a, DriverResult<()>>;

    /// Removes the rescue files (unrescue).
    fn drop_rescue<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()>;

    /// Removes the server's swap and ephemeral disk files (a rebuild without
    /// `preserve_ephemeral`): the next boot makes them blank again.
    fn drop_local_disks<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        let _ = id;
        Box::pin(async {})
    }

    /// Grows the root disk to `disk_gb` (never shrinks it).
    fn grow_disk<'a>(&'a self, id: &'a str, disk_gb: i64) -> DriverFuture<'a, DriverResult<()>>;

    /// Copies the root disk to `dest` (a snapshot).
    fn copy_disk<'a>(&'a self, id: &'a str, dest: PathBuf) -> DriverFuture<'a, DriverResult<()>>;

    /// Removes everything the server had on this host.
    fn destroy_files<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()>;

    /// The last `lines` lines of the serial console log (all it keeps with None).
    fn console_output<'a>(&'a self, id: &'a str, lines: Option<usize>) -> DriverFuture<'a, String>;

    /// The last lines of the VMM's own log, for a fault's text.
    fn log_tail(&self, id: &str) -> String;

    /// True when a suspend left the VM's state to resume from.
    fn has_saved_state(&self, id: &str) -> bool;

    /// Drops the saved state (after a resume, or when it is no longer wanted).
    fn drop_saved_state<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()>;

    // ------------------------------------------------------------ the VM

    /// Starts the server's VM (from its saved state with `restore`) and
    /// returns once it runs; the result is the VMM's pid.
    fn spawn<'a>(
        &'a self,
        server: &'a Server,
        restore: bool,
    ) -> DriverFuture<'a, DriverResult<i32>>;

    /// Stops the VM: with a timeout, the power button first and that long
    /// for the guest to power off; then a hard stop. Never fails: the VM is
    /// gone afterwards.
    fn stop<'a>(&'a self, id: &'a str, clean_timeout: Option<Duration>) -> DriverFuture<'a, ()>;

    /// Parks the VM's vCPUs.
    fn pause<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>>;

    /// Lets them run again.
    fn resume<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>>;

    /// Resets the VM (a hard reboot of a running VM).
    fn reset<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>>;

    /// Saves the whole VM (suspend); the VM ends. [`ComputeDriver::spawn`]
    /// with `restore` brings it back.
    fn save<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>>;

    /// The VM's status, or None when nothing answers for it.
    fn status<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Option<StatusReply>>;

    /// The VM's counters (vm.rs `VmStats`).
    fn stats<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<serde_json::Value>>;

    /// A serial console connection to the VM.
    fn console_stream<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<ConsoleStream>>;

    // ------------------------------------------------------------ hotplug

    /// Hot-adds the NIC of `port` (its tap, its MAC) to the server's running VM, named
    /// [`nic_device_id`] of the port. Returns once the VMM has plugged it (the guest
    /// notices it on its own).
    fn attach_nic<'a>(
        &'a self,
        id: &'a str,
        port: &'a ServerPort,
    ) -> DriverFuture<'a, DriverResult<()>>;

    /// Asks the guest to give up the NIC of `port` (at `index` in the server's ports, for
    /// a VM started before NICs were named after their ports) and waits for it. A NIC the
    /// VM does not have counts as removed.
    fn detach_nic<'a>(
        &'a self,
        id: &'a str,
        port: &'a ServerPort,
        index: usize,
    ) -> DriverFuture<'a, DriverResult<()>>;

    /// Hot-adds the volume's disk (its backing file, opened here and passed to the VMM)
    /// to the server's running VM, named [`disk_device_id`] of the volume.
    fn attach_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<()>>;

    /// Asks the guest to give up the volume's disk and waits for it. A disk the VM does
    /// not have counts as removed.
    fn detach_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<()>>;

    /// The volume's backing file grew (Cinder's online extend): the server's running VM
    /// re-reads its size and tells the guest. Returns the disk's capacity in bytes now.
    fn resize_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<u64>>;

    // ------------------------------------------------------------ monitoring

    /// True while the server's VM process exists.
    fn is_alive(&self, id: &str) -> bool;

    /// True when the VM's exit will be reported on the exit channel.
    fn is_child(&self, id: &str) -> bool;

    /// The pid of the VM's process, when the driver knows it.
    fn known_pid(&self, id: &str) -> Option<i32>;

    /// Looks for a process that is the server's VM though the driver does
    /// not know it (one a killed control plane was still starting, not yet
    /// answering on its socket); when there is one, the driver knows its pid
    /// from then on ([`ComputeDriver::stop`] ends it) and returns it.
    fn adopt_unknown_vm(&self, id: &str) -> Option<i32> {
        let _ = id;
        None
    }

    /// True (once) when the last exit of the server's VM was caused by the
    /// driver itself (stop, save): the monitor then leaves the server alone.
    fn take_expected_exit(&self, id: &str) -> bool;
}

/// The name a port's NIC has on the VM's bus (the VMM's device id, at most 32 of
/// `A-Z a-z 0-9 . _ -`): the port's id without its dashes.
pub fn nic_device_id(port_id: &str) -> String {
    port_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(crate::vmm::devices::factory::MAX_ID_LEN)
        .collect()
}

/// The name a volume's disk has on the VM's bus: `disk` and the volume's id without
/// its dashes, cut to 32 characters (`disk` first, so that the diagnostics count it
/// among the disks, and no boot disk's `disk<N>`).
pub fn disk_device_id(volume_id: &str) -> String {
    "disk"
        .chars()
        .chain(volume_id.chars().filter(|c| c.is_ascii_alphanumeric()))
        .take(crate::vmm::devices::factory::MAX_ID_LEN)
        .collect()
}

/// The serial a volume's disk shows the guest (as libvirt: the volume id, cut to
/// virtio-blk's 20 characters), so `/dev/disk/by-id/virtio-<serial>` finds it.
pub fn disk_serial(volume_id: &str) -> String {
    volume_id.chars().take(20).collect()
}
