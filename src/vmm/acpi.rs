//! ACPI tables (acpi_tables): RSDP, XSDT, a hardware-reduced FADT with sleep
//! control/status registers, MADT, MCFG and a DSDT with the PCI host bridge,
//! COM1, and a power button behind a Generic Event Device.

use super::memory::GuestMemoryMmap;
use acpi_tables::Aml;
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress};

use super::layout::*;

const OEM_ID: [u8; 6] = *b"YUNHE ";
const OEM_TABLE_ID: [u8; 8] = *b"YUNHEVM ";
const OEM_REVISION: u32 = 1;

/// Errors while writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The ACPI tables ({0} bytes) do not fit their area
    #[error("the ACPI tables ({0} bytes) do not fit their area")]
    TooBig(u64),
    /// Writing the ACPI tables into guest memory failed: {0}
    #[error("writing the ACPI tables into guest memory failed: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// AML already encoded (the hotplug controller's part of `PCI0`).
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn bytes_of(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn io_gas(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// The DSDT's AML.
pub fn dsdt_aml() -> Vec<u8> {
    let mut out = Vec::new();

    // \_S5: the sleep type the guest writes into the sleep control register.
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&SLEEP_TYPE_S5, &0u8, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut out);

    // The PCI host bridge, with the hotplug slots of bus 0 (devices::hotplug).
    let mut hotplug = Vec::new();
    super::devices::hotplug::pci0_aml(&mut hotplug);
    let hotplug = RawAml(hotplug);
    aml::Device::new(
        "_SB_.PCI0".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08")),
            &aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03")),
            &aml::Name::new("_ADR".into(), &aml::ZERO),
            &aml::Name::new("_SEG".into(), &aml::ZERO),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_BBN".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::AddressSpace::new_bus_number(0x0u16, 0x0u16),
                    &aml::IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8),
                    &aml::AddressSpace::new_io(0x0u16, 0x0cf7u16, None),
                    &aml::AddressSpace::new_io(0x0d00u16, 0xffffu16, None),
                    &aml::AddressSpace::new_memory(
                        aml::AddressSpaceCacheable::NotCacheable,
                        true,
                        PCI_MMIO_START as u32,
                        (PCI_MMIO_START + PCI_MMIO_SIZE - 1) as u32,
                        None,
                    ),
                ]),
            ),
            &hotplug,
        ],
    )
    .to_aml_bytes(&mut out);

    // The ECAM, reserved as a motherboard resource so Linux trusts the MCFG.
    aml::Device::new(
        "_SB_.MBRD".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C02")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::Memory32Fixed::new(false, ECAM_START as u32, ECAM_SIZE as u32),
                    &aml::IO::new(HOTPLUG_PORT, HOTPLUG_PORT, 1, 16),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut out);

    // COM1.
    aml::Device::new(
        "_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::Interrupt::new(true, true, false, false, COM1_GSI),
                    &aml::IO::new(COM1_PORT, COM1_PORT, 1, 8),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut out);

    // The CMOS RTC. Without it Linux registers its legacy "rtc_cmos" platform device, whose
    // hard-wired IRQ 8 does not exist in hardware-reduced ACPI (no 8259s), so rtc_cmos fails
    // with -EINVAL and the guest has no /dev/rtc. Declared here with its ports and no
    // interrupt (the RTC raises none), rtc_cmos binds through PNP and polls instead.
    aml::Device::new(
        "_SB_.RTC_".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0B00")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::IO::new(RTC_PORT, RTC_PORT, 1, 2)]),
            ),
        ],
    )
    .to_aml_bytes(&mut out);

    // The power button and the Generic Event Device that signals it.
    aml::Device::new(
        "_SB_.PWRB".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
        ],
    )
    .to_aml_bytes(&mut out);
    aml::Device::new(
        "_SB_.GED_".into(),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0013"),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::Interrupt::new(
                    true, true, false, false, GED_GSI,
                )]),
            ),
            &aml::OpRegion::new(
                "GDST".into(),
                aml::OpRegionSpace::SystemIO,
                &(GED_PORT as usize),
                &1usize,
            ),
            &aml::Field::new(
                "GDST".into(),
                aml::FieldAccessType::Byte,
                aml::FieldLockRule::NoLock,
                aml::FieldUpdateRule::WriteAsZeroes,
                vec![aml::FieldEntry::Named(*b"GDAT", 8)],
            ),
            &aml::Method::new(
                "_EVT".into(),
                1,
                true,
                vec![
                    &aml::Store::new(&aml::Local(0), &aml::Path::new("GDAT")),
                    &aml::And::new(&aml::Local(1), &aml::Local(0), &1u8),
                    &aml::If::new(
                        &aml::Equal::new(&aml::Local(1), &1u8),
                        vec![&aml::Notify::new(&aml::Path::new("\\_SB_.PWRB"), &0x80u8)],
                    ),
                    &aml::And::new(&aml::Local(1), &aml::Local(0), &2u8),
                    &aml::If::new(
                        &aml::Equal::new(&aml::Local(1), &2u8),
                        vec![&aml::MethodCall::new("\\_SB_.PCI0.PCNT".into(), vec![])],
                    ),
                ],
            ),
        ],
    )
    .to_aml_bytes(&mut out);
    out
}

