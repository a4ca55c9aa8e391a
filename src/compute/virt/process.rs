//! The VMM process: its jail, spawn and exit watch, stop and save.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::db::servers::Server;
use crate::vmm::control::{EmptyReply, Request, SavedReply, StateReply, StatusReply, VmmState};

use super::spec::volume_disks;
use super::{Virt, io_error};
use crate::compute::driver::{DriverError, DriverResult};

impl Virt {
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
    pub(super) fn jail_root(&self, id: &str) -> PathBuf {
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

    /// Starts the server's VMM (from its saved state with `restore`) and
    /// waits until it answers on its socket. Returns the VMM's pid.
    pub async fn spawn(&self, server: &Server, restore: bool) -> DriverResult<i32> {
        let started = Instant::now();
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
        // Swap and ephemeral disks: made at the first boot (and after an
        // unshelve of an offloaded server, whose directory went).
        let (local_dir, local) = (dir.clone(), server.local_disks.clone());
        let local_files = tokio::task::spawn_blocking(move || {
            super::files::ensure_local_disks(&local_dir, &local)
        })
        .await??;
        if let Some(uid) = jail_uid {
            // The files the VMM writes through a path after it dropped root.
            let own = [dir.join("disk"), self.rescue_dir(&server.id).join("disk")];
            for disk in own.into_iter().chain(local_files) {
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
        let cgroup_done = Instant::now();
        let spec_path = dir.join("spec.json");
        // One NIC per port, in port order, each on its port's tap (the
        // descriptors stay open here until the VMM has inherited them).
        let (nets, _taps) = match self.dataplane.get() {
            Some(dp) => crate::compute::networking::nics(dp, server)
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
        let spawned_at = Instant::now();
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
        let mut polls = 0u32;
        loop {
            polls += 1;
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
                tracing::debug!(
                    server = %server.id,
                    cgroup_us = cgroup_done.duration_since(started).as_micros() as u64,
                    spec_and_clone_us = spawned_at.duration_since(cgroup_done).as_micros() as u64,
                    wait_us = spawned_at.elapsed().as_micros() as u64,
                    polls,
                    "VMM spawn timing"
                );
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

/// True when `pid` is a live `yunhe vmm` serving server `id` (guards against pid reuse).
pub(super) fn pid_is_vmm_of(pid: i32, id: &str) -> bool {
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
