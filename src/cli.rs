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
    /// Defaults to https://<listen address> (http:// with --insecure-http).
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
    /// Serve this certificate chain (PEM) instead of one from yunhe's own
    /// local CA. Needs --tls-key.
    #[arg(long, env = "YUNHE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "YUNHE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS. Tokens and passwords then cross the
    /// network in clear: only for a trusted network or a TLS proxy in front.
    #[arg(long, env = "YUNHE_INSECURE_HTTP", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub insecure_http: bool,
    /// Largest image accepted, in bytes (Glance's image_size_cap; default 1 TiB).
    /// Larger uploads are cut off with 413 and their data removed.
    #[arg(long, env = "YUNHE_IMAGE_SIZE_CAP", default_value_t = crate::image::quota::DEFAULT_IMAGE_SIZE_CAP)]
    pub image_size_cap: u64,
    /// Space image uploads leave free on the state directory's filesystem:
    /// bytes (units K, M, G, T allowed, e.g. 2GiB) or a percentage of the
    /// filesystem (e.g. 5%). Uploads that would go below it get 413.
    #[arg(long, env = "YUNHE_MIN_FREE_SPACE", default_value_t = crate::image::quota::DEFAULT_MIN_FREE_SPACE)]
    pub min_free_space: crate::image::quota::FreeSpaceReserve,
    /// API requests per second each user (each token; without one, each
    /// source address) may make on average; beyond, 429 with Retry-After.
    /// 0 turns the limits off.
    #[arg(long, env = "YUNHE_API_RATE_LIMIT", default_value_t = 200.0)]
    pub api_rate_limit: f64,
    /// API requests a user may make at once (the token bucket's size).
    #[arg(long, env = "YUNHE_API_RATE_BURST", default_value_t = 400.0)]
    pub api_rate_burst: f64,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Run VMMs unconfined (as root, in the host's namespaces, no cgroup).
    /// Unsafe: for debugging the VMM only; a guest that escapes its device
    /// model then owns the host.
    #[arg(long, env = "YUNHE_NO_JAIL")]
    pub no_jail: bool,
    /// Boot bzImage kernels as they are, letting each guest decompress its
    /// kernel (keeps the guest's physical KASLR). By default yunhe boots the
    /// uncompressed PVH vmlinux inside them, unpacked once per kernel image
    /// into <state-dir>/kernel-cache.
    #[arg(long, env = "YUNHE_BOOT_COMPRESSED_KERNELS")]
    pub boot_compressed_kernels: bool,
}

/// Authentication limits of `yunhe serve` (Keystone's lockout options, rate
/// limits on password checks, the Argon2 pool).
#[derive(Args, Debug, Clone)]
pub struct AuthArgs {
    /// Failed password checks in a row that lock a user (Keystone's
    /// lockout_failure_attempts; its recommended 6). 0 turns lockout off.
    #[arg(long, env = "YUNHE_LOCKOUT_FAILURE_ATTEMPTS", default_value_t = 6)]
    pub lockout_failure_attempts: u32,
    /// Seconds a locked user stays locked (Keystone's lockout_duration).
    /// 0 keeps it locked until an admin updates the user.
    #[arg(long, env = "YUNHE_LOCKOUT_DURATION", default_value_t = 1800)]
    pub lockout_duration: u64,
    /// Failed authentications a user name may burst before 429. 0: no limit.
    #[arg(long, env = "YUNHE_AUTH_USER_BURST", default_value_t = 10)]
    pub auth_user_burst: u32,
    /// Failed authentications per second a user name earns back.
    #[arg(long, env = "YUNHE_AUTH_USER_RATE", default_value_t = 1.0)]
    pub auth_user_rate: f64,
    /// Failed authentications a client address may burst before 429. 0: no limit.
    #[arg(long, env = "YUNHE_AUTH_SOURCE_BURST", default_value_t = 100)]
    pub auth_source_burst: u32,
    /// Failed authentications per second a client address earns back.
    #[arg(long, env = "YUNHE_AUTH_SOURCE_RATE", default_value_t = 10.0)]
    pub auth_source_rate: f64,
    /// Threads computing Argon2 (each uses 19 MiB while it hashes).
    /// Defaults to the number of cores, at most 4.
    #[arg(long, env = "YUNHE_AUTH_HASH_WORKERS")]
    pub auth_hash_workers: Option<usize>,
    /// Password checks that may wait for a hash worker; beyond, 429.
    #[arg(long, env = "YUNHE_AUTH_HASH_QUEUE", default_value_t = 32)]
    pub auth_hash_queue: usize,
    /// Seconds between purges of expired tokens (also purged at start).
    #[arg(long, env = "YUNHE_TOKEN_PURGE_INTERVAL", default_value_t = 600)]
    pub token_purge_interval: u64,
}

impl AuthArgs {
    /// The limits the identity service enforces.
    pub fn limits(&self) -> crate::identity::throttle::AuthLimits {
        crate::identity::throttle::AuthLimits {
            user_burst: self.auth_user_burst,
            user_per_second: self.auth_user_rate,
            source_burst: self.auth_source_burst,
            source_per_second: self.auth_source_rate,
            lockout_failure_attempts: self.lockout_failure_attempts,
            lockout_duration: self.lockout_duration,
            hash_workers: self
                .auth_hash_workers
                .unwrap_or_else(crate::identity::throttle::default_hash_workers),
            hash_queue_depth: self.auth_hash_queue,
            token_purge_interval: self.token_purge_interval,
        }
    }
}

/// The state directory when none is given: /var/lib/yunhe for root, else
/// ~/.local/share/yunhe.
pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return PathBuf::from("/var/lib/yunhe");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/yunhe")
}

impl ServeArgs {
    /// The state directory to use when none was given.
    pub fn resolved_state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(default_state_dir)
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
                let scheme = if self.insecure_http { "http" } else { "https" };
                format!("{scheme}://{}:{}", host, addr.port())
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
        Command::Vm(VmCommand::Ctl(args)) => crate::vmm::ctl::vm_ctl_main(args),
        Command::Vmm(args) => crate::vmm::vmm_main(args),
        Command::Selftest(args) => crate::vmm::selftest_main(args),
        Command::Bench(args) => crate::bench::bench_main(args),
        Command::Policy(PolicyCommand::List(args)) => crate::policy::list_main(
            &args.state_dir.unwrap_or_else(default_state_dir),
            args.service.as_deref(),
        ),
    }
}
