//! `yunhe serve`: the control plane. One HTTP port serves every OpenStack
//! service below its own path, the dashboard at `/`, and `/healthz`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::db::Db;
use crate::identity::{self, IdentityState, bootstrap};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The state directory could not be prepared.
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    /// The state file could not be opened or migrated.
    #[error("state file: {0}")]
    Db(#[from] crate::db::DbError),
    /// Bootstrapping the identity service failed.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] identity::IdentityError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// HTTPS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The policy file could not be applied.
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    /// The async runtime could not start or the server failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// Bridged external mode's options do not fit the host.
    #[error("{0}")]
    External(String),
}

/// Services that work and belong in the catalog.
const CATALOG: &[bootstrap::CatalogEntry] = &[
    bootstrap::CatalogEntry {
        kind: "identity",
        name: "keystone",
        path: "/identity",
    },
    bootstrap::CatalogEntry {
        kind: "image",
        name: "glance",
        path: "/image",
    },
    // As DevStack registers Nova: the versioned URL without a project id.
    bootstrap::CatalogEntry {
        kind: "compute",
        name: "nova",
        path: "/compute/v2.1",
    },
    bootstrap::CatalogEntry {
        kind: "network",
        name: "neutron",
        path: "/network",
    },
    // Cinder under both types DevStack registers: openstacksdk (and so
    // openstackclient) looks up `block-storage`, older clients `volumev3`.
    bootstrap::CatalogEntry {
        kind: "block-storage",
        name: "cinder",
        path: "/volume/v3",
    },
    bootstrap::CatalogEntry {
        kind: "volumev3",
        name: "cinderv3",
        path: "/volume/v3",
    },
];

