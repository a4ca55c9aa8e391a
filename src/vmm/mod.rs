//! The built-in virtual machine monitor: KVM, guest memory, boot, ACPI, legacy
//! and virtio-pci devices, vCPU threads; `yunhe vm run`, `yunhe vm guest`,
//! `yunhe vmm` and `yunhe selftest`.

pub mod acpi;
// `run_benchmarks` is called by `yunhe bench` (src/bench/mod.rs).
#[allow(dead_code)]
pub mod bench;
pub mod boot;
pub mod builder;
pub mod bus;
pub mod console;
pub mod control;
pub mod cpu;
pub mod cpu_probe;
pub mod ctl;
pub mod devices;
pub mod diskboot;
pub mod fdpass;
pub mod guests;
pub mod hotplug;
pub mod jail;
pub mod layout;
pub mod memory;
pub mod persist;
pub mod seccomp;
pub mod selftest;
pub mod snapshot;
pub mod terminal;
pub mod unpack;
pub mod vcpu;
pub mod vm;
pub mod vmm_config;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use devices::legacy::VmEvent;
use vm::VmError;
use vmm_config::{BootSource, DiskConfig, NetConfig, VmConfig};

/// `yunhe vm run`: boot one VM in the foreground.
#[derive(clap::Args, Debug)]
pub struct VmRunArgs {
    /// Kernel: a PVH ELF or a bzImage.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// PVH ELF firmware to boot instead of a kernel.
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// A disk: PATH or PATH,ro. May be repeated.
    #[arg(long = "disk")]
    pub disks: Vec<String>,
    /// A network interface: tap=NAME[,mac=MAC]. May be repeated.
    #[arg(long = "net")]
    pub nets: Vec<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u8,
    /// End the VM (exit 0) when the guest resets instead of rebooting it.
    #[arg(long)]
    pub no_reboot: bool,
    /// Attach a virtio-rng.
    #[arg(long)]
    pub rng: bool,
    /// Print boot-timer (port 0x80) records on stderr.
    #[arg(long)]
    pub boot_timer: bool,
    /// Back guest RAM with transparent huge pages (2 MiB): fewer nested page faults, more
    /// memory resident for a guest that touches little.
    #[arg(long)]
    pub huge_pages: bool,
    /// Also write the console to this (size-capped) log file.
    #[arg(long)]
    pub console_log: Option<PathBuf>,
    /// Boot a bzImage as it is, letting the guest decompress itself (keeps the
    /// guest's physical KASLR). By default yunhe boots the uncompressed PVH
    /// vmlinux inside it, unpacked once into ~/.cache/yunhe/kernels.
    #[arg(long)]
    pub boot_compressed: bool,
}

/// The guests built into yunhe (firmware/), as `yunhe vm guest` names them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestName {
    /// Lists and exercises the VM's devices, then powers off (what `selftest` boots).
    Probe,
    /// Prints one line and halts (the start-up benchmark's guest).
    Hello,
    /// Prints a ready line, echoes the serial console, powers off on the ACPI
    /// power button; idles at no CPU (the control plane's test guest).
    Echo,
}

impl GuestName {
    /// The guest's PVH ELF.
    pub fn elf(self) -> &'static [u8] {
        match self {
            GuestName::Probe => guests::PROBE_ELF,
            GuestName::Hello => guests::HELLO_ELF,
            GuestName::Echo => guests::ECHO_ELF,
        }
    }
}

