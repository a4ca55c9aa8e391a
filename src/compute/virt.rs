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

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::db::servers::{Server, ServerPort, ServerVolume};
use crate::vmm::control::{
    ConsoleReply, DeviceReply, EmptyReply, Request, ResizedReply, SavedReply, StateReply,
    StatsReply, StatusReply, VmmSpec, VmmState, decode_reply, refusal_kind,
};
use crate::vmm::jail::JailSpec;
use crate::vmm::vmm_config::{BootSource, DiskConfig, NetConfig, VmConfig};

use super::driver::{
    BootFiles, ComputeDriver, ConsoleStream, ControlFailure, DriverError, DriverFuture,
    DriverResult, VmmExit, nic_device_id,
};

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

    // ------------------------------------------------------------ files

    /// Creates the instance directory: boot files, the root disk (grown to
    /// `disk_gb`), and the config drive when `config_drive` holds files.
    /// Runs on the blocking pool.
    pub async fn prepare(
        &self,
        id: &str,
        boot: BootFiles,
        disk_gb: i64,
        config_drive: Option<Vec<(String, Vec<u8>)>>,
    ) -> DriverResult<()> {
        let dir = self.dir(id);
        let kernel_cache = self.unpack_kernels.then(|| self.kernel_cache_dir.clone());
        tokio::task::spawn_blocking(move || -> DriverResult<()> {
            std::fs::create_dir_all(&dir).map_err(io_error(format!("{}", dir.display())))?;
            // No kernel file: the VMM boots the kernel the disk declares.
            place_boot_files(&boot, kernel_cache.as_deref(), &dir)?;
            make_root_disk(boot.disk_image.as_deref(), &dir.join("disk"), disk_gb)?;
            let iso = dir.join("config.iso");
            let _ = std::fs::remove_file(&iso);
            if let Some(files) = config_drive {
                super::configdrive::write_iso(&iso, &files)?;
            }
            Ok(())
        })
        .await?
    }

    /// Where a rescued server's boot files and rescue disk are.
    fn rescue_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("rescue")
    }

    /// Creates the rescue files in `<instance>/rescue/`: kernel, ramdisk and
    /// `disk` (a copy of the rescue image's data, when it has any).
    pub async fn prepare_rescue(&self, id: &str, boot: BootFiles) -> DriverResult<()> {
        let dir = self.rescue_dir(id);
        let kernel_cache = self.unpack_kernels.then(|| self.kernel_cache_dir.clone());
        tokio::task::spawn_blocking(move || -> DriverResult<()> {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(io_error(format!("{}", dir.display())))?;
            place_boot_files(&boot, kernel_cache.as_deref(), &dir)?;
            if boot.disk_image.is_some() {
                make_root_disk(boot.disk_image.as_deref(), &dir.join("disk"), 0)?;
            }
            Ok(())
        })
        .await?
    }

    /// Removes the rescue files.
    pub async fn drop_rescue(&self, id: &str) {
        let _ = tokio::fs::remove_dir_all(self.rescue_dir(id)).await;
    }

    /// Grows the root disk to `disk_gb` (never shrinks it).
    pub async fn grow_disk(&self, id: &str, disk_gb: i64) -> DriverResult<()> {
        let disk = self.disk_path(id);
        // A volume-backed server has no disk here (its root is a volume).
        if !disk.exists() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || grow(&disk, disk_gb)).await?
    }

    /// Copies the root disk to `dest` (a snapshot), as a reflink or sparse copy.
    pub async fn copy_disk(&self, id: &str, dest: PathBuf) -> DriverResult<()> {
        let disk = self.disk_path(id);
        tokio::task::spawn_blocking(move || clone_file(&disk, &dest)).await?
    }

    /// Removes everything the server had on disk.
    pub async fn destroy_files(&self, id: &str) {
        let dir = self.dir(id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        // A VMM killed with SIGKILL could not remove its socket.
        let _ = tokio::fs::remove_file(self.sockets_dir.join(format!("{id}.sock"))).await;
        let _ = tokio::fs::remove_dir(self.jail_root(id)).await;
        // A VMM found again after a restart of serve is not our child: its
        // cgroup was not removed when it exited.
        let cgroup = id.to_string();
        let _ = tokio::task::spawn_blocking(move || crate::vmm::jail::remove_cgroup(&cgroup)).await;
        self.exited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The last `lines` lines of the console (with None, all that the tail
    /// read holds): at most [`CONSOLE_OUTPUT_MAX`] bytes from the end of the
    /// log (and of its rotated copy when the log is shorter), as Nova's
    /// libvirt driver reads at most 100 KiB. Never reads more into memory.
    pub async fn console_output(&self, id: &str, lines: Option<usize>) -> String {
        let path = self.dir(id).join("console.log");
        let data = tokio::task::spawn_blocking(move || read_log_tail(&path, CONSOLE_OUTPUT_MAX))
            .await
            .unwrap_or_default();
        console_text(&data, lines)
    }

    // ------------------------------------------------------------ processes

    /// True when VMMs are confined: serve runs as root and `--no-jail` is not given.
    fn jailed(&self) -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !self.jail_vmms {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "VMMs run unconfined (no namespaces, uid, cgroup): {}",
                    if root {
                        "--no-jail was given"
                    } else {
                        "yunhe serve is not root"
                    }
                )
            });
        }
        root && self.jail_vmms
    }

    /// The empty directory a jailed VMM mounts its root on (in its own mount namespace).
    fn jail_root(&self, id: &str) -> PathBuf {
        self.sockets_dir.join(format!("{id}.root"))
    }

    /// The uid a jailed VMM of server `id` runs as (its gid is the same number).
    fn jail_uid(&self, id: &str) -> u32 {
        let mut uids = self.jail_uids.lock().unwrap_or_else(|e| e.into_inner());
        let taken = uids
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .map(|(_, uid)| *uid)
            .collect();
        let uid = crate::vmm::jail::pick_uid(id, &taken);
        uids.insert(id.to_string(), uid);
        uid
    }

    /// Removes what a jailed VMM leaves behind: its cgroup and mount point.
    fn remove_jail_leftovers(&self, id: &str) {
        crate::vmm::jail::remove_cgroup(id);
        let _ = std::fs::remove_dir(self.jail_root(id));
        self.jail_uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The VM's size as the spec gives it: (vCPUs, MiB of RAM).
    fn vm_size(server: &Server) -> (u8, u64) {
        let cpus = u8::try_from(server.flavor.vcpus.clamp(1, 64)).unwrap_or(1);
        let memory_mib = u64::try_from(server.flavor.ram.max(16)).unwrap_or(16);
        (cpus, memory_mib)
    }

    /// Whether the flavor asks for large pages (Nova's `hw:mem_page_size`: `large`, `any` or a
    /// size of 2 MiB or more); yunhe backs them with transparent huge pages, not hugetlbfs.
    fn huge_pages(server: &Server) -> bool {
        let Some(v) = server.flavor.extra_specs.get("hw:mem_page_size") else {
            return false;
        };
        let v = v.trim().to_ascii_lowercase();
        match v.as_str() {
            "large" | "any" => true,
            "small" => false,
            _ => {
                let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
                let unit = v[digits.len()..].trim();
                let kib = digits.parse::<u64>().unwrap_or(0)
                    * match unit {
                        "" | "k" | "kb" | "kib" => 1,
                        "m" | "mb" | "mib" => 1024,
                        "g" | "gb" | "gib" => 1024 * 1024,
                        _ => 0,
                    };
                kib >= 2048
            }
        }
    }

    /// The VMM's spec; `jail`: the uid of a jailed VMM and whether serve
    /// prepared its cgroup.
    fn spec(
        &self,
        server: &Server,
        restore: bool,
        jail: Option<(u32, bool)>,
        nets: Vec<NetConfig>,
        volumes: Vec<DiskConfig>,
    ) -> VmmSpec {
        let dir = self.dir(&server.id);
        let mut disks = Vec::new();
        // Rescued (Nova's rescue): the rescue image's kernel (or disk) boots,
        // its disk first and the server's own root disk second; with stable
        // device rescue the rescue disk comes last instead.
        let rescue = server
            .rescue
            .as_ref()
            .map(|r| (r, self.rescue_dir(&server.id)));
        let boot_dir = match &rescue {
            Some((_, rescue_dir)) => rescue_dir.clone(),
            None => dir.clone(),
        };
        let rescue_disk = rescue
            .as_ref()
            .map(|(r, rescue_dir)| (r.stable, rescue_dir.join("disk")))
            .filter(|(_, disk)| disk.exists())
            .map(|(stable, path)| {
                (
                    stable,
                    DiskConfig {
                        path,
                        read_only: false,
                        serial: Some("rescue".into()),
                        fd: None,
                        id: None,
                    },
                )
            });
        let mut boot_disk = 0;
        let mut stable_rescue_disk = None;
        match rescue_disk {
            Some((false, disk)) => disks.push(disk),
            Some((true, disk)) => stable_rescue_disk = Some(disk),
            None => {}
        }
        // A volume-backed server's root disk is its boot volume (the first
        // of `volumes`), in the place an image-backed server's disk has.
        let mut volumes = volumes.into_iter();
        if server.root_volume().is_some() {
            disks.extend(volumes.next());
        } else if dir.join("disk").exists() {
            let serial: String = server.id.chars().filter(|c| *c != '-').take(20).collect();
            disks.push(DiskConfig {
                path: dir.join("disk"),
                read_only: false,
                serial: Some(serial),
                fd: None,
                id: None,
            });
        }
        if dir.join("config.iso").exists() {
            disks.push(DiskConfig {
                path: dir.join("config.iso"),
                read_only: true,
                serial: Some("config-2".into()),
                fd: None,
                id: None,
            });
        }
        // Attached volumes, after the root disk and config drive.
        disks.extend(volumes);
        if let Some(disk) = stable_rescue_disk {
            boot_disk = disks.len();
            disks.push(disk);
        }
        let ramdisk = boot_dir.join("ramdisk");
        let kernel = boot_dir.join("kernel");
        let cmdline = match &rescue {
            Some((r, _)) => r.cmdline.clone(),
            None => server.cmdline.clone(),
        };
        let (cpus, memory_mib) = Self::vm_size(server);
        // Without a kernel file the disk boots its own kernel: the VMM reads
        // the root disk's boot configuration at every start, and the image's
        // os_command_line (if any) is appended to the disk's command line.
        let disk_boot = !kernel.exists() && !disks.is_empty();
        let vm = VmConfig {
            boot: if disk_boot {
                BootSource::Disk { disk: boot_disk }
            } else {
                BootSource::Kernel { path: kernel }
            },
            initrd: (!disk_boot && ramdisk.exists()).then_some(ramdisk),
            cmdline: if disk_boot {
                cmdline
            } else {
                Some(cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string()))
            },
            memory_mib,
            cpus,
            disks,
            nets,
            rng: true,
            console_log: Some(dir.join("console.log")),
            log_boot_timer: false,
            huge_pages: Self::huge_pages(server),
        };
        VmmSpec {
            vm: Some(vm),
            restore_from: restore.then(|| self.saved_dir(&server.id)),
            control_socket: self.socket(&server.id),
            no_reboot: false,
            jail: jail.map(|(uid, cgroup)| JailSpec {
                uid,
                gid: uid,
                root_mount: self.jail_root(&server.id),
                instance_dir: dir.clone(),
                cgroup: cgroup.then(|| server.id.clone()),
            }),
        }
    }

    /// Starts the server's VMM (from its saved state with `restore`) and
    /// waits until it answers on its socket. Returns the VMM's pid.
    pub async fn spawn(&self, server: &Server, restore: bool) -> DriverResult<i32> {
        let dir = self.dir(&server.id);
        // The previous VMM's exit task removes its cgroup, mount point and
        // uid, which this VMM is about to make again (a stop returns once the
        // process is gone, which can be before that removal): let it finish.
        let previous = self
            .exited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&server.id);
        if let Some(mut previous) = previous {
            let cleaned = previous.wait_for(Option::is_some);
            let _ = tokio::time::timeout(Duration::from_secs(5), cleaned).await;
        }
        // /run is a tmpfs: the directory may be gone after a host reboot.
        create_private_dir(&self.sockets_dir)
            .map_err(io_error(format!("{}", self.sockets_dir.display())))?;
        let jail_uid = self.jailed().then(|| self.jail_uid(&server.id));
        if let Some(uid) = jail_uid {
            // The files the VMM writes through a path after it dropped root.
            for disk in [dir.join("disk"), self.rescue_dir(&server.id).join("disk")] {
                if disk.exists() {
                    std::os::unix::fs::chown(&disk, Some(uid), Some(uid))
                        .map_err(io_error("handing the disk to the VMM's uid"))?;
                }
            }
        }
        // A jailed VMM's cgroup is made and limited before it starts: with
        // cgroup v2 it starts inside (no migration), with v1 it joins by
        // itself before it maps guest memory (jail.rs, join_cgroup).
        let cgroup = match jail_uid {
            Some(_) => {
                let (cpus, memory_mib) = Self::vm_size(server);
                let limits = crate::vmm::jail::CgroupLimits::for_vm(cpus, memory_mib);
                let name = server.id.clone();
                let prepared = tokio::task::spawn_blocking(move || {
                    crate::vmm::jail::prepare_cgroup(&name, limits)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match prepared {
                    Ok(cgroup) => Some(cgroup),
                    Err(e) => {
                        tracing::warn!(server = %server.id, "VMM without cgroup limits: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        let spec_path = dir.join("spec.json");
        // One NIC per port, in port order, each on its port's tap (the
        // descriptors stay open here until the VMM has inherited them).
        let (nets, _taps) = match self.dataplane.get() {
            Some(dp) => super::networking::nics(dp, server)
                .await
                .map_err(DriverError::SpawnFailed)?,
            None => (Vec::new(), Vec::new()),
        };
        // One disk per attached volume, each on a descriptor of its backing file opened
        // here (a jailed VMM cannot reach the volume directory by path).
        let (volumes, _volume_files) = volume_disks(server)?;
        let spec = self.spec(
            server,
            restore,
            jail_uid.map(|uid| (uid, cgroup.is_some())),
            nets,
            volumes,
        );
        let spec = serde_json::to_vec(&spec).map_err(|e| io_error("spec.json")(e.into()))?;
        tokio::fs::write(&spec_path, spec)
            .await
            .map_err(io_error("spec.json"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("vmm.log"))
            .map_err(io_error("vmm.log"))?;
        let null = std::fs::File::open("/dev/null").map_err(io_error("/dev/null"))?;
        // A jailed VMM is pid 1 of its own PID namespace.
        let spawned = crate::vmm::jail::spawn_vmm(
            &self.exe,
            &["vmm".as_ref(), "--spec".as_ref(), spec_path.as_os_str()],
            &null.into(),
            &log.try_clone().map_err(io_error("vmm.log"))?.into(),
            &log.into(),
            jail_uid.is_some(),
            cgroup
                .as_ref()
                .and_then(|c| c.v2_dir.as_ref())
                .map(|fd| fd.as_fd()),
        );
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if cgroup.is_some() {
                    let name = server.id.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || crate::vmm::jail::remove_cgroup(&name))
                            .await;
                }
                return Err(io_error("spawning the VMM")(e));
            }
        };
        drop(cgroup);
        if let Some(e) = &child.cgroup_refused {
            tracing::warn!(
                server = %server.id,
                "clone3 could not start the VMM in its cgroup ({e}); it joins by itself"
            );
        }
        let pid = child.pid;
        self.set_pid(&server.id, Some(pid));
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.id.clone());
        let (done_tx, mut done_rx) = tokio::sync::watch::channel(None::<Option<i32>>);
        self.exited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.id.clone(), done_rx.clone());
        let virt = self
            .me
            .upgrade()
            .ok_or_else(|| DriverError::SpawnFailed("the driver is shutting down".into()))?;
        let id = server.id.clone();
        tokio::spawn(async move {
            let code = crate::vmm::jail::wait_exit(child.pidfd)
                .await
                .unwrap_or(None);
            if jail_uid.is_some() {
                // The jailed VMM cannot reach its socket's host path to remove it.
                let _ = std::fs::remove_file(virt.socket(&id));
                let leftovers = virt.clone();
                let id = id.clone();
                let _ =
                    tokio::task::spawn_blocking(move || leftovers.remove_jail_leftovers(&id)).await;
            }
            let _ = done_tx.send(Some(code));
            if virt.known_pid(&id) == Some(pid) {
                virt.set_pid(&id, None);
                virt.children
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
            let _ = virt.exits.send((id, code));
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(code) = *done_rx.borrow_and_update() {
                let tail = log_tail(&dir.join("vmm.log"));
                return Err(DriverError::SpawnFailed(format!(
                    "exit {}: {tail}",
                    code.map(|c| c.to_string())
                        .unwrap_or_else(|| "by signal".into())
                )));
            }
            if let Ok(reply) = self.call::<StatusReply>(&server.id, &Request::Status).await
                && reply.state != VmmState::Starting
            {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(DriverError::SpawnFailed(
                    "no answer on the control socket within 30 s".into(),
                ));
            }
            tokio::select! {
                _ = done_rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(3)) => {}
            }
        }
    }

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

    /// True while the server's VMM process exists.
    pub fn is_alive(&self, id: &str) -> bool {
        match self.known_pid(id) {
            Some(pid) => pid_is_vmm_of(pid, id),
            None => false,
        }
    }

    /// Waits up to `within` for the VMM to exit; true when it did.
    async fn wait_exit(&self, id: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !self.is_alive(id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the VMM: with a timeout, first the ACPI power button and up to
    /// that long for the guest to power off; then a hard stop; then SIGKILL.
    pub async fn stop(&self, id: &str, clean_timeout: Option<Duration>) {
        if !self.is_alive(id) && self.status(id).await.is_none() {
            return;
        }
        self.expect_exit(id);
        if let Some(timeout) = clean_timeout.filter(|t| !t.is_zero()) {
            // Press the power button, and again every second until the
            // timeout, as Nova re-sends its shutdown request: a guest that
            // was still starting (or rebooting) may have missed a press.
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if self
                    .call::<EmptyReply>(id, &Request::Powerdown)
                    .await
                    .is_err()
                {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if self.wait_exit(id, left.min(Duration::from_secs(1))).await {
                    return;
                }
            }
        }
        let _ = self.call::<StateReply>(id, &Request::Stop).await;
        if self.wait_exit(id, Duration::from_secs(5)).await {
            return;
        }
        if let Some(pid) = self.known_pid(id)
            && pid_is_vmm_of(pid, id)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            self.wait_exit(id, Duration::from_secs(5)).await;
        }
    }

    /// Saves the VM's state into the instance directory; the VMM exits.
    pub async fn save(&self, id: &str) -> DriverResult<()> {
        let dir = self.saved_dir(id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error("saved/"))?;
        // A jailed VMM writes the state as its own uid (the owner of /proc/PID).
        if let Some(pid) = self.known_pid(id)
            && let Ok(meta) = std::fs::metadata(format!("/proc/{pid}"))
        {
            use std::os::unix::fs::MetadataExt;
            if meta.uid() != 0 {
                std::os::unix::fs::chown(&dir, Some(meta.uid()), Some(meta.gid()))
                    .map_err(io_error("saved/"))?;
            }
        }
        self.expect_exit(id);
        if let Err(e) = self
            .call::<SavedReply>(id, &Request::Save { dir: dir.clone() })
            .await
        {
            self.take_expected_exit(id);
            return Err(e);
        }
        self.wait_exit(id, Duration::from_secs(30)).await;
        Ok(())
    }

    /// Drops the saved state after a successful resume.
    pub async fn drop_saved_state(&self, id: &str) {
        let _ = tokio::fs::remove_dir_all(self.saved_dir(id)).await;
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

/// The disks of a server's attached volumes, each with an inheritable descriptor of its
/// backing file (the files stay open until the VMM has inherited them).
/// The disks of the server's volumes (a volume-backed server's root volume
/// first), each on a descriptor of its backing file opened here.
fn volume_disks(server: &Server) -> DriverResult<(Vec<DiskConfig>, Vec<std::fs::File>)> {
    use std::os::fd::AsRawFd;
    let mut disks = Vec::new();
    let mut files = Vec::new();
    let root = server.root_volume().into_iter();
    let others = server.volumes.iter().filter(|v| v.boot_index != Some(0));
    for v in root.chain(others) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!v.read_only)
            .open(&v.path)
            .map_err(io_error(format!("volume {}", v.volume_id)))?;
        // SAFETY: F_SETFD on a descriptor this function owns only clears its close-on-exec flag.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
        if rc < 0 {
            return Err(io_error(format!("volume {}", v.volume_id))(
                std::io::Error::last_os_error(),
            ));
        }
        disks.push(DiskConfig {
            path: v.path.clone(),
            read_only: v.read_only,
            serial: Some(super::driver::disk_serial(&v.volume_id)),
            fd: Some(file.as_raw_fd()),
            id: Some(super::driver::disk_device_id(&v.volume_id)),
        });
        files.push(file);
    }
    Ok((disks, files))
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

/// Bytes of the console log `os-getConsoleOutput` reads at most (Nova's
/// libvirt driver's MAX_CONSOLE_BYTES).
pub const CONSOLE_OUTPUT_MAX: usize = 100 * 1024;

/// The last `max` bytes of the console log at `path`, continued into its
/// rotated copy (`<path>.1`) when the log holds less. Links are not followed
/// (a VMM could have put one there); a missing file reads as empty.
fn read_log_tail(path: &Path, max: usize) -> Vec<u8> {
    let current = tail_of(path, max);
    let want = max.saturating_sub(current.len());
    if want == 0 {
        return current;
    }
    let mut older = tail_of(&crate::vmm::console::rotated_path(path), want);
    older.extend_from_slice(&current);
    older
}

/// The last `max` bytes of one file (empty when it cannot be read).
fn tail_of(path: &Path, max: usize) -> Vec<u8> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return Vec::new();
    };
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    if !meta.is_file() {
        return Vec::new();
    }
    let start = meta.len().saturating_sub(max as u64);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut data = Vec::with_capacity(max.min(meta.len() as usize));
    // The log may grow while it is read: never take more than `max`.
    let _ = file.take(max as u64).read_to_end(&mut data);
    data
}

/// Console bytes as the text Nova returns: lossy UTF-8 (a character cut at
/// the start of the tail is dropped), without the control characters Nova
/// removes (all below 0x20 but tab and newline), cut to the last `lines`
/// pieces of the text split on '\n' (a trailing newline leaves an empty
/// last piece).
fn console_text(data: &[u8], lines: Option<usize>) -> String {
    let start = data
        .iter()
        .take(3)
        .position(|b| b & 0xC0 != 0x80)
        .unwrap_or(0);
    let text: String = String::from_utf8_lossy(&data[start..])
        .chars()
        .filter(|c| !matches!(*c, '\x00'..='\x08' | '\x0b'..='\x1f'))
        .collect();
    match lines {
        None => text,
        Some(n) => {
            let all: Vec<&str> = text.split('\n').collect();
            all[all.len().saturating_sub(n)..].join("\n")
        }
    }
}

/// `/run/yunhe/<hash of the state dir>` for root, else under the temp dir:
/// short, per state directory (two clouds on one host never share it), and
/// the same after a restart so running VMMs are found again.
pub fn sockets_dir(state_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let digest = sha2::Sha256::digest(canonical.to_string_lossy().as_bytes());
    let tag = hex::encode(&digest[..6]);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let base = if uid == 0 {
        PathBuf::from("/run/yunhe")
    } else {
        std::env::temp_dir().join(format!("yunhe-{uid}"))
    };
    base.join(tag)
}

/// Creates the sockets directory (and its per-user parent) if missing, and
/// refuses one that is not this user's own or that others may write into:
/// whoever controls it could stand in for a VMM's socket.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // Check an existing parent before creating anything inside it.
    if let Some(parent) = dir.parent()
        && std::fs::symlink_metadata(parent).is_ok()
    {
        crate::vmm::jail::check_private_dir(parent)?;
    }
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if let Some(parent) = dir.parent() {
        crate::vmm::jail::check_private_dir(parent)?;
    }
    crate::vmm::jail::check_private_dir(dir)
}

/// The kernel command line when the image names none.
pub const DEFAULT_CMDLINE: &str = "root=/dev/vda console=ttyS0 reboot=k panic=1";

/// True when `pid` is a live `yunhe vmm` serving server `id` (guards against pid reuse).
fn pid_is_vmm_of(pid: i32, id: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start())
        && after.starts_with('Z')
    {
        return false;
    }
    let text = String::from_utf8_lossy(&cmdline);
    text.contains("vmm") && text.contains(id)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Removes the unpacked kernels no instance links to any more (a kernel image
/// deleted, or no server using it: the next boot unpacks it again); returns
/// the directory.
fn sweep_kernel_cache(dir: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry
                .metadata()
                .is_ok_and(|m| m.is_file() && m.nlink() == 1)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    dir.to_path_buf()
}

fn link_or_copy(src: &Path, dest: &Path) -> DriverResult<()> {
    let _ = std::fs::remove_file(dest);
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dest)
        .map(|_| ())
        .map_err(io_error(format!("copying {}", src.display())))
}

/// Copies `src` to `dest` as a reflink where the filesystem can, else as a
/// sparse copy of the data extents (shared with the volume backend).
fn clone_file(src: &Path, dest: &Path) -> DriverResult<()> {
    crate::volume::backend::clone_file(src, dest).map_err(io_error(format!(
        "copying {} to {}",
        src.display(),
        dest.display()
    )))
}

fn grow(disk: &Path, disk_gb: i64) -> DriverResult<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io_error("root disk"))?;
    let want = (disk_gb.max(0) as u64) << 30;
    let have = file.metadata().map_err(io_error("root disk"))?.len();
    if want > have {
        file.set_len(want)
            .map_err(io_error("growing the root disk"))?;
    }
    Ok(())
}

