//! Save and restore of a [`VirtioPciDevice`]: the transport state and queue positions.

use std::sync::Arc;

use super::{
    CAP_MSIX, CONFIG_SPACE_SIZE, MSIX_CTRL_ENABLE, MSIX_CTRL_FUNCTION_MASK, MSIX_ENTRY_MASKED,
    MsixEntry, NO_VECTOR, PciError, QueueState, VirtioPciDevice, VirtioPciState, get_u16, lock,
};
use crate::vmm::devices::virtio::{
    GuestMemory, PciInterruptSink, VirtioDevice, VirtioInterruptKind, status,
};

impl VirtioPciDevice {
    // ----- save and restore -----

    /// Snapshot the transport and the queue positions. Call with the VM paused (no vCPU or
    /// event-thread activity), so that queues are quiescent.
    pub fn save_state(&self) -> VirtioPciState {
        let st = lock(&self.interrupts);
        let positions = self.device.queue_positions();
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let (next_avail, next_used) = positions.get(i).copied().unwrap_or((0, 0));
                QueueState {
                    size: q.size,
                    desc: q.desc,
                    avail: q.avail,
                    used: q.used,
                    enabled: q.enabled,
                    vector: st.queue_vectors.get(i).copied().unwrap_or(NO_VECTOR),
                    next_avail,
                    next_used,
                }
            })
            .collect();
        VirtioPciState {
            device_type: self.device.device_type(),
            config_space: self.config.to_vec(),
            bar0: self.bar0,
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            driver_features: self.driver_features,
            device_status: self.device_status,
            config_generation: self.config_generation,
            queue_select: self.queue_select,
            queues,
            msix_table: st
                .table
                .iter()
                .map(|e| [e.addr_lo, e.addr_hi, e.data, e.control])
                .collect(),
            msix_pending: st.pending.clone(),
            config_vector: st.config_vector,
            isr: st.isr,
        }
    }

    /// Rebuild a device from [`VirtioPciDevice::save_state`]: `device` must be the same kind of
    /// device (same type and queues), freshly created over the same backend. Re-routes the
    /// MSI-X vectors through `sink` and reactivates the device where the driver had it running.
    /// A state that does not fit (corrupt or from another device) is refused.
    pub fn restore(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        sink: Arc<dyn PciInterruptSink>,
        state: &VirtioPciState,
    ) -> Result<Self, PciError> {
        let mismatch = PciError::StateMismatch;
        if state.device_type != device.device_type() {
            return Err(mismatch("device type"));
        }
        let mut dev = Self::new(device, mem, sink, state.bar0)?;
        let config: [u8; CONFIG_SPACE_SIZE] = state
            .config_space
            .as_slice()
            .try_into()
            .map_err(|_| mismatch("configuration space size"))?;
        // Read-only identity and capability bytes must be what this device would present.
        for (i, (&new, &old)) in config.iter().zip(dev.config.iter()).enumerate() {
            if (new ^ old) & !dev.write_mask[i] != 0 {
                return Err(mismatch("configuration space contents"));
            }
        }
        if state.queues.len() != dev.queues.len()
            || state.msix_table.len() != state.msix_pending.len()
        {
            return Err(mismatch("queue count"));
        }
        {
            let st = lock(&dev.interrupts);
            if state.msix_table.len() != st.table.len() {
                return Err(mismatch("MSI-X table size"));
            }
        }
        let vectors = state.msix_table.len();
        let valid_vector = |v: u16| v == NO_VECTOR || usize::from(v) < vectors;
        for (q, s) in dev.queues.iter_mut().zip(&state.queues) {
            if s.size == 0 || s.size > q.max_size || !s.size.is_power_of_two() {
                return Err(mismatch("queue size"));
            }
            if !valid_vector(s.vector) {
                return Err(mismatch("queue vector"));
            }
            q.size = s.size;
            q.desc = s.desc;
            q.avail = s.avail;
            q.used = s.used;
            q.enabled = s.enabled;
        }
        if !valid_vector(state.config_vector) {
            return Err(mismatch("config vector"));
        }
        dev.config = config;
        dev.bar0 = state.bar0;
        dev.device_feature_select = state.device_feature_select;
        dev.driver_feature_select = state.driver_feature_select;
        dev.driver_features = state.driver_features;
        dev.device_status = state.device_status;
        dev.config_generation = state.config_generation;
        dev.queue_select = state.queue_select;
        {
            let ctrl = get_u16(&dev.config, CAP_MSIX + 2);
            let mut st = lock(&dev.interrupts);
            st.msix_enabled = ctrl & MSIX_CTRL_ENABLE != 0;
            st.function_mask = ctrl & MSIX_CTRL_FUNCTION_MASK != 0;
            for (e, w) in st.table.iter_mut().zip(&state.msix_table) {
                *e = MsixEntry {
                    addr_lo: w[0],
                    addr_hi: w[1],
                    data: w[2],
                    control: w[3] & MSIX_ENTRY_MASKED,
                };
            }
            st.pending.copy_from_slice(&state.msix_pending);
            st.config_vector = state.config_vector;
            for (v, s) in st.queue_vectors.iter_mut().zip(&state.queues) {
                *v = s.vector;
            }
            st.isr = state.isr;
            if st.msix_enabled {
                for (v, e) in st.table.iter().enumerate() {
                    dev.sink.route_msix(v as u16, Some(e.message()));
                }
            }
        }
        let s = dev.device_status;
        if s & status::FEATURES_OK != 0 {
            if dev.driver_features & !dev.device.device_features() != 0 {
                return Err(mismatch("negotiated features"));
            }
            dev.device.set_acked_features(dev.driver_features);
        }
        if s & status::DRIVER_OK != 0
            && s & status::FEATURES_OK != 0
            && s & (status::FAILED | status::DEVICE_NEEDS_RESET) == 0
        {
            let positions: Vec<(u16, u16)> = state
                .queues
                .iter()
                .map(|q| (q.next_avail, q.next_used))
                .collect();
            dev.activate_at(&positions);
        }
        Ok(dev)
    }

    /// Call once the restored VM's vCPUs and interrupt controllers hold their saved state, before
    /// any vCPU runs: processes every queue once, as if notified, and then interrupts every
    /// enabled queue once.
    ///
    /// Processing covers buffers the driver made available before the save that the old VMM
    /// never served (it had taken the notification and paused, or, with EVENT_IDX, the driver
    /// will not notify again for buffers it already announced). The interrupts cover those the
    /// old VMM raised between its vCPUs parking (when their local APIC state was taken) and the
    /// save: they are in the saved used rings but in no saved APIC, and with EVENT_IDX a lost
    /// interrupt is never repeated (the device interrupts again only when the used index passes
    /// the driver's used_event, which waits for the lost one), so that queue would stay silent
    /// for good. A virtio driver takes an interrupt with nothing new as a no-op. Both were seen
    /// in the lab: a restored Linux guest whose network stayed silent while disk and console
    /// worked. Interrupts raised inside [`VirtioPciDevice::restore`] itself would be lost the
    /// same way (no vCPU exists yet), which is why this is a separate step.
    pub fn resume_after_restore(&mut self) {
        if !self.device.is_activated() || self.device_status & status::DEVICE_NEEDS_RESET != 0 {
            return;
        }
        let interrupt = self.interrupt();
        for queue in 0..self.queues.len() as u16 {
            self.process_queue(queue);
            if self.queues[usize::from(queue)].enabled {
                interrupt.trigger(VirtioInterruptKind::Queue(queue));
            }
        }
    }
}
