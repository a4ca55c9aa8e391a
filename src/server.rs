//! `yunhe serve`: the control plane. One HTTP port serves every OpenStack
//! service below its own path, the dashboard at `/`, and `/healthz`.

use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::cli::ServeArgs;
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
    /// The async runtime could not start or the server failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
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
];

pub fn serve_main(args: ServeArgs) -> ExitCode {
    let started = Instant::now();
    init_logging(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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

/// Builds the whole HTTP application for a state file (also used by tests).
pub fn app(identity: Arc<IdentityState>) -> Router {
    let public_url = identity.public_url.clone();
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/identity/",
            get(identity::root_versions).with_state(identity.clone()),
        )
        .nest("/identity", identity::router(identity.clone()))
        .merge(crate::compute::router(identity.clone()))
        .merge(crate::image::router(identity.clone()))
        .merge(crate::network::router(&public_url))
        .merge(crate::volume::router(&public_url))
        .merge(crate::web::router())
        .layer(axum::middleware::from_fn(crate::http::request_id))
}

async fn serve(mut args: ServeArgs, started: Instant) -> Result<(), ServeError> {
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

    let db_path = state_dir.join("yunhe.db");
    let (db, report) = {
        let state_dir = state_dir.clone();
        let public_url = public_url.clone();
        let password = args.admin_password.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ServeError> {
            let db = Db::open(&db_path)?;
            let report =
                bootstrap::run(&db, &state_dir, &public_url, password.as_deref(), CATALOG)?;
            Ok((db, report))
        })
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??
    };
    crate::compute::configure(crate::compute::ComputeConfig {
        ratios: crate::compute::AllocationRatios {
            cpu: args.cpu_allocation_ratio,
            ram: args.ram_allocation_ratio,
            disk: args.disk_allocation_ratio,
        },
        force_config_drive: args.force_config_drive,
        jail_vmms: !args.no_jail,
    });
    let identity = IdentityState::new(db, public_url.clone(), args.token_ttl as i64);
    let app = app(identity);
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
    println!(
        "  try:         OS_CLIENT_CONFIG_FILE={} OS_CLOUD=yunhe openstack token issue",
        report.clouds_yaml.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("yunhe stopped");
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
