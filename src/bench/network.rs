//! `yunhe bench network` (issue 12's benchmarks), each figure beside a baseline measured in the
//! same run:
//! * port create p50 (`POST /network/v2.0/ports`), against an authenticated GET of the network;
//! * listing 1,000 ports, against the same list with `limit=1`;
//! * server create with a network to ACTIVE (echo guest), against the same with `networks: none`
//!   (needs /dev/kvm; serve runs without its dataplane here, as every bench does, so the port is
//!   made and bound but no tap: the lab measures the wire);
//! * the DHCP server's DISCOVER → OFFER time on a veth pair in a namespace of the bench's own,
//!   against a plain frame echo over the same pair (needs root);
//! * the virtio-net packet path without KVM, against a copy of the same bytes.
//!
//! Guest-to-guest TCP throughput against QEMU's virtio-net needs real guests: that one belongs to
//! the lab and is not measured here.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::compute::{Api, clean_up};
use super::harness::{BenchError, admin_token, median, self_exe, start_server_with};

const PORTS: usize = 1000;
const BOOTS: usize = 5;
const DHCP_ROUNDS: usize = 500;

pub fn run() -> Result<(), BenchError> {
    let exe = self_exe()?;
    let state_dir =
        std::env::temp_dir().join(format!("yunhe-bench-network-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    println!("yunhe bench network ({})", exe.display());
    let result = api_figures(&exe, &state_dir);
    clean_up(&state_dir);
    result?;
    dhcp_figure();
    let net = crate::vmm::devices::virtio::net_bench::bench_net_path_for(Duration::from_secs(1));
    println!(
        "virtio-net {FRAME}-byte frames, 1 core, no KVM: TX {:.0} packets/s, RX {:.0} packets/s of CPU time (goal >= 1,000,000)\n          \
         baseline copy of header and frame: {:.0} copies/s; ratios {:.3} and {:.3} ({} errors)",
        net.tx_packets_per_sec,
        net.rx_packets_per_sec,
        net.memcpy_per_sec,
        net.tx_packets_per_sec / net.memcpy_per_sec,
        net.rx_packets_per_sec / net.memcpy_per_sec,
        net.errors,
        FRAME = crate::vmm::devices::virtio::net_bench::FRAME_LEN,
    );
    Ok(())
}

/// Percentile `q` (0..1) of `values` (sorted here).
fn percentile(mut values: Vec<f64>, q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 * q) as usize).min(values.len().saturating_sub(1));
    values.get(at).copied().unwrap_or(f64::NAN)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn api_figures(exe: &std::path::Path, state_dir: &std::path::Path) -> Result<(), BenchError> {
    // The per-user API rate limit would answer the 1,000 port creates with 429s.
    let (server, _) = start_server_with(exe, state_dir, &["--api-rate-limit", "0"])?;
    let api = Api {
        token: admin_token(&server)?,
        server: &server,
    };
    let expect = |what: &str, status: u16, want: u16, body: &Value| {
        if status == want {
            Ok(())
        } else {
            Err(BenchError::Server(format!("{what}: {status} {body}")))
        }
    };
    let (status, _, net) = api.call(
        "POST",
        "/network/v2.0/networks",
        Some(&json!({"network": {"name": "bench-net"}})),
    )?;
    expect("network create", status, 201, &net)?;
    let net_id = net["network"]["id"].as_str().unwrap_or("").to_string();
    let project = net["network"]["project_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (status, _, subnet) = api.call(
        "POST",
        "/network/v2.0/subnets",
        Some(&json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.64.0.0/16"}})),
    )?;
    expect("subnet create", status, 201, &subnet)?;
    let (status, _, quota) = api.call(
        "PUT",
        &format!("/network/v2.0/quotas/{project}"),
        Some(&json!({"quota": {"port": -1}})),
    )?;
    expect("port quota", status, 200, &quota)?;

    // Baseline: an authenticated read of the network.
    let mut base = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let (status, _, body) =
            api.call("GET", &format!("/network/v2.0/networks/{net_id}"), None)?;
        expect("network show", status, 200, &body)?;
        base.push(ms(t));
    }
    let base = median(base);
    let mut create = Vec::with_capacity(PORTS);
    for i in 0..PORTS {
        let body = json!({"port": {"network_id": net_id, "name": format!("bench-{i}")}});
        let t = Instant::now();
        let (status, _, reply) = api.call("POST", "/network/v2.0/ports", Some(&body))?;
        create.push(ms(t));
        expect("port create", status, 201, &reply)?;
    }
    let p50 = percentile(create.clone(), 0.5);
    let p99 = percentile(create, 0.99);
    println!(
        "port      POST /network/v2.0/ports: p50 {p50:.2} ms, p99 {p99:.2} ms ({PORTS} ports; goal p50 <= 5 ms)\n          \
         baseline GET /network/v2.0/networks/{{id}}: {base:.2} ms; ratio {:.1}x",
        p50 / base
    );

    let mut full = Vec::new();
    let mut one = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        let (took, body) = api.raw_get("/network/v2.0/ports")?;
        full.push(took);
        count = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["ports"].as_array().map(Vec::len))
            .unwrap_or(0);
        let (took, _) = api.raw_get("/network/v2.0/ports?limit=1")?;
        one.push(took);
    }
    let full = median(full);
    let one = median(one);
    println!(
        "list      GET /network/v2.0/ports with {count} ports: {full:.1} ms (median of 5; goal <= 50 ms)\n          \
         baseline the same with limit=1: {one:.1} ms; ratio {:.1}x",
        full / one
    );

    if !std::path::Path::new("/dev/kvm").exists() {
        println!("boot      skipped (no /dev/kvm)");
        return Ok(());
    }
    let kernel = api.upload(
        json!({"name": "bench-echo-kernel", "disk_format": "aki", "container_format": "aki"}),
        crate::vmm::guests::ECHO_ELF,
    )?;
    let image = api.upload(
        json!({"name": "bench-echo", "disk_format": "raw", "container_format": "bare", "kernel_id": kernel}),
        &vec![0u8; 1 << 20],
    )?;
    let boot = |name: String, networks: Value| -> Result<f64, BenchError> {
        let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": "42", "networks": networks}});
        let t = Instant::now();
        let (status, _, reply) = api.call("POST", "/compute/v2.1/servers", Some(&body))?;
        expect("server create", status, 202, &reply)?;
        let id = reply["server"]["id"].as_str().unwrap_or("").to_string();
        loop {
            let (_, _, shown) = api.call("GET", &format!("/compute/v2.1/servers/{id}"), None)?;
            match shown["server"]["status"].as_str() {
                Some("ACTIVE") => break,
                Some("ERROR") => {
                    return Err(BenchError::Server(format!(
                        "server {id} ended ERROR: {}",
                        shown["server"]["fault"]
                    )));
                }
                _ if t.elapsed() > Duration::from_secs(60) => {
                    return Err(BenchError::Server(format!(
                        "server {id} not ACTIVE in 60 s"
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let took = ms(t);
        let (status, _, body) = api.call("DELETE", &format!("/compute/v2.1/servers/{id}"), None)?;
        expect("server delete", status, 204, &body)?;
        Ok(took)
    };
    let mut with_net = Vec::new();
    let mut without = Vec::new();
    for i in 0..BOOTS {
        without.push(boot(format!("bench-none-{i}"), json!("none"))?);
        with_net.push(boot(format!("bench-net-{i}"), json!([{"uuid": net_id}]))?);
    }
    let with_net = median(with_net);
    let without = median(without);
    println!(
        "boot      POST /servers with a network to ACTIVE (echo guest, m1.nano; no dataplane: port made and bound, no tap): {with_net:.0} ms (median of {BOOTS}; goal <= 1000 ms)\n          \
         baseline the same with networks \"none\": {without:.0} ms; ratio {:.2}x",
        with_net / without
    );
    drop(server);
    Ok(())
}

fn dhcp_figure() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("dhcp      skipped (needs root for a network namespace of its own)");
        return;
    }
    match crate::dataplane::bench::dhcp_offer_latency(DHCP_ROUNDS) {
        Ok(r) => println!(
            "dhcp      DISCOVER to OFFER from yunhe's DHCP server (veth pair in a namespace): p50 {:.3} ms, p99 {:.3} ms ({} rounds; goal <= 5 ms)\n          \
             baseline echo of the same frame over the same pair: {:.3} ms; ratio {:.1}x",
            r.offer_p50_ms,
            r.offer_p99_ms,
            r.rounds,
            r.echo_p50_ms,
            r.offer_p50_ms / r.echo_p50_ms
        ),
        Err(e) => println!("dhcp      failed: {e}"),
    }
}
