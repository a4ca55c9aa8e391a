//! yunhe (云盒): one static binary that is a small OpenStack cloud.
//!
//! `yunhe serve` is the control plane (Keystone, Nova, Glance, Neutron and
//! Cinder APIs on one port, one SQLite state file, the dashboard); `yunhe vmm`
//! is the per-instance virtual machine monitor it re-executes; `yunhe vm run`
//! runs one VM in the foreground; `yunhe selftest` checks the host.

mod bench;
mod cli;
mod compute;
mod dataplane;
mod db;
mod events;
mod http;
mod identity;
mod image;
mod network;
mod policy;
mod server;
mod server_events;
mod tls;
mod vmm;
mod volume;
mod web;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
