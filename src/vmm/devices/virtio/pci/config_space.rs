//! PCI configuration space reads and writes of a [`VirtioPciDevice`]: BAR 0 programming,
//! the MSI-X control word and the virtio PCI configuration access window.

use super::{
    BarWriteOutcome, CAP_MSIX, CAP_PCI_CFG, CONFIG_SPACE_SIZE, ConfigWriteOutcome, InterruptState,
    MSIX_CTRL_ENABLE, MSIX_CTRL_FUNCTION_MASK, VirtioPciDevice, get_u16, get_u32, lock,
};

impl VirtioPciDevice {
    // ----- PCI configuration space -----

    /// Read PCI configuration space (`offset` within the function's 4-KiB ECAM window; bytes
    /// past the first 256 read as 0).
    pub fn config_read(&mut self, offset: u64, data: &mut [u8]) {
        let data_reg = (CAP_PCI_CFG + 16) as u64;
        if offset >= data_reg && offset < data_reg + 4 {
            self.pci_cfg_window_read(offset - data_reg, data);
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Write PCI configuration space.
    pub fn config_write(&mut self, offset: u64, data: &[u8]) -> ConfigWriteOutcome {
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return ConfigWriteOutcome::None;
        };
        if end > CONFIG_SPACE_SIZE as u64 {
            return ConfigWriteOutcome::None;
        }
        let start = offset as usize;
        let data_reg = CAP_PCI_CFG + 16;
        if start >= data_reg && start < data_reg + 4 {
            return self.pci_cfg_window_write((start - data_reg) as u64, data);
        }
        for (i, &d) in data.iter().enumerate() {
            let o = start + i;
            let m = self.write_mask[o];
            self.config[o] = (self.config[o] & !m) | (d & m);
        }
        let overlaps = |lo: usize, hi: usize| start < hi && end as usize > lo;
        if overlaps(CAP_MSIX + 2, CAP_MSIX + 4) {
            self.msix_control_changed();
        }
        // BAR 0 moves when the guest has memory decoding on and the programmed address differs
        // from the one in use: sizing probes (done with decoding off) never move it.
        let memory_decode = get_u16(&self.config, 0x04) & 0x2 != 0;
        let programmed = self.programmed_bar0();
        if memory_decode && programmed != self.bar0 {
            let old = self.bar0;
            self.bar0 = programmed;
            return ConfigWriteOutcome::Bar0Moved {
                old,
                new: programmed,
            };
        }
        ConfigWriteOutcome::None
    }

    pub(super) fn programmed_bar0(&self) -> u64 {
        let lo = u64::from(get_u32(&self.config, 0x10) & 0xFFFF_FFF0);
        let hi = u64::from(get_u32(&self.config, 0x14));
        (hi << 32) | lo
    }

    /// Whether the guest enabled memory decoding (command register bit 1). MMIO to BAR 0 while
    /// it is off should not reach the device.
    pub fn memory_decode_enabled(&self) -> bool {
        get_u16(&self.config, 0x04) & 0x2 != 0
    }

    pub(super) fn msix_control_changed(&mut self) {
        let ctrl = get_u16(&self.config, CAP_MSIX + 2);
        let enabled = ctrl & MSIX_CTRL_ENABLE != 0;
        let fmask = ctrl & MSIX_CTRL_FUNCTION_MASK != 0;
        let mut st = lock(&self.interrupts);
        let was_enabled = st.msix_enabled;
        st.msix_enabled = enabled;
        st.function_mask = fmask;
        if enabled != was_enabled {
            for (v, e) in st.table.iter().enumerate() {
                self.sink.route_msix(v as u16, enabled.then(|| e.message()));
            }
            if enabled && st.intx {
                st.intx = false;
                self.sink.set_intx(false);
            }
        }
        self.flush_pending(&mut st);
    }

    pub(super) fn flush_pending(&self, st: &mut InterruptState) {
        for v in 0..st.table.len() {
            if st.pending[v] && st.can_fire(v) {
                st.pending[v] = false;
                self.sink.signal_msix(v as u16);
            }
        }
    }

    pub(super) fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let bar = self.config[CAP_PCI_CFG + 4];
        let off = u64::from(get_u32(&self.config, CAP_PCI_CFG + 8));
        let len = get_u32(&self.config, CAP_PCI_CFG + 12) as usize;
        (bar == 0 && matches!(len, 1 | 2 | 4)).then_some((off, len))
    }

    pub(super) fn pci_cfg_window_read(&mut self, at: u64, data: &mut [u8]) {
        let mut window = [0u8; 4];
        if let Some((off, len)) = self.pci_cfg_window() {
            self.bar_read(off, &mut window[..len]);
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = window.get(at as usize + i).copied().unwrap_or(0);
        }
    }

    pub(super) fn pci_cfg_window_write(&mut self, at: u64, data: &[u8]) -> ConfigWriteOutcome {
        let mut window = [0u8; 4];
        for (i, d) in data.iter().enumerate() {
            if let Some(w) = window.get_mut(at as usize + i) {
                *w = *d;
            }
        }
        match self.pci_cfg_window() {
            Some((off, len)) => match self.bar_write(off, &window[..len]) {
                BarWriteOutcome::QueueNotify(q) => ConfigWriteOutcome::QueueNotify(q),
                BarWriteOutcome::None => ConfigWriteOutcome::None,
            },
            None => ConfigWriteOutcome::None,
        }
    }
}
