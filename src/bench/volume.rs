//! `yunhe bench volume` (issue 14's benchmarks that need no guest), each figure beside a
//! baseline measured in the same run:
//! * a blank 10 GiB volume: `POST /volume/v3/{project}/volumes` until `GET` shows it
//!   `available`, against the backend making the same sparse file directly (the storage floor)
//!   and an authenticated volume `GET` (the API floor);
//! * a snapshot of a 10 GiB volume holding 256 MiB of data: `POST .../snapshots` until
//!   `available`, against the backend's own copy of the same file (a reflink where the
//!   filesystem has them: btrfs, XFS; otherwise a sparse copy of the data extents).
//!
//! The state directory is under `$TMPDIR` (default /tmp): point `TMPDIR` at a btrfs or XFS
//! mount to measure snapshots on a reflink filesystem. Attach-until-the-guest-sees-the-disk
//! and guest IOPS need a Linux guest: they are measured in the lab (docs/lab.md, "PCI hotplug"
//! and "Benchmark"), not here.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::compute::{Api, clean_up};
use super::harness::{BenchError, admin_token, median, self_exe, start_server_with};
use crate::volume::backend::{Backend, clone_file, reflink};

const ROUNDS: usize = 10;
const SIZE_GB: u64 = 10;
/// Data written into the snapshotted volume: 256 chunks of 1 MiB spread over its 10 GiB.
const DATA_CHUNKS: u64 = 256;

