//! BAR 0 of a [`VirtioPciDevice`]: the region dispatch and the MSI-X table.

use super::{
    BAR0_SIZE, BarWriteOutcome, COMMON_CFG_OFFSET, DEVICE_CFG_OFFSET, ISR_OFFSET,
    MSIX_ENTRY_MASKED, MSIX_ENTRY_SIZE, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, MsixEntry,
    NOTIFY_OFF_MULTIPLIER, NOTIFY_OFFSET, REGION_SIZE, VirtioPciDevice, get_u32, le_store, lock,
};

impl VirtioPciDevice {
    // ----- BAR 0 -----

    /// Read from BAR 0 at `offset` (relative to the BAR).
    pub fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        if !matches!(len, 1 | 2 | 4 | 8) || offset.checked_add(len).is_none_or(|e| e > BAR0_SIZE) {
            return;
        }
        let region = offset / REGION_SIZE * REGION_SIZE;
        let at = offset - region;
        match region {
            COMMON_CFG_OFFSET => self.common_read(at, data),
            ISR_OFFSET if at == 0 => {
                let mut st = lock(&self.interrupts);
                data[0] = st.isr;
                st.isr = 0;
                if st.intx {
                    st.intx = false;
                    self.sink.set_intx(false);
                }
            }
            DEVICE_CFG_OFFSET => self.device.read_config(at, data),
            MSIX_TABLE_OFFSET => self.msix_table_read(at, data),
            MSIX_PBA_OFFSET => {
                let st = lock(&self.interrupts);
                let mut v = 0u64;
                let first = (at / 8) * 64;
                for bit in 0..64u64 {
                    if st.pending.get((first + bit) as usize) == Some(&true) {
                        v |= 1 << bit;
                    }
                }
                let shift = (at % 8) * 8;
                le_store(v >> shift, data);
            }
            _ => {}
        }
    }

    /// Write to BAR 0 at `offset` (relative to the BAR).
    pub fn bar_write(&mut self, offset: u64, data: &[u8]) -> BarWriteOutcome {
        let len = data.len() as u64;
        if !matches!(len, 1 | 2 | 4 | 8) || offset.checked_add(len).is_none_or(|e| e > BAR0_SIZE) {
            return BarWriteOutcome::None;
        }
        let region = offset / REGION_SIZE * REGION_SIZE;
        let at = offset - region;
        match region {
            COMMON_CFG_OFFSET => self.common_write(at, data),
            DEVICE_CFG_OFFSET => {
                self.device.write_config(at, data);
            }
            NOTIFY_OFFSET => {
                let q = at / u64::from(NOTIFY_OFF_MULTIPLIER);
                if (q as usize) < self.queues.len() {
                    return BarWriteOutcome::QueueNotify(q as u16);
                }
            }
            MSIX_TABLE_OFFSET => self.msix_table_write(at, data),
            _ => {}
        }
        BarWriteOutcome::None
    }

    pub(super) fn msix_table_read(&self, at: u64, data: &mut [u8]) {
        let st = lock(&self.interrupts);
        let idx = (at / MSIX_ENTRY_SIZE) as usize;
        let Some(e) = st.table.get(idx) else {
            return;
        };
        let words = [e.addr_lo, e.addr_hi, e.data, e.control];
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        let o = (at % MSIX_ENTRY_SIZE) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(o + i).copied().unwrap_or(0);
        }
    }

    pub(super) fn msix_table_write(&mut self, at: u64, data: &[u8]) {
        let mut st = lock(&self.interrupts);
        let idx = (at / MSIX_ENTRY_SIZE) as usize;
        let o = (at % MSIX_ENTRY_SIZE) as usize;
        // Entries are accessed as aligned dwords or qwords (PCI 3.0 §6.8.2).
        if !o.is_multiple_of(4) || data.len() < 4 || o + data.len() > MSIX_ENTRY_SIZE as usize {
            return;
        }
        let Some(old) = st.table.get(idx).copied() else {
            return;
        };
        let mut bytes = [0u8; 16];
        for (i, w) in [old.addr_lo, old.addr_hi, old.data, old.control]
            .iter()
            .enumerate()
        {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        bytes[o..o + data.len()].copy_from_slice(data);
        let new = MsixEntry {
            addr_lo: get_u32(&bytes, 0),
            addr_hi: get_u32(&bytes, 4),
            data: get_u32(&bytes, 8),
            // Only the mask bit of vector control is defined.
            control: get_u32(&bytes, 12) & MSIX_ENTRY_MASKED,
        };
        st.table[idx] = new;
        if st.msix_enabled && new.message() != old.message() {
            self.sink.route_msix(idx as u16, Some(new.message()));
        }
        self.flush_pending(&mut st);
    }
}
