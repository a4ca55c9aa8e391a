//! Builds the freestanding guest code in firmware/ (the probe, hello and echo
//! guests) with its own target dir and flags, and exposes it to the main crate
//! through OUT_DIR.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let fw_dir = manifest_dir.join("firmware");
    println!("cargo:rerun-if-changed=firmware/src");
    println!("cargo:rerun-if-changed=firmware/Cargo.toml");
    println!("cargo:rerun-if-changed=firmware/probe.ld");

    let script = fw_dir.join("probe.ld");
    // The guest runs under an instruction emulator that has no SSE: keep the
    // code to general-purpose registers.
    let flags = [
        "-Crelocation-model=static".to_string(),
        "-Ccode-model=kernel".to_string(),
        "-Ctarget-feature=-sse,-sse2,-sse3,-ssse3,-sse4.1,-sse4.2,-avx,-avx2".to_string(),
        "-Clink-arg=-nostartfiles".to_string(),
        "-Clink-arg=-nostdlib".to_string(),
        "-Clink-arg=-static".to_string(),
        format!("-Clink-arg=-Wl,-T{}", script.display()),
        "-Clink-arg=-Wl,--build-id=none".to_string(),
    ];
    let target_dir = out_dir.join("firmware-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&fw_dir)
        .args(["build", "--release", "--quiet", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_PROFILE_RELEASE_STRIP",
    ] {
        cmd.env_remove(var);
    }
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => panic!("cannot run cargo for firmware/: {e}"),
    };
    if !status.success() {
        panic!("building firmware/ failed: {status}");
    }
    for name in ["probe", "hello", "echo"] {
        let built = target_dir.join("release").join(name);
        let dest = out_dir.join(format!("{name}.elf"));
        if let Err(e) = std::fs::copy(&built, &dest) {
            panic!("cannot copy {}: {e}", built.display());
        }
    }
}