/// All tables, laid out from [`ACPI_START`]: `(address, bytes)` pairs; the RSDP is first.
pub fn build_tables(cpus: u8) -> Vec<(u64, Vec<u8>)> {
    let mut next = ACPI_START + 64; // the RSDP (36 bytes) sits at ACPI_START
    let mut place = |len: usize| {
        let at = next;
        next = (next + len as u64 + 15) & !15;
        at
    };

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&dsdt_aml());
    let dsdt = dsdt.as_slice().to_vec();
    let dsdt_addr = place(dsdt.len());

    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.reset_reg = io_gas(I8042_COMMAND_PORT);
    fadt.reset_value = 0xfe;
    fadt.sleep_control_reg = io_gas(SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_gas(SLEEP_STATUS_PORT);
    // No VGA, no CMOS RTC alarm quirks, MSI is fine, no ASPM.
    fadt.iapc_boot_arch = (1u16 << 2 | 1 << 4).into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"YUNHEVMM").into();
    let fadt = bytes_of(&fadt.finalize());
    let fadt_addr = place(fadt.len());

    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR as u32),
    );
    for cpu in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(cpus, IOAPIC_ADDR as u32, 0));
    let madt = bytes_of(&madt);
    let madt_addr = place(madt.len());

    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(ECAM_START, 0, 0, 0);
    let mcfg = bytes_of(&mcfg);
    let mcfg_addr = place(mcfg.len());

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for a in [fadt_addr, madt_addr, mcfg_addr] {
        xsdt.add_entry(a);
    }
    let xsdt = bytes_of(&xsdt);
    let xsdt_addr = place(xsdt.len());

    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));
    vec![
        (ACPI_START, rsdp),
        (xsdt_addr, xsdt),
        (fadt_addr, fadt),
        (madt_addr, madt),
        (mcfg_addr, mcfg),
        (dsdt_addr, dsdt),
    ]
}