/// Puts `boot`'s kernel (unpacked into the kernel cache when there is one)
/// and ramdisk into `dir` as `kernel` and `ramdisk`; removes stale ones.
fn place_boot_files(boot: &BootFiles, kernel_cache: Option<&Path>, dir: &Path) -> DriverResult<()> {
    // No kernel file: the VMM boots the kernel the disk declares.
    let _ = std::fs::remove_file(dir.join("kernel"));
    if let Some(src) = &boot.kernel {
        let kernel = match kernel_cache {
            Some(cache) => {
                let (kernel, problem) = crate::vmm::unpack::cached_vmlinux(src, cache);
                if let Some(e) = problem {
                    tracing::warn!(kernel = %src.display(), "booting the kernel compressed: {e}");
                }
                kernel
            }
            None => src.clone(),
        };
        link_or_copy(&kernel, &dir.join("kernel"))?;
    }
    let ramdisk = dir.join("ramdisk");
    let _ = std::fs::remove_file(&ramdisk);
    if let Some(r) = &boot.ramdisk {
        link_or_copy(r, &ramdisk)?;
    }
    Ok(())
}

/// The root disk: a copy of the image (or empty), at least `disk_gb` GiB.
fn make_root_disk(image: Option<&Path>, disk: &Path, disk_gb: i64) -> DriverResult<()> {
    let _ = std::fs::remove_file(disk);
    match image {
        Some(src) => clone_file(src, disk)?,
        None => {
            if disk_gb <= 0 {
                return Ok(());
            }
            std::fs::File::create(disk).map_err(io_error("root disk"))?;
        }
    }
    grow(disk, disk_gb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    /// Nova's `hw:mem_page_size` values: large pages for `large`, `any` and sizes of 2 MiB up.
    #[test]
    fn mem_page_size_extra_spec_turns_huge_pages_on() {
        let with = |v: Option<&str>| {
            let mut server = Server::default();
            if let Some(v) = v {
                server
                    .flavor
                    .extra_specs
                    .insert("hw:mem_page_size".into(), v.into());
            }
            Virt::huge_pages(&server)
        };
        for on in ["large", "any", "2MB", "2048", "1GB", "2 MiB", "LARGE"] {
            assert!(with(Some(on)), "{on}");
        }
        for off in ["small", "4KB", "4", "", "huge", "x2MB"] {
            assert!(!with(Some(off)), "{off}");
        }
        assert!(!with(None));
    }

    /// A root disk is a small image grown to GiBs: the copy (createImage,
    /// shelve) must read only the data, give the same bytes and stay sparse.
    #[test]
    fn clone_file_copies_the_data_and_keeps_the_holes() {
        let dir = std::env::temp_dir().join(format!("yunhe-clone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (src, dest) = (dir.join("disk"), dir.join("copy"));
        let file = std::fs::File::create(&src).expect("source");
        let size = 1u64 << 30;
        file.set_len(size).expect("grow");
        let chunks: [(u64, &[u8]); 3] = [
            (0, b"boot sector"),
            (300 << 20, &[0xa5; 8192]),
            (size - 5, b"tail!"),
        ];
        for (at, data) in chunks {
            file.write_all_at(data, at).expect("write");
        }
        drop(file);
        let started = Instant::now();
        clone_file(&src, &dest).expect("clone");
        let took = started.elapsed();
        let copy = std::fs::File::open(&dest).expect("copy");
        let meta = copy.metadata().expect("metadata");
        assert_eq!(meta.len(), size);
        for (at, data) in chunks {
            let mut back = vec![0u8; data.len()];
            copy.read_exact_at(&mut back, at).expect("read back");
            assert_eq!(back, data, "bytes at {at}");
        }
        let mut around = [1u8; 16];
        copy.read_exact_at(&mut around, 100 << 20)
            .expect("read a hole");
        assert_eq!(around, [0u8; 16]);
        // Sparse: far less than the 1 GiB of the file is allocated.
        assert!(meta.blocks() * 512 < 16 << 20, "{} blocks", meta.blocks());
        // Reading 1 GiB of holes took seconds; the data extents take milliseconds.
        assert!(took < Duration::from_secs(2), "copy took {took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
