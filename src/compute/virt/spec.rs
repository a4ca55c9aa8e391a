//! The VMM spec (docs/vmm.md) built from a server: its size, disks, volumes and boot source.

use crate::db::servers::{LocalDisk, LocalDiskKind, Server};
use crate::vmm::control::VmmSpec;
use crate::vmm::jail::JailSpec;
use crate::vmm::vmm_config::{BootSource, DiskConfig, NetConfig, VmConfig};

use super::{Virt, io_error};
use crate::compute::driver::DriverResult;

impl Virt {
    /// The VM's size as the spec gives it: (vCPUs, MiB of RAM).
    pub(super) fn vm_size(server: &Server) -> (u8, u64) {
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
    pub(super) fn spec(
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
        // Local ephemeral and swap disks after the root disk (Nova's order).
        for index in 0..server.local_disks.len() {
            let path = dir.join(LocalDisk::file_name(&server.local_disks, index));
            if path.exists() {
                let serial = match server.local_disks[index].kind {
                    LocalDiskKind::Swap => "swap".to_string(),
                    LocalDiskKind::Ephemeral => format!("ephemeral{index}"),
                };
                disks.push(DiskConfig {
                    path,
                    read_only: false,
                    serial: Some(serial),
                    fd: None,
                    id: None,
                });
            }
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
}

/// The disks of a server's attached volumes, each with an inheritable descriptor of its
/// backing file (the files stay open until the VMM has inherited them).
/// The disks of the server's volumes (a volume-backed server's root volume
/// first), each on a descriptor of its backing file opened here.
pub(super) fn volume_disks(server: &Server) -> DriverResult<(Vec<DiskConfig>, Vec<std::fs::File>)> {
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
            serial: Some(crate::compute::driver::disk_serial(&v.volume_id)),
            fd: Some(file.as_raw_fd()),
            id: Some(crate::compute::driver::disk_device_id(&v.volume_id)),
        });
        files.push(file);
    }
    Ok((disks, files))
}

/// The kernel command line when the image names none.
pub const DEFAULT_CMDLINE: &str = "root=/dev/vda console=ttyS0 reboot=k panic=1";

#[cfg(test)]
mod tests {
    use super::*;

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
}
