//! Legacy platform devices on port I/O: 16550 serial, i8042 (reset line), CMOS
//! RTC, the boot-timer port and the ACPI sleep/GED registers.

pub mod acpi_pm;
pub mod boot_timer;
pub mod i8042;
pub mod rtc;
pub mod serial;

/// Something a device asks the VMM to do with the whole VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest powered off (ACPI S5) or the VM was stopped.
    PowerOff,
    /// The guest asked for a reset (i8042, ACPI reset register, triple fault).
    Reset,
    /// A vCPU hit something the VMM cannot handle.
    Crash(String),
}

/// Where devices and vCPUs send [`VmEvent`]s.
pub type EventSender = std::sync::mpsc::Sender<VmEvent>;