/// Makes the C allocator serve every allocation of 1 MiB or more with its own
/// mapping, unmapped on free. glibc would otherwise raise that threshold after
/// the first such free and keep later large buffers (Argon2's 19 MiB, big
/// response bodies) in its heap for good, so serve's memory would only grow.
///
/// It also keeps glibc to two malloc arenas: by default every thread that
/// allocates while the others hold theirs gets its own (up to 8 per core),
/// and each kept 4-5 MiB of free memory resident; with 100 servers and a
/// soak of reads serve's RSS grew from 39 to over 70 MiB that way, about a
/// dozen such arenas (issue 17, docs/performance.md).
fn return_large_frees() {
    // SAFETY: mallopt only sets allocator tunables; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How long an idle thread of the runtime's blocking pool (state-file
/// access, disk clones, password hashes) waits for more work before it ends.
/// A burst of 100 builds grows the pool by about 165 threads, each holding
/// about 80 KiB of stack and thread state (13 MiB in all, measured with
/// `yunhe bench scale`); with tokio's default of 10 s they stayed that long
/// after the burst. Starting a thread again costs tens of microseconds.
pub const BLOCKING_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(2);

pub fn serve_main(args: ServeArgs) -> ExitCode {
    let started = Instant::now();
    return_large_frees();
    init_logging(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("yunhe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yunhe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("YUNHE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// The services' settings from `yunhe serve`'s flags, handed to each
/// service as it is built.
pub struct AppConfig {
    pub compute: crate::compute::ComputeConfig,
    pub image: crate::image::ImageConfig,
    pub rate_limit: crate::http::ratelimit::RateLimitConfig,
    pub volume: crate::volume::VolumeConfig,
    /// Told after every network write (the dataplane listens when on).
    pub network_changed: Arc<tokio::sync::Notify>,
    /// Change events of every service, streamed to the dashboard (events.rs).
    pub events: crate::events::Bus,
}

/// Builds the whole HTTP application for a state file.
pub fn app(identity: Arc<IdentityState>, config: AppConfig) -> Router {
    let AppConfig {
        compute,
        image,
        rate_limit,
        volume,
        network_changed,
        events,
    } = config;
    let public_url = identity.public_url.clone();
    let auth_uri: Arc<str> = format!("{public_url}/identity").into();
    let server_events = compute.network.notifier.clone();
    let router = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/identity/",
            get(identity::root_versions).with_state(identity.clone()),
        )
        .nest("/identity", identity::router(identity.clone()))
        .merge(crate::compute::router(identity.clone(), compute))
        .merge(crate::image::router(identity.clone(), image))
        .merge(crate::network::router(
            identity.clone(),
            network_changed,
            events.clone(),
            server_events,
        ))
        .merge(crate::volume::router(identity.clone(), volume))
        .merge(crate::web::router(identity.clone(), events));
    let router = match crate::http::ratelimit::RateLimiter::configured(rate_limit, identity.clone())
    {
        Some(limiter) => router.layer(axum::middleware::from_fn_with_state(
            limiter,
            crate::http::ratelimit::limit,
        )),
        None => router,
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            auth_uri,
            crate::http::www_authenticate,
        ))
        .layer(axum::middleware::from_fn(crate::http::request_id))
}

async fn serve(mut args: ServeArgs, started: Instant) -> Result<(), ServeError> {
    let dataplane_on = match args.dataplane {
        DataplaneMode::True => true,
        DataplaneMode::False => false,
        DataplaneMode::Auto => match dataplane_unavailable() {
            None => true,
            Some(why) => {
                tracing::warn!(
                    "network dataplane off: {why}; guests get no network (ports go ACTIVE when bound, as with Neutron's noop agent). \
                     Run serve as root on a host with /dev/net/tun, or force it with --dataplane true"
                );
                false
            }
        },
    };
    // Bridged external mode is checked before anything starts.
    let bridged = match &args.external_interface {
        None => None,
        Some(_) if !dataplane_on => {
            return Err(ServeError::External(
                "--external-interface needs the dataplane (--dataplane true, as root)".into(),
            ));
        }
        Some(interface) => {
            let uplink =
                crate::dataplane::uplink::check(interface).map_err(ServeError::External)?;
            let plan = crate::network::initial::Plan::bridged(
                args.external_cidr.as_deref().unwrap_or_default(),
                args.external_gateway.as_deref().unwrap_or_default(),
                args.external_pool.as_deref().unwrap_or_default(),
                crate::dataplane::uplink::PHYSNET,
            )
            .map_err(ServeError::External)?;
            Some((uplink, plan))
        }
    };
    // Bind first: with port 0 the kernel picks the port, and the public URL
    // (which goes into the catalog) must name the real one.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: args.listen.to_string(),
            source,
        })?;
    args.listen = listener.local_addr()?;
    let state_dir = args.resolved_state_dir();
    let public_url = args.resolved_public_url();
    let dir_error = |source| ServeError::StateDir {
        path: state_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&state_dir).map_err(dir_error)?;
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(dir_error)?;

    let tls = if args.insecure_http {
        None
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(crate::tls::from_files(cert, key)?)
    } else {
        let names = crate::tls::certificate_names(url_host(&public_url));
        let dir = state_dir.join("tls");
        Some(
            tokio::task::spawn_blocking(move || crate::tls::local_ca(&dir, &names))
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))??,
        )
    };
    let ca_file = tls.as_ref().and_then(|t| t.ca_file.clone());

    let db_path = state_dir.join("yunhe.db");
    let (db, report) = {
        let state_dir = state_dir.clone();
        let public_url = public_url.clone();
        let password = args.admin_password.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ServeError> {
            let db = Db::open(&db_path)?;
            let report = bootstrap::run(
                &db,
                &state_dir,
                &public_url,
                password.as_deref(),
                CATALOG,
                ca_file.as_deref(),
            )?;
            Ok((db, report))
        })
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??
    };
    let rate_limit = crate::http::ratelimit::RateLimitConfig {
        per_second: args.api_rate_limit,
        burst: args.api_rate_burst,
    };
    let events = crate::events::Bus::default();
    let mut compute = crate::compute::ComputeConfig {
        ratios: crate::compute::AllocationRatios {
            cpu: args.cpu_allocation_ratio,
            ram: args.ram_allocation_ratio,
            disk: args.disk_allocation_ratio,
        },
        force_config_drive: args.force_config_drive,
        jail_vmms: !args.no_jail,
        unpack_kernels: !args.boot_compressed_kernels,
        vif_plugging_timeout: Duration::from_secs(args.vif_plugging_timeout),
        vif_plugging_is_fatal: args.vif_plugging_is_fatal,
        network: Default::default(),
        events: events.clone(),
        volume: Default::default(),
    };
    let image = crate::image::ImageConfig {
        size_cap: args.image_size_cap,
        min_free_space: args.min_free_space,
        cache_dir: args.image_cache_dir.clone(),
        cache_enabled: !args.no_image_cache,
        cache_max_size: args.image_cache_max_size,
        events: events.clone(),
    };
    let policy = crate::policy::Policy::load(&state_dir)?;
    if let Some(path) = &policy.source {
        tracing::info!(file = %path.display(), "policy overrides applied");
    }
    let limits = args.auth.limits();
    let purge_interval = limits.token_purge_interval;
    let identity = IdentityState::new(
        db,
        public_url.clone(),
        Arc::new(policy),
        identity::IdentityConfig {
            token_ttl: args.token_ttl as i64,
            limits,
            trust_max_redelegation_count: args.trust_max_redelegation_count,
            oidc_audiences: args.oidc_audience.clone(),
        },
    )?;
    identity::token::start_purger(identity.clone(), purge_interval);
    let network_changed = Arc::new(tokio::sync::Notify::new());
    compute.network.changed = Some(network_changed.clone());
    // Before the dataplane starts, so its first pass already has them.
    let initial_networks = if args.initial_networks.unwrap_or(dataplane_on) {
        let db = identity.db.clone();
        let policy = identity.policy.clone();
        let plan = crate::network::initial::Plan {
            dns_nameservers: crate::network::initial::nameservers(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
            ..bridged.as_ref().map(|(_, p)| p.clone()).unwrap_or_default()
        };
        match tokio::task::spawn_blocking(move || {
            crate::network::initial::ensure(&db, policy, &plan)
        })
        .await
        {
            Ok(Ok(outcome)) => Some(outcome),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the first-start networks could not be made; nothing was");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the first-start networks could not be made; nothing was");
                None
            }
        }
    } else {
        None
    };
    if dataplane_on {
        let dataplane = crate::dataplane::start(
            identity.db.clone(),
            network_changed.clone(),
            bridged.map(|(uplink, _)| uplink),
            compute.network.notifier.clone(),
        );
        dataplane.set_instance_source(crate::compute::metadata_source::source(identity.db.clone()));
        compute.network.dataplane = Some(dataplane);
        tracing::info!(mode = ?args.dataplane, "network dataplane on");
    }
    let volume = crate::volume::VolumeConfig {
        volume_dir: args.volume_dir.clone(),
        over_subscription_ratio: args.volume_over_subscription_ratio,
        backup_dir: args.backup_dir.clone(),
        events: events.clone(),
        compute_events: Default::default(),
        image_size_cap: args.image_size_cap,
    };
    compute.volume = volume.clone();
    let app = app(
        identity,
        AppConfig {
            compute,
            image,
            rate_limit,
            volume,
            network_changed,
            events,
        },
    );
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(listen = %args.listen, state_dir = %state_dir.display(), ready_ms, "yunhe is serving");
    println!(
        "yunhe {} is up ({ready_ms:.0} ms).",
        env!("CARGO_PKG_VERSION")
    );
    println!("  dashboard:   {public_url}/");
    println!("  identity:    {public_url}/identity/v3");
    println!(
        "  credentials: {} (OS_CLOUD=yunhe)",
        report.clouds_yaml.display()
    );
    println!("               {}", report.openrc.display());
    if report.created_admin {
        println!("  first start: created user 'admin'; its password is in the two files above.");
    }
    if let Some(crate::network::initial::Outcome::Created(made)) = &initial_networks {
        println!(
            "  first start: created network 'public' ({}, external: floating IPs) and, for project",
            made.public_cidr
        );
        println!(
            "               'admin', 'private' ({}, DHCP) with router 'router1' to 'public'.",
            made.private_cidr
        );
    }
    if dataplane_on {
        println!("  network:     dataplane on (guests get DHCP, routers, floating IPs)");
    } else {
        println!(
            "  network:     dataplane off: no guest networking, ports go ACTIVE when bound (--dataplane true to force it on)"
        );
    }
    println!(
        "  try:         OS_CLIENT_CONFIG_FILE={} OS_CLOUD=yunhe openstack token issue",
        report.clouds_yaml.display()
    );
    if let Some(ca) = tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        println!(
            "  tls:         certificate from yunhe's local CA {}",
            ca.display()
        );
    } else if tls.is_none() {
        println!(
            "  tls:         off (--insecure-http): passwords and tokens cross the network in clear"
        );
    }
    tokio::spawn(return_free_memory());
    match tls {
        Some(tls) => serve_tls(listener, app, tls.config).await?,
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown_signal())
            .await?
        }
    }
    tracing::info!("yunhe stopped");
    Ok(())
}

