//! The built-in virtual machine monitor (placeholder until the VMM lands).

pub mod devices;

use std::path::PathBuf;
use std::process::ExitCode;

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
pub struct SelftestArgs {}

pub fn vm_run_main(_args: VmRunArgs) -> ExitCode {
    eprintln!("yunhe: the VMM is not built yet");
    ExitCode::FAILURE
}

pub fn vmm_main(_args: VmmArgs) -> ExitCode {
    eprintln!("yunhe: the VMM is not built yet");
    ExitCode::FAILURE
}

pub fn selftest_main(_args: SelftestArgs) -> ExitCode {
    eprintln!("yunhe: the VMM is not built yet");
    ExitCode::FAILURE
}
