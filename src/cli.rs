//! Command-line interface: every subcommand of the one binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// yunhe (云盒): a small OpenStack cloud in one binary.
#[derive(Parser, Debug)]
#[command(name = "yunhe", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the appliance: the OpenStack APIs, the dashboard and the VMs.
    Serve(Box<crate::server::ServeArgs>),
    /// Run virtual machines directly, without the control plane.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Internal: the per-instance VMM process started by `serve`.
    #[command(hide = true)]
    Vmm(crate::vmm::VmmArgs),
    /// Check that this host can run VMs: boots the built-in probe guest.
    Selftest(crate::vmm::SelftestArgs),
    /// Measure start-up time, memory and API throughput against baselines.
    Bench(crate::bench::BenchArgs),
    /// Inspect the authorization policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Print the effective rules: the release defaults with the overrides of
    /// <state-dir>/policy.yaml.
    List(PolicyListArgs),
}

#[derive(Args, Debug)]
pub struct PolicyListArgs {
    /// The state directory whose policy.yaml applies (as for `serve`).
    #[arg(long, env = "YUNHE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only this service: identity, compute, image, network or volume.
    #[arg(long)]
    pub service: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Boot one VM in the foreground with its serial console on stdin/stdout.
    Run(crate::vmm::VmRunArgs),
    /// Write a built-in guest (probe, hello, echo) as a PVH ELF, e.g. to upload
    /// it as a kernel image.
    Guest(crate::vmm::VmGuestArgs),
    /// Send one command to a running VMM's control socket (status, pause,
    /// resume, save DIR, powerdown, console, ...).
    Ctl(crate::vmm::ctl::VmCtlArgs),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => crate::server::serve_main(*args),
        Command::Vm(VmCommand::Run(args)) => crate::vmm::vm_run_main(args),
        Command::Vm(VmCommand::Guest(args)) => crate::vmm::vm_guest_main(args),
        Command::Vm(VmCommand::Ctl(args)) => crate::vmm::ctl::vm_ctl_main(args),
        Command::Vmm(args) => crate::vmm::vmm_main(args),
        Command::Selftest(args) => crate::vmm::selftest_main(args),
        Command::Bench(args) => crate::bench::bench_main(args),
        Command::Policy(PolicyCommand::List(args)) => crate::policy::list_main(
            &args
                .state_dir
                .unwrap_or_else(crate::server::default_state_dir),
            args.service.as_deref(),
        ),
    }
}
