//! The guests built into yunhe (firmware/, built by build.rs and embedded as PVH ELFs).

/// The embedded probe guest (firmware/, built by build.rs).
pub static PROBE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.elf"));
/// The minimal PVH guest of the start-up benchmark (firmware/src/hello.rs).
pub static HELLO_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.elf"));
/// The echo guest (firmware/src/echo.rs): prints a ready line, echoes serial
/// input and powers off on the ACPI power button; idles in `hlt`.
pub static ECHO_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo.elf"));
