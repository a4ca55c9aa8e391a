//! `yunhe selftest`: boots the embedded probe guest with a scratch disk and a
//! virtio-rng and reports what worked, like `virt-host-validate`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SelftestArgs;
use super::console::Console;
use super::devices::legacy::VmEvent;
use super::vm::Vm;
use super::vmm_config::{BootSource, DiskConfig, VmConfig};

/// The scratch disk's size and content pattern (sector 0 holds a known text).
const SCRATCH_SIZE: u64 = 1 << 20;
/// How long the probe may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe guest reported.
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// Milliseconds from VM creation to the banner line.
    pub banner_ms: Option<f64>,
    /// Milliseconds to power-off.
    pub total_ms: f64,
    /// `pci ...` lines.
    pub pci: Vec<String>,
    /// Device result lines (`blk ...`, `net ...`, `rng ...`).
    pub devices: Vec<String>,
    /// Whether the guest powered off through ACPI.
    pub powered_off: bool,
    /// The whole console.
    pub console: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// FNV-1a of a buffer, as the probe computes it.
pub fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn scratch_disk() -> std::io::Result<(tempfile_path::TempPath, u32)> {
    let path = tempfile_path::TempPath::new("yunhe-selftest", ".img");
    let mut f = std::fs::File::create(&path.0)?;
    let mut sector = [0u8; 512];
    let text = b"yunhe selftest scratch disk";
    sector[..text.len()].copy_from_slice(text);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    f.write_all(&sector)?;
    f.set_len(SCRATCH_SIZE)?;
    Ok((path, fnv1a(&sector)))
}

/// Boots the probe with `config` and collects its report.
pub fn run_probe(mut config: VmConfig, echo: bool) -> ProbeReport {
    config.boot = BootSource::Probe;
    let start = Instant::now();
    let console = Arc::new(Console::new(None, echo));
    let mut report = ProbeReport::default();
    let running = match Vm::new(&config, console.clone(), super::virtio_devices, start, None)
        .and_then(|v| v.start())
    {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let event = running.wait_timeout(TIMEOUT);
    running.stop();
    report.total_ms = start.elapsed().as_secs_f64() * 1000.0;
    report.banner_ms = console
        .first_line_at()
        .map(|t| t.duration_since(start).as_secs_f64() * 1000.0);
    report.console = String::from_utf8_lossy(&console.recent()).into_owned();
    for line in report.console.lines() {
        if line.starts_with("pci ") {
            report.pci.push(line.to_string());
        } else if line.starts_with("blk ") || line.starts_with("net ") || line.starts_with("rng ") {
            report.devices.push(line.to_string());
        }
    }
    match event {
        Some(VmEvent::PowerOff) => report.powered_off = true,
        Some(VmEvent::Reset) => report.error = Some("the probe reset the VM".into()),
        Some(VmEvent::Crash(why)) => report.error = Some(why),
        None => {
            report.error = Some(format!(
                "the probe did not power off within {} s",
                TIMEOUT.as_secs()
            ))
        }
    }
    report
}

/// Small self-deleting temporary file path (no extra crate).
mod tempfile_path {
    use std::path::PathBuf;

    /// Removes the file when dropped.
    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn new(prefix: &str, suffix: &str) -> Self {
            let n: u64 = rand::random();
            TempPath(
                std::env::temp_dir().join(format!("{prefix}-{}-{n:x}{suffix}", std::process::id())),
            )
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

pub fn main(args: SelftestArgs) -> ExitCode {
    let t0 = Instant::now();
    println!("yunhe selftest");
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => println!("  /dev/kvm            ok"),
        Err(e) => {
            println!("  /dev/kvm            FAILED: {e}");
            eprintln!(
                "yunhe selftest: /dev/kvm is not usable ({e}). Enable virtualization (VT-x/AMD-V) \
                 in the firmware, load kvm_intel or kvm_amd, and give this user access to /dev/kvm."
            );
            return ExitCode::FAILURE;
        }
    }
    match kvm_ioctls::Kvm::new() {
        Ok(kvm) => println!("  KVM API             version {}", kvm.get_api_version()),
        Err(e) => {
            eprintln!("yunhe selftest: KVM is not usable: {e}");
            return ExitCode::FAILURE;
        }
    }
    let (disk, expected) = match scratch_disk() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("yunhe selftest: cannot create a scratch disk: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = VmConfig {
        boot: BootSource::Probe,
        initrd: None,
        cmdline: None,
        memory_mib: 64,
        cpus: 1,
        disks: vec![DiskConfig {
            path: disk.0.clone(),
            read_only: true,
            serial: None,
            fd: None,
            id: None,
        }],
        nets: Vec::new(),
        rng: true,
        console_log: None,
        log_boot_timer: false,
        huge_pages: false,
    };
    let report = run_probe(config, args.verbose);
    let mut ok = report.error.is_none() && report.powered_off;
    match report.banner_ms {
        Some(ms) => println!("  probe guest banner  {ms:.1} ms after VM creation"),
        None => {
            println!("  probe guest banner  MISSING");
            ok = false;
        }
    }
    for l in &report.pci {
        println!("  {l}");
    }
    let want = format!("fnv1a {expected:08x}");
    let mut saw_blk = false;
    let mut saw_rng = false;
    for l in &report.devices {
        println!("  {l}");
        if l.starts_with("blk ") {
            saw_blk = l.contains(&want);
        }
        if l.starts_with("rng ") {
            saw_rng = !l.contains("failed");
        }
    }
    if !saw_blk {
        println!("  virtio-blk          FAILED: expected sector 0 {want}");
        ok = false;
    }
    if !saw_rng {
        println!("  virtio-rng          FAILED");
        ok = false;
    }
    println!(
        "  ACPI power-off      {}",
        if report.powered_off { "ok" } else { "FAILED" }
    );
    if let Some(e) = &report.error {
        println!("  error               {e}");
        if !args.verbose {
            println!("  console:\n{}", report.console);
        }
    }
    println!(
        "selftest {} in {:.0} ms",
        if ok { "passed" } else { "FAILED" },
        t0.elapsed().as_secs_f64() * 1000.0
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
