//! `yunhe bench`: measurements printed as ratios against a named baseline
//! measured in the same run (and against the goals of the issues).
//!
//! Not a timed test: numbers depend on the machine. Run it on an idle host.

//!
//! Layout: [`harness`] starts a `yunhe serve` child and talks HTTP to it (shared by the
//! groups); [`control_plane`], [`compute`], [`network`], [`volume`], [`scale`] and [`auth`] are the groups that need a server;
//! the VMM group is `crate::vmm::bench`.

pub mod auth;
pub mod compute;
pub mod control_plane;
pub mod federation;
pub mod harness;
pub mod network;
pub mod scale;
pub mod volume;

use std::process::ExitCode;

/// Options of `yunhe bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which group to run.
    #[arg(value_enum, default_value = "all")]
    pub group: BenchGroup,
    /// Seconds of load for each throughput measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Seconds of the `scale` group's memory soak (its RSS is printed each minute).
    #[arg(long, default_value_t = 300)]
    pub soak_seconds: u32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum BenchGroup {
    /// Every group below.
    All,
    /// Start-up time, idle memory, API throughput and binary size.
    ControlPlane,
    /// VMM start-up against QEMU microvm, VMM memory overhead, virtio-blk request path.
    Vmm,
    /// Servers: POST latency, POST to ACTIVE, listing 1,000 servers, VMM memory per server.
    Compute,
    /// Ports: create latency, listing 1,000, server create with a network, DHCP answer time,
    /// the virtio-net packet path (issue 12).
    Network,
    /// Volumes: a blank 10 GiB create and a snapshot, against the backend's own file
    /// operations (issue 14).
    Volume,
    /// A wrong-password flood: serve's RSS and an unrelated write's p99 (issue 9).
    LoginFlood,
    /// Token issue for an OpenID Connect (federated) user beside password token issue.
    Federation,
    /// Issuing a trust-scoped token against a password token (issue 16).
    TrustToken,
    /// 100 servers: launch rates, serve's RSS and a soak, reads against /healthz
    /// (issue 17). Not part of `all`: it runs for minutes.
    Scale,
}

/// Runs the groups `args` names and prints their numbers.
pub fn bench_main(args: BenchArgs) -> ExitCode {
    let mut result = Ok(());
    if matches!(args.group, BenchGroup::All | BenchGroup::ControlPlane) {
        result = control_plane::run(args.seconds);
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::Compute) {
        result = compute::run();
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::Network) {
        result = network::run();
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::Volume) {
        result = volume::run();
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::LoginFlood) {
        result = auth::run(args.seconds);
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::Federation) {
        result = federation::run(200);
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::TrustToken) {
        result = auth::run_trust_token(args.seconds);
    }
    if result.is_ok() && args.group == BenchGroup::Scale {
        result = scale::run(args.seconds, args.soak_seconds);
    }
    if matches!(args.group, BenchGroup::All | BenchGroup::Vmm) {
        println!("yunhe bench vmm");
        for (name, line) in crate::vmm::bench::run_benchmarks() {
            println!("{name:<40} {line}");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yunhe bench: {e}");
            ExitCode::FAILURE
        }
    }
}