pub fn run() -> Result<(), BenchError> {
    let exe = self_exe()?;
    let state_dir = std::env::temp_dir().join(format!("yunhe-bench-volume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    println!("yunhe bench volume ({})", exe.display());
    let result = figures(&exe, &state_dir);
    clean_up(&state_dir);
    result
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn expect(what: &str, status: u16, want: u16, body: &Value) -> Result<(), BenchError> {
    if status == want {
        Ok(())
    } else {
        Err(BenchError::Server(format!("{what}: {status} {body}")))
    }
}

/// Polls `path` until its `key` object's status is `available`; the time since `since`.
fn until_available(
    api: &Api<'_>,
    path: &str,
    key: &str,
    since: Instant,
) -> Result<Duration, BenchError> {
    let deadline = since + Duration::from_secs(60);
    loop {
        let (status, _, body) = api.call("GET", path, None)?;
        expect("show", status, 200, &body)?;
        match body[key]["status"].as_str() {
            Some("available") => return Ok(since.elapsed()),
            Some("error") => return Err(BenchError::Server(format!("{path}: error: {body}"))),
            _ if Instant::now() > deadline => {
                return Err(BenchError::Server(format!(
                    "{path}: not available in 60 s: {body}"
                )));
            }
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// Whether `dir`'s filesystem takes reflinks (of a small file).
fn reflinks(dir: &Path) -> bool {
    let (a, b) = (dir.join("reflink-probe-a"), dir.join("reflink-probe-b"));
    let result = (|| -> std::io::Result<bool> {
        std::fs::write(&a, [7u8; 4096])?;
        Ok(reflink(
            &std::fs::File::open(&a)?,
            &std::fs::File::create(&b)?,
        ))
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    result.unwrap_or(false)
}

fn figures(exe: &Path, state_dir: &Path) -> Result<(), BenchError> {
    let (server, _) = start_server_with(exe, state_dir, &["--api-rate-limit", "0"])?;
    let api = Api {
        token: admin_token(&server)?,
        server: &server,
    };
    let (status, _, projects) = api.call("GET", "/identity/v3/auth/projects", None)?;
    expect("projects", status, 200, &projects)?;
    let project = projects["projects"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "admin"))
        .and_then(|p| p["id"].as_str())
        .ok_or_else(|| BenchError::Server(format!("no admin project: {projects}")))?
        .to_string();
    let base = format!("/volume/v3/{project}");
    let (status, _, quota) = api.call(
        "PUT",
        &format!("{base}/os-quota-sets/{project}"),
        Some(&json!({"quota_set": {"volumes": -1, "gigabytes": -1, "snapshots": -1}})),
    )?;
    expect("quota", status, 200, &quota)?;
    let volumes_dir = state_dir.join("volumes");
    let floor_dir = state_dir.join("bench-floor");
    std::fs::create_dir_all(&floor_dir).map_err(|e| BenchError::Io("bench directory", e))?;
    let floor = Backend::new(floor_dir.clone(), 1.0);
    let reflink = reflinks(&volumes_dir);

    // A blank 10 GiB volume, ROUNDS times; the floors alternate with it.
    let (mut api_ms, mut file_ms, mut get_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = Vec::new();
    for round in 0..ROUNDS {
        let t = Instant::now();
        let (status, _, body) = api.call(
            "POST",
            &format!("{base}/volumes"),
            Some(&json!({"volume": {"size": SIZE_GB, "name": format!("bench-{round}")}})),
        )?;
        expect("volume create", status, 202, &body)?;
        let id = body["volume"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        api_ms.push(ms(until_available(
            &api,
            &format!("{base}/volumes/{id}"),
            "volume",
            t,
        )?));
        let t = Instant::now();
        let (status, _, body) = api.call("GET", &format!("{base}/volumes/{id}"), None)?;
        get_ms.push(ms(t.elapsed()));
        expect("volume show", status, 200, &body)?;
        let t = Instant::now();
        floor
            .create_blank(&format!("floor-{round}"), SIZE_GB)
            .map_err(|e| BenchError::Io("the backend's blank file", e))?;
        file_ms.push(ms(t.elapsed()));
        ids.push(id);
    }
    let (api_ms, file_ms, get_ms) = (median(api_ms), median(file_ms), median(get_ms));
    println!(
        "volume create  10 GiB blank, POST to available: {api_ms:.2} ms median of {ROUNDS} (goal <= 20 ms)\n               \
         baselines: the backend's sparse file alone {file_ms:.2} ms ({:.1}x), an authenticated volume GET {get_ms:.2} ms ({:.1}x)",
        api_ms / file_ms,
        api_ms / get_ms,
    );

    // Snapshots of a 10 GiB volume with 256 MiB of data in it.
    let source = &ids[0];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(volumes_dir.join(format!("volume-{source}")))
        .map_err(|e| BenchError::Io("the volume's file", e))?;
    let chunk = vec![0x5au8; 1 << 20];
    let stride = (SIZE_GB << 30) / DATA_CHUNKS;
    for i in 0..DATA_CHUNKS {
        file.write_all_at(&chunk, i * stride)
            .map_err(|e| BenchError::Io("writing the volume's data", e))?;
    }
    file.sync_all()
        .map_err(|e| BenchError::Io("writing the volume's data", e))?;
    drop(file);
    let (mut snap_ms, mut copy_ms) = (Vec::new(), Vec::new());
    let source_file = volumes_dir.join(format!("volume-{source}"));
    let baseline_copy = |round: usize| -> Result<f64, BenchError> {
        let dest = floor_dir.join(format!("copy-{round}"));
        let t = Instant::now();
        clone_file(&source_file, &dest).map_err(|e| BenchError::Io("the backend's copy", e))?;
        let took = ms(t.elapsed());
        let _ = std::fs::remove_file(&dest);
        Ok(took)
    };
    for round in 0..ROUNDS {
        // The baseline first in even rounds, after in odd ones: neither side always finds
        // the other's writes still in flight.
        if round % 2 == 0 {
            copy_ms.push(baseline_copy(round)?);
        }
        let t = Instant::now();
        let (status, _, body) = api.call(
            "POST",
            &format!("{base}/snapshots"),
            Some(&json!({"snapshot": {"volume_id": source, "name": format!("bench-{round}")}})),
        )?;
        expect("snapshot create", status, 202, &body)?;
        let id = body["snapshot"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        snap_ms.push(ms(until_available(
            &api,
            &format!("{base}/snapshots/{id}"),
            "snapshot",
            t,
        )?));
        if round % 2 == 1 {
            copy_ms.push(baseline_copy(round)?);
        }
    }
    let (snap_ms, copy_ms) = (median(snap_ms), median(copy_ms));
    println!(
        "snapshot       10 GiB volume, 256 MiB of data, POST to available: {snap_ms:.2} ms median of {ROUNDS} \
         (goal <= 100 ms on a reflink filesystem; this one: {})\n               \
         baseline: the backend's copy of the same file alone {copy_ms:.2} ms ({:.1}x)",
        if reflink {
            "reflinks"
        } else {
            "no reflinks, sparse copies of the data"
        },
        snap_ms / copy_ms,
    );
    println!(
        "attach / IOPS  need a Linux guest: measured in the lab (docs/lab.md \"PCI hotplug\", \"Benchmark\")"
    );
    Ok(())
}