/// `yunhe vm guest`: write a built-in guest out as a PVH ELF file.
#[derive(clap::Args, Debug)]
pub struct VmGuestArgs {
    /// Which guest.
    #[arg(value_enum)]
    pub name: GuestName,
    /// Write the ELF to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `yunhe vmm`: the per-instance VMM process.
#[derive(clap::Args, Debug)]
pub struct VmmArgs {
    /// Path of the JSON VM specification.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

/// `yunhe selftest`: check that this host can run VMs.
#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// Print the probe guest's console as it runs.
    #[arg(long)]
    pub verbose: bool,
}

/// Errors in the command-line front ends.
#[derive(Debug, thiserror::Error)]
pub enum FrontEndError {
    /// Bad --disk {0:?}: expected PATH or PATH,ro
    #[error("bad --disk {0:?}: expected PATH or PATH,ro")]
    Disk(String),
    /// Bad --net {0:?}: expected tap=NAME[,mac=MAC]
    #[error("bad --net {0:?}: expected tap=NAME[,mac=MAC]")]
    Net(String),
    /// Give --kernel or --firmware (not both)
    #[error("give --kernel or --firmware (not both)")]
    Boot,
}

/// Parses `PATH[,ro]`.
pub fn parse_disk(s: &str) -> Result<DiskConfig, FrontEndError> {
    let mut parts = s.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| FrontEndError::Disk(s.into()))?;
    let mut read_only = false;
    for p in parts {
        match p {
            "ro" => read_only = true,
            "rw" => read_only = false,
            _ => return Err(FrontEndError::Disk(s.into())),
        }
    }
    Ok(DiskConfig {
        path: path.into(),
        read_only,
        serial: None,
        fd: None,
        id: None,
    })
}

