//! Command-line interface: every subcommand of the one binary.

use std::net::SocketAddr;
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
    Serve(ServeArgs),
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
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Boot one VM in the foreground with its serial console on stdin/stdout.
    Run(crate::vmm::VmRunArgs),
    /// Write a built-in guest (probe, hello, echo) as a PVH ELF, e.g. to upload
    /// it as a kernel image.
    Guest(crate::vmm::VmGuestArgs),
}

/// Options of `yunhe serve`. Each can also be given as `YUNHE_<FLAG>`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory holding the state file, images, disks and credentials.
    /// Defaults to /var/lib/yunhe for root, else ~/.local/share/yunhe.
    #[arg(long, env = "YUNHE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address and port to listen on. Use 0.0.0.0:8080 to serve the LAN.
    #[arg(long, env = "YUNHE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base URL clients use to reach this server (goes into the service catalog).
    /// Defaults to http://<listen address>.
    #[arg(long, env = "YUNHE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Password of the `admin` user, set on first start only. Random if not given.
    #[arg(long, env = "YUNHE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "YUNHE_TOKEN_TTL", default_value_t = 3600)]
    pub token_ttl: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "YUNHE_LOG_JSON")]
    pub log_json: bool,
    /// vCPUs the scheduler may hand out per host CPU (Nova's cpu_allocation_ratio).
    #[arg(long, env = "YUNHE_CPU_ALLOCATION_RATIO", default_value_t = 4.0)]
    pub cpu_allocation_ratio: f64,
    /// RAM overcommit (Nova's ram_allocation_ratio).
    #[arg(long, env = "YUNHE_RAM_ALLOCATION_RATIO", default_value_t = 1.0)]
    pub ram_allocation_ratio: f64,
    /// Disk overcommit (Nova's disk_allocation_ratio).
    #[arg(long, env = "YUNHE_DISK_ALLOCATION_RATIO", default_value_t = 1.0)]
    pub disk_allocation_ratio: f64,
    /// Attach a config drive to every server (there is no metadata service
    /// without networking). `--force-config-drive false` attaches one only
    /// when a server asks for it.
    #[arg(long, env = "YUNHE_FORCE_CONFIG_DRIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub force_config_drive: bool,
    /// Run VMMs unconfined (as root, in the host's namespaces, no cgroup).
    /// Unsafe: for debugging the VMM only; a guest that escapes its device
    /// model then owns the host.
    #[arg(long, env = "YUNHE_NO_JAIL")]
    pub no_jail: bool,
}

impl ServeArgs {
    /// The state directory to use when none was given.
    pub fn resolved_state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 {
            return PathBuf::from("/var/lib/yunhe");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".local/share/yunhe")
    }

    /// The public base URL without a trailing slash.
    pub fn resolved_public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let addr = self.listen;
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else if addr.is_ipv6() {
                    format!("[{}]", addr.ip())
                } else {
                    addr.ip().to_string()
                };
                format!("http://{}:{}", host, addr.port())
            }
        }
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => crate::server::serve_main(args),
        Command::Vm(VmCommand::Run(args)) => crate::vmm::vm_run_main(args),
        Command::Vm(VmCommand::Guest(args)) => crate::vmm::vm_guest_main(args),
        Command::Vmm(args) => crate::vmm::vmm_main(args),
        Command::Selftest(args) => crate::vmm::selftest_main(args),
        Command::Bench(args) => crate::bench::bench_main(args),
    }
}
