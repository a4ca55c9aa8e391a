//! Properties of the shipped binary itself.

mod support;

use serde_json::json;
use support::{ADMIN_PASSWORD, Server};

/// The release binary needs nothing at run time but a kernel: no ELF
/// interpreter (PT_INTERP) and no dynamic section (PT_DYNAMIC).
#[test]
fn the_binary_is_statically_linked() {
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_yunhe")).expect("read binary");
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(bytes[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16_at(0x36) as usize;
    let phnum = u16_at(0x38) as usize;
    for i in 0..phnum {
        let kind = u32_at(phoff + i * phentsize);
        assert_ne!(
            kind, 3,
            "PT_INTERP present: the binary is dynamically linked"
        );
        assert_ne!(
            kind, 2,
            "PT_DYNAMIC present: the binary is dynamically linked"
        );
    }
}

#[test]
fn version_and_help_answer() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yunhe"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("yunhe "));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_yunhe"))
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--state-dir",
        "--listen",
        "--public-url",
        "YUNHE_LISTEN",
        "--dataplane",
        "--initial-networks",
    ] {
        assert!(text.contains(flag), "serve --help mentions {flag}");
    }
}

/// Passwords sent to the server never reach its log, even at debug level.
#[test]
fn no_password_reaches_the_log() {
    let log = std::env::temp_dir().join(format!("yunhe-log-{}.txt", std::process::id()));
    {
        let server = Server::start_logging_to(&log);
        let admin = server.admin_token();
        let user = server.request(
            "POST",
            "/identity/v3/users",
            Some(&admin),
            Some(&json!({"user": {"name": "carol", "password": "Very-Secret-77"}})),
        );
        assert_eq!(user.status, 201);
        assert_eq!(server.token("carol", "Very-Secret-77", None).status, 201);
        assert_eq!(server.token("carol", "Wrong-Secret-78", None).status, 401);
    }
    let text = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    assert!(!text.is_empty(), "the debug log has content");
    for secret in [ADMIN_PASSWORD, "Very-Secret-77", "Wrong-Secret-78"] {
        assert!(!text.contains(secret), "{secret} leaked into the log");
    }
}