/// Parses `tap=NAME[,mac=MAC]`.
pub fn parse_net(s: &str) -> Result<NetConfig, FrontEndError> {
    let mut tap = None;
    let mut mac = None;
    for p in s.split(',') {
        match p.split_once('=') {
            Some(("tap", v)) if !v.is_empty() => tap = Some(v.to_string()),
            Some(("mac", v)) if parse_mac(v).is_some() => mac = Some(v.to_string()),
            _ => return Err(FrontEndError::Net(s.into())),
        }
    }
    Ok(NetConfig {
        tap: tap.ok_or_else(|| FrontEndError::Net(s.into()))?,
        mac,
        fd: None,
        id: None,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n >= 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

fn config_from_args(a: &VmRunArgs) -> Result<VmConfig, FrontEndError> {
    let boot = match (&a.kernel, &a.firmware) {
        (Some(k), None) => BootSource::Kernel {
            path: boot_kernel(k, a.boot_compressed),
        },
        (None, Some(f)) => BootSource::Firmware { path: f.clone() },
        _ => return Err(FrontEndError::Boot),
    };
    Ok(VmConfig {
        boot,
        initrd: a.initrd.clone(),
        cmdline: a.cmdline.clone(),
        memory_mib: a.memory,
        cpus: a.cpus,
        disks: a
            .disks
            .iter()
            .map(|d| parse_disk(d))
            .collect::<Result<_, _>>()?,
        nets: a
            .nets
            .iter()
            .map(|n| parse_net(n))
            .collect::<Result<_, _>>()?,
        rng: a.rng,
        console_log: a.console_log.clone(),
        log_boot_timer: a.boot_timer,
        huge_pages: a.huge_pages,
    })
}

/// Where `yunhe vm run` keeps unpacked kernels: `$YUNHE_CACHE/kernels`, else
/// `~/.cache/yunhe/kernels`; none without a home (never a shared temp dir, where
/// another user could plant a kernel).
fn kernel_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("YUNHE_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("kernels"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".cache/yunhe/kernels"))
}

/// The kernel `vm run` boots for `kernel`: its unpacked vmlinux unless asked
/// not to (see unpack.rs).
fn boot_kernel(kernel: &std::path::Path, boot_compressed: bool) -> PathBuf {
    if boot_compressed {
        return kernel.to_path_buf();
    }
    let Some(cache) = kernel_cache_dir() else {
        return kernel.to_path_buf();
    };
    let (path, problem) = unpack::cached_vmlinux(kernel, &cache);
    if let Some(e) = problem {
        eprintln!("yunhe vm run: booting {} compressed: {e}", kernel.display());
    }
    path
}

/// The virtio devices of a configuration.
pub fn virtio_devices(config: &VmConfig) -> Result<devices::factory::NamedDevices, VmError> {
    Ok(devices::factory::build(config)?)
}

pub fn vm_run_main(args: VmRunArgs) -> ExitCode {
    let start = Instant::now();
    let config = match config_from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("yunhe vm run: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match &config.console_log {
        Some(p) => match vm::open_console_log(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("yunhe vm run: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let console = Arc::new(console::Console::new(log, true));
    let term = terminal::RawTerminal::enter();
    let code = loop {
        let running = match vm::Vm::new(&config, console.clone(), virtio_devices, start, None)
            .and_then(|v| v.start())
        {
            Ok(r) => Arc::new(r),
            Err(e) => {
                drop(term);
                eprintln!("yunhe vm run: {e}");
                return ExitCode::FAILURE;
            }
        };
        terminal::forward_stdin_to(&running);
        start_rip_tracer(&running);
        vm::start_watchdog(&running, std::time::Duration::from_millis(250));
        let event = running.wait_settled();
        running.stop();
        match event {
            VmEvent::PowerOff => break ExitCode::SUCCESS,
            VmEvent::Reset if args.no_reboot => break ExitCode::SUCCESS,
            VmEvent::Reset => {
                // The old guest's RAM goes before the next boot maps its own.
                vm::release(running);
                continue;
            }
            VmEvent::Crash(why) => {
                drop(term);
                eprintln!("\r\nyunhe vm run: the VM stopped: {why}");
                return ExitCode::FAILURE;
            }
        }
    };
    drop(term);
    code
}

/// With `YUNHE_TRACE_RIP=SECONDS`, prints every vCPU's RIP that often (where is a slow
/// boot spending its time?).
fn start_rip_tracer(running: &Arc<vm::RunningVm>) {
    let Some(secs) = std::env::var("YUNHE_TRACE_RIP")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    else {
        return;
    };
    vcpu::TRACE_RIP.store(true, std::sync::atomic::Ordering::Relaxed);
    let weak = Arc::downgrade(running);
    let _ = vm::thread("yunhe-trace").spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs_f64(secs.max(0.01)));
            match weak.upgrade() {
                Some(vm) => vm.kick_all(),
                None => return,
            }
        }
    });
}

/// `yunhe vm guest NAME [-o FILE]`: exit 0 when written, 1 when writing failed,
/// 2 when standard output is a terminal (an ELF would only garble it).
pub fn vm_guest_main(args: VmGuestArgs) -> ExitCode {
    let elf = args.name.elf();
    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, elf) {
                eprintln!("yunhe vm guest: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            if out.is_terminal() {
                eprintln!(
                    "yunhe vm guest: standard output is a terminal; not writing a binary ELF \
                     there (give -o FILE or redirect the output)"
                );
                return ExitCode::from(2);
            }
            if let Err(e) = out.write_all(elf).and_then(|()| out.flush()) {
                eprintln!("yunhe vm guest: cannot write to standard output: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

pub fn vmm_main(args: VmmArgs) -> ExitCode {
    control::vmm_main(args)
}

pub fn selftest_main(args: SelftestArgs) -> ExitCode {
    selftest::main(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_disks_and_nets() {
        let d = parse_disk("/tmp/a.img,ro").expect("disk");
        assert!(d.read_only);
        assert!(parse_disk("").is_err());
        assert!(parse_disk("/x,rx").is_err());
        let n = parse_net("tap=tap0,mac=52:54:00:12:34:56").expect("net");
        assert_eq!(n.tap, "tap0");
        assert!(parse_net("mac=52:54:00:12:34:56").is_err());
        assert!(parse_net("tap=t,mac=zz").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:01"), Some([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn every_builtin_guest_is_a_pvh_elf() {
        for name in [GuestName::Probe, GuestName::Hello, GuestName::Echo] {
            let mem = boot::create_memory(16, false).expect("memory");
            let loaded = boot::load_kernel(&mem, &mut std::io::Cursor::new(name.elf()))
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert!(
                matches!(loaded.entry, boot::BootEntry::Pvh { .. }),
                "{name:?} has no PVH entry"
            );
        }
    }
}
