//! Saving a running VM (Firecracker's `persist`): every vCPU parked with its state, the
//! irqchips, PIT and clock, the serial port, each device and guest memory, written as
//! [`super::snapshot`] lays them out. Restoring is building from that state
//! ([`super::vm::Vm::new`] with a snapshot).

use std::path::Path;

use super::bus::lock;
use super::snapshot::{self, SnapshotError, VmState};
use super::vm::RunningVm;

impl RunningVm {
    /// Saves the whole VM into `dir` (pausing it; it stays paused). Each parked vCPU left its
    /// state in its slot when it parked and clears it when it runs again, so a VM paused
    /// before the save (the `pause` command) is saved too. (Clearing the slots here, as
    /// before, failed every save of a VM already paused: its parked vCPUs never refilled them.)
    pub fn save(&self, dir: &Path) -> Result<(), SnapshotError> {
        self.pause();
        let mut vcpus = Vec::new();
        for s in &self.saved {
            match lock(s).take() {
                Some(Ok(v)) => vcpus.push(v),
                Some(Err(e)) => return Err(SnapshotError::Corrupt(format!("vCPU state: {e}"))),
                None => return Err(SnapshotError::NotPaused),
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| SnapshotError::Write(dir.display().to_string(), e))?;
        let (irqchips, pit, clock) = snapshot::capture_vm(&self.vm)?;
        let clock_read_at = snapshot::unix_now_ns();
        let serial = snapshot::SerialSnapshot::from_state(&lock(&self.serial).state());
        // Every device stays locked until guest memory is written: the device thread keeps
        // serving backends while the vCPUs are parked (a tap's frames go into the RX ring), and
        // a frame delivered between a device's saved queue positions and the memory dump would
        // leave the two disagreeing. Interrupts raised between the vCPUs parking and here are
        // not in the saved APICs; the restored devices raise them again
        // (`VirtioPciDevice::resume_after_restore`).
        let root = lock(&self.pci);
        // The bus as it is now (hot-added and removed devices included), in the factory's
        // order so that restoring rebuilds it: see `current_config`.
        let (config, order) = self.current_config(&root);
        let slots: Vec<_> = order
            .iter()
            .filter_map(|(_, slot)| root.slots().find(|(s, _)| s == slot).map(|(_, s)| s))
            .collect();
        let quiesced: Vec<_> = slots.iter().map(|s| lock(&s.device)).collect();
        let devices = quiesced.iter().map(|d| d.save_state()).collect();
        let memory = snapshot::save_memory(&self.mem, dir)?;
        drop(quiesced);
        drop(root);
        let state = VmState {
            format: snapshot::FORMAT.into(),
            version: snapshot::VERSION,
            config,
            placement: order,
            vcpus,
            irqchips,
            pit,
            clock,
            saved_at_unix_ns: clock_read_at,
            serial,
            devices,
            memory,
        };
        snapshot::write_state(dir, &state)
    }
}
