//! The virtio common configuration structure of a [`VirtioPciDevice`] (BAR 0 + 0x0000):
//! feature negotiation, queue setup, device status, activation and reset.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::{NO_VECTOR, QueueConfig, VirtioPciDevice, le_store, lock, merge_field};
use crate::vmm::devices::virtio::{
    DeviceError, GuestMemory, VirtioInterruptKind, features, status,
};

impl VirtioPciDevice {
    // ----- common configuration -----

    pub(super) fn selected_queue(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// (field start, field width) of the common configuration field containing `at`.
    pub(super) fn common_field(at: u64) -> Option<(u64, u64)> {
        const FIELDS: [(u64, u64); 18] = [
            (0x00, 4),
            (0x04, 4),
            (0x08, 4),
            (0x0C, 4),
            (0x10, 2),
            (0x12, 2),
            (0x14, 1),
            (0x15, 1),
            (0x16, 2),
            (0x18, 2),
            (0x1A, 2),
            (0x1C, 2),
            (0x1E, 2),
            (0x20, 8),
            (0x28, 8),
            (0x30, 8),
            (0x38, 2),
            (0x3A, 2),
        ];
        FIELDS.iter().copied().find(|&(s, w)| at >= s && at < s + w)
    }

    pub(super) fn common_value(&self, field: u64) -> u64 {
        let q = self.selected_queue();
        match field {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => self.device.device_features() & 0xFFFF_FFFF,
                1 => self.device.device_features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0C => match self.driver_feature_select {
                0 => self.driver_features & 0xFFFF_FFFF,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(lock(&self.interrupts).config_vector),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.device_status),
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_select),
            0x18 => q.map_or(0, |q| u64::from(q.size)),
            0x1A => u64::from(
                lock(&self.interrupts)
                    .queue_vectors
                    .get(usize::from(self.queue_select))
                    .copied()
                    .unwrap_or(NO_VECTOR),
            ),
            0x1C => q.map_or(0, |q| u64::from(q.enabled)),
            // queue_notify_off: queue q notifies at NOTIFY_OFFSET + q * multiplier.
            0x1E => q.map_or(0, |_| u64::from(self.queue_select)),
            0x20 => q.map_or(0, |q| q.desc),
            0x28 => q.map_or(0, |q| q.avail),
            0x30 => q.map_or(0, |q| q.used),
            _ => 0,
        }
    }

    pub(super) fn common_read(&self, at: u64, data: &mut [u8]) {
        let Some((field, width)) = Self::common_field(at) else {
            return;
        };
        if at + data.len() as u64 > field + width {
            return;
        }
        let v = self.common_value(field) >> ((at - field) * 8);
        le_store(v, data);
    }

    pub(super) fn common_write(&mut self, at: u64, data: &[u8]) {
        let Some((field, width)) = Self::common_field(at) else {
            return;
        };
        if at + data.len() as u64 > field + width {
            return;
        }
        let v = merge_field(self.common_value(field), width, at - field, data);
        let driver_ok = self.device_status & status::DRIVER_OK != 0;
        let features_ok = self.device_status & status::FEATURES_OK != 0;
        let qi = usize::from(self.queue_select);
        let vectors = lock(&self.interrupts).table.len();
        let valid_vector = |v: u16| {
            if usize::from(v) < vectors {
                v
            } else {
                NO_VECTOR
            }
        };
        match field {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            0x0C if !features_ok => match self.driver_feature_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xFFFF_FFFF) | (v & 0xFFFF_FFFF)
                }
                1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | (v << 32),
                _ => {}
            },
            0x10 => lock(&self.interrupts).config_vector = valid_vector(v as u16),
            0x14 => self.write_status(v as u8),
            0x16 => self.queue_select = v as u16,
            0x1A => {
                let mut st = lock(&self.interrupts);
                if let Some(slot) = st.queue_vectors.get_mut(qi) {
                    *slot = valid_vector(v as u16);
                }
            }
            _ => {
                if driver_ok {
                    return;
                }
                let Some(q) = self.queues.get_mut(qi) else {
                    return;
                };
                if q.enabled {
                    // A live queue's layout is fixed until reset.
                    return;
                }
                match field {
                    0x18 => {
                        let s = v as u16;
                        if s != 0 && s <= q.max_size && s.is_power_of_two() {
                            q.size = s;
                        }
                    }
                    0x1C => q.enabled = v & 1 == 1,
                    0x20 => q.desc = v,
                    0x28 => q.avail = v,
                    0x30 => q.used = v,
                    _ => {}
                }
            }
        }
    }

    pub(super) fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.device_status;
        // The driver cannot clear bits (other than by a full reset) nor set NEEDS_RESET.
        let mut new =
            (old | value) & !status::DEVICE_NEEDS_RESET | (old & status::DEVICE_NEEDS_RESET);
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let offered = self.device.device_features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & features::VERSION_1 != 0;
            if ok {
                self.device.set_acked_features(self.driver_features);
            } else {
                new &= !status::FEATURES_OK;
            }
        }
        self.device_status = new;
        if new & status::DRIVER_OK != 0
            && old & status::DRIVER_OK == 0
            && new & status::FEATURES_OK != 0
            && new & status::FAILED == 0
        {
            self.activate();
        }
    }

    pub(super) fn activate(&mut self) {
        self.activate_at(&[]);
    }

    /// Activate with queues resuming at `positions` (`(next_avail, next_used)`; empty: at 0).
    pub(super) fn activate_at(&mut self, positions: &[(u16, u16)]) {
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, qc) in self.queues.iter().enumerate() {
            match build_queue(qc, event_idx, &self.mem) {
                Some(mut q) => {
                    if let Some(&(avail, used)) = positions.get(i) {
                        q.set_next_avail(avail);
                        q.set_next_used(used);
                    }
                    queues.push(q)
                }
                None => {
                    let e = DeviceError::Queue(i as u16, virtio_queue::Error::QueueNotReady);
                    self.needs_reset(&e);
                    return;
                }
            }
        }
        let interrupt = self.interrupt();
        if let Err(e) = self.device.activate(self.mem.clone(), interrupt, queues) {
            tracing::warn!("virtio device activation failed: {e}");
            self.device_status |= status::DEVICE_NEEDS_RESET;
            self.interrupt().trigger(VirtioInterruptKind::Config);
        }
    }

    /// Device reset (the driver wrote 0 to the status register).
    pub(super) fn reset(&mut self) {
        self.device.reset();
        self.device_status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueConfig {
                max_size: q.max_size,
                size: q.max_size,
                desc: 0,
                avail: 0,
                used: 0,
                enabled: false,
            };
        }
        let mut st = lock(&self.interrupts);
        st.config_vector = NO_VECTOR;
        st.queue_vectors.fill(NO_VECTOR);
        st.isr = 0;
        if st.intx {
            st.intx = false;
            self.sink.set_intx(false);
        }
    }
}

/// Turn the driver's queue configuration into a virtio-queue [`Queue`]. A disabled queue comes
/// back not ready (never processed); an enabled one must lie in guest memory and be aligned.
fn build_queue(qc: &QueueConfig, event_idx: bool, mem: &GuestMemory) -> Option<Queue> {
    let mut q = Queue::new(qc.max_size).ok()?;
    if !qc.enabled {
        return Some(q);
    }
    q.try_set_size(qc.size).ok()?;
    q.try_set_desc_table_address(GuestAddress(qc.desc)).ok()?;
    q.try_set_avail_ring_address(GuestAddress(qc.avail)).ok()?;
    q.try_set_used_ring_address(GuestAddress(qc.used)).ok()?;
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q.is_valid(mem).then_some(q)
}