/// How often serve gives malloc's free pages back to the kernel.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Every [`TRIM_INTERVAL`], hands the whole free pages inside malloc's arenas
/// back to the kernel (`malloc_trim(0)`: `MADV_DONTNEED` on them; the arenas
/// keep their address space). Without it a burst's freed memory stayed
/// resident: with 100 servers serve's anonymous memory stayed about 15 MiB
/// above bootstrap even after every server was deleted (issue 17,
/// docs/performance.md). The walk takes each arena's lock for a moment.
async fn return_free_memory() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim takes no pointers; it walks malloc's own
            // arenas under their locks.
            unsafe { libc::malloc_trim(0) };
        })
        .await;
    }
}

/// The host of a URL (`https://[::1]:8080/x` → `[::1]`).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Serves HTTPS on the listener until SIGINT/SIGTERM, then lets open
/// connections finish (10 s at most). Each connection gets the peer
/// address as axum's `ConnectInfo`, as the plain-HTTP path does.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // Connections watch this to finish gracefully; each holds a clone of
    // `open` so the end can wait for them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let open = Arc::new(());
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let mut stop = stop_rx.clone();
        let held = open.clone();
        let service = app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        tokio::spawn(async move {
            let _held = held;
            // A client that never finishes the handshake is dropped.
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(
                    TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let stopping = async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&open) > 1 {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!("connections still open after 10 s; stopping anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Options of `yunhe serve`. Each can also be given as `YUNHE_<FLAG>`.
#[derive(clap::Args, Debug, Clone)]
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
    /// How deep a trust may be redelegated (Keystone's `[trust] max_redelegation_count`).
    #[arg(long, env = "YUNHE_TRUST_MAX_REDELEGATION_COUNT", default_value_t = 3)]
    pub trust_max_redelegation_count: u64,
    /// Audience(s) an OpenID Connect token's `aud` must name: the client id yunhe is
    /// registered under at the identity provider (repeat or comma-separate for several).
    #[arg(
        long,
        env = "YUNHE_OIDC_AUDIENCE",
        value_delimiter = ',',
        default_value = "yunhe"
    )]
    pub oidc_audience: Vec<String>,
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
    /// Seconds a server build waits for Neutron's network-vif-plugged of
    /// its ports before the guest starts (Nova's vif_plugging_timeout);
    /// 0: it does not wait.
    #[arg(long, env = "YUNHE_VIF_PLUGGING_TIMEOUT", default_value_t = crate::compute::VIF_PLUGGING_TIMEOUT)]
    pub vif_plugging_timeout: u64,
    /// Whether a build whose ports were not plugged in time goes to ERROR
    /// (Nova's vif_plugging_is_fatal); `false`: it starts the guest anyway.
    #[arg(long, env = "YUNHE_VIF_PLUGGING_IS_FATAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub vif_plugging_is_fatal: bool,
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
    /// Directory of the image cache (Glance's image_cache_dir; default
    /// <state-dir>/image-cache, where cached images are hard links to the
    /// store's files). Put it on faster storage than the state directory to
    /// serve downloads and boots from there.
    #[arg(long, env = "YUNHE_IMAGE_CACHE_DIR")]
    pub image_cache_dir: Option<PathBuf>,
    /// Bytes the image cache holds before it drops the least recently used
    /// images (Glance's image_cache_max_size; default 10 GiB).
    #[arg(long, env = "YUNHE_IMAGE_CACHE_MAX_SIZE", default_value_t = crate::image::cache::DEFAULT_MAX_SIZE)]
    pub image_cache_max_size: u64,
    /// Directory of the volume files (Cinder's file backend; default
    /// <state-dir>/volumes). Point it at another disk to keep volumes off
    /// the state directory's filesystem (docs/volume.md).
    #[arg(long, env = "YUNHE_VOLUME_DIR")]
    pub volume_dir: Option<PathBuf>,
    /// GiB of volumes that may be provisioned per GiB of the volume
    /// directory's filesystem (Cinder's max_over_subscription_ratio; the
    /// files are sparse).
    #[arg(long, env = "YUNHE_VOLUME_OVER_SUBSCRIPTION_RATIO", default_value_t = crate::volume::backend::DEFAULT_OVER_SUBSCRIPTION_RATIO)]
    pub volume_over_subscription_ratio: f64,
    /// Directory of the volume backups (compressed chunks; default
    /// <state-dir>/backups). Point it at another disk so a backup outlives
    /// the volumes' disk (docs/volume.md).
    #[arg(long, env = "YUNHE_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// The Neutron dataplane in the kernel (bridges, router namespaces,
    /// DHCP, floating IPs; docs/network.md "Dataplane"): `auto` runs it when
    /// serve has CAP_NET_ADMIN (root) and /dev/net/tun exists; `false`
    /// leaves the host's network alone (ports go ACTIVE when bound, guests
    /// have no NICs). `--dataplane`
    /// alone is `true`.
    #[arg(
        long,
        env = "YUNHE_DATAPLANE",
        value_enum,
        default_value_t = DataplaneMode::Auto,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub dataplane: DataplaneMode,
    /// Make DevStack's networks on the first start of a state dir: `public`
    /// (external, 172.24.4.0/24) and, for the admin project, `private`
    /// (10.0.0.0/26) with router `router1`. Never again once made (or
    /// deleted), nor when the state file has networks. Default: on when
    /// the dataplane is.
    #[arg(long, env = "YUNHE_INITIAL_NETWORKS", action = clap::ArgAction::Set)]
    pub initial_networks: Option<bool>,
    /// Bridged external mode: external flat networks on physical network
    /// `public` (the first start's `public`) are this interface's LAN, and
    /// floating IPs are addresses on it. A bridge (as Proxmox's vmbr0) is
    /// used as it is; a plain interface is put on a bridge of yunhe's and
    /// must hold no address of the host's. Needs --external-cidr,
    /// --external-gateway and --external-pool.
    #[arg(long, env = "YUNHE_EXTERNAL_INTERFACE", requires_all = ["external_cidr", "external_gateway", "external_pool"])]
    pub external_interface: Option<String>,
    /// The LAN of --external-interface (e.g. 192.168.1.0/24).
    #[arg(long, env = "YUNHE_EXTERNAL_CIDR", requires = "external_interface")]
    pub external_cidr: Option<String>,
    /// The LAN's router (routers' default route), e.g. 192.168.1.1.
    #[arg(long, env = "YUNHE_EXTERNAL_GATEWAY", requires = "external_interface")]
    pub external_gateway: Option<String>,
    /// Addresses of the LAN yunhe may hand out to router gateways and
    /// floating IPs, START-END (none of them in use or in the LAN's DHCP pool).
    #[arg(long, env = "YUNHE_EXTERNAL_POOL", requires = "external_interface")]
    pub external_pool: Option<String>,
    /// Turn the image cache and its API (/v2/cache) off.
    #[arg(long, env = "YUNHE_NO_IMAGE_CACHE")]
    pub no_image_cache: bool,
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

/// `serve --dataplane`: on, off, or on when the host allows it.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneMode {
    Auto,
    True,
    False,
}

/// Why `--dataplane auto` cannot run the dataplane here, or none.
fn dataplane_unavailable() -> Option<&'static str> {
    // CAP_NET_ADMIN is bit 12 of the effective set.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if effective & (1 << 12) == 0 {
        return Some("serve lacks CAP_NET_ADMIN (not root)");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist (modprobe tun)");
    }
    None
}

/// Authentication limits of `yunhe serve` (Keystone's lockout options, rate
/// limits on password checks, the Argon2 pool).
#[derive(clap::Args, Debug, Clone)]
pub struct AuthArgs {
    /// Failed password checks in a row that lock a user (Keystone's
    /// lockout_failure_attempts; its recommended 6). 0 turns lockout off.
    #[arg(long, env = "YUNHE_LOCKOUT_FAILURE_ATTEMPTS", default_value_t = 6)]
    pub lockout_failure_attempts: u32,
    /// Seconds a locked user stays locked (Keystone's lockout_duration).
    /// 0 keeps it locked until an admin updates the user.
    #[arg(long, env = "YUNHE_LOCKOUT_DURATION", default_value_t = 1800)]
    pub lockout_duration: u64,
    /// Passwords a self-service change may not reuse, the current one
    /// included (Keystone's unique_last_password_count). 0: no history check.
    #[arg(long, env = "YUNHE_UNIQUE_LAST_PASSWORD_COUNT", default_value_t = 0)]
    pub unique_last_password_count: u32,
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
            unique_last_password_count: self.unique_last_password_count,
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