/// Writes the tables; returns the RSDP address.
pub fn write_tables(mem: &GuestMemoryMmap, cpus: u8) -> Result<u64, AcpiError> {
    let tables = build_tables(cpus);
    for (addr, bytes) in &tables {
        let end = addr + bytes.len() as u64;
        // The last 16 bytes are the reset vector's (boot::RESET_VECTOR).
        if end > super::boot::RESET_VECTOR {
            return Err(AcpiError::TooBig(end - ACPI_START));
        }
        mem.write_slice(bytes, GuestAddress(*addr))?;
    }
    Ok(ACPI_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(t: &[u8]) -> bool {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_are_well_formed() {
        let tables = build_tables(4);
        let (rsdp_addr, rsdp) = &tables[0];
        assert_eq!(*rsdp_addr, ACPI_START);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]));
        assert!(checksum_ok(rsdp));
        for (_, t) in &tables[1..] {
            let len = u32::from_le_bytes(t[4..8].try_into().expect("4 bytes")) as usize;
            assert_eq!(len, t.len(), "{}", String::from_utf8_lossy(&t[..4]));
            assert!(checksum_ok(t), "{}", String::from_utf8_lossy(&t[..4]));
        }
        let fadt = &tables
            .iter()
            .find(|(_, t)| &t[..4] == b"FACP")
            .expect("FADT")
            .1;
        // Sleep control register: SystemIO at offset 244, port at 248.
        assert_eq!(fadt[244], 1);
        assert_eq!(
            u64::from_le_bytes(fadt[248..256].try_into().expect("8")),
            SLEEP_CONTROL_PORT as u64
        );
        // HW_REDUCED_ACPI flag.
        let flags = u32::from_le_bytes(fadt[112..116].try_into().expect("4"));
        assert_ne!(flags & (1 << 20), 0);
    }

    /// Regression (lab: `rtc_cmos: probe of rtc_cmos failed with error -22` on Debian's
    /// kernels): the DSDT declares the CMOS RTC (PNP0B00) with its two ports and no IRQ.
    #[test]
    fn dsdt_declares_the_rtc_without_an_irq() {
        let aml = dsdt_aml();
        // EISA id PNP0B00, compressed: 0x41d00b00 as bytes 41 d0 0b 00.
        let id = [0x0c, 0x41, 0xd0, 0x0b, 0x00];
        let at = aml
            .windows(id.len())
            .position(|w| w == id)
            .expect("PNP0B00 in the DSDT");
        // Its _CRS: an I/O port descriptor (0x47) for 0x70..0x70, length 2, then the end tag,
        // with no IRQ descriptor (0x22/0x23 or extended 0x89) in between.
        let io = [0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02, 0x79];
        let crs = aml[at..]
            .windows(io.len())
            .position(|w| w == io)
            .expect("the RTC's I/O resource");
        assert!(crs < 64, "the I/O resource belongs to the RTC device");
    }

    /// Disassembles every table with acpica-tools' `iasl -d` when it is installed.
    #[test]
    fn tables_disassemble_with_iasl() {
        if std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: iasl (acpica-tools) is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("yunhe-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        for (_, t) in build_tables(2).iter().skip(1) {
            let name = String::from_utf8_lossy(&t[..4]).to_lowercase();
            let path = dir.join(format!("{name}.dat"));
            std::fs::write(&path, t).expect("write table");
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&path)
                .current_dir(&dir)
                .output()
                .expect("run iasl");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "iasl -d {name}: {text}");
            assert!(!text.contains("Error"), "iasl -d {name}: {text}");
            let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).expect("dsl");
            assert!(!dsl.contains("**** Unknown"), "{name}: {dsl}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod hotplug_tests {
    use super::*;

    /// The DSDT's hotplug AML, disassembled by acpica-tools' `iasl -d` when it is installed:
    /// every slot device with _ADR, _SUN and _EJ0, PCNT's two DVNT calls, and the GED calling
    /// PCNT on its PCI-hotplug bit.
    #[test]
    fn dsdt_hotplug_aml_disassembles() {
        let aml = dsdt_aml();
        let evt_calls_pcnt = [
            b'\\', 0x2f, 0x03, b'_', b'S', b'B', b'_', b'P', b'C', b'I', b'0',
        ];
        assert!(
            aml.windows(evt_calls_pcnt.len())
                .any(|w| w == evt_calls_pcnt)
        );
        if std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: iasl (acpica-tools) is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("yunhe-hp-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let dsdt = &build_tables(1)
            .into_iter()
            .find(|(_, t)| &t[..4] == b"DSDT")
            .expect("DSDT")
            .1;
        std::fs::write(dir.join("dsdt.dat"), dsdt).expect("write");
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg("dsdt.dat")
            .current_dir(&dir)
            .output()
            .expect("iasl");
        assert!(out.status.success());
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).expect("dsl");
        let _ = std::fs::remove_dir_all(&dir);
        let compact: String = dsl.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            "OperationRegion (PCST, SystemIO, 0xAE00, 0x10)",
            "Method (PCEJ, 1, Serialized)",
            "B0EJ = (One << Arg0)",
            "Device (S001)",
            "Device (S031)",
            "Name (_ADR, 0x001F0000)",
            "Name (_SUN, 0x1F)",
            "Method (_EJ0, 1, NotSerialized)",
            "PCEJ (_SUN)",
            "Notify (S031, Arg1)",
            "DVNT (PCIU, One)",
            "DVNT (PCID, 0x03)",
            "\\_SB.PCI0.PCNT ()",
        ] {
            assert!(compact.contains(want), "{want} missing in:\n{dsl}");
        }
    }
}
