//! Benchmark of the virtio-net packet path without KVM (issue 12's "≥ 1 M packets/s per core").
//!
//! A driver (this code, playing the guest) keeps both queues full: on TX, 256 one-descriptor
//! chains each holding a `virtio_net_hdr` and a 64-byte Ethernet frame; on RX, 256 writable
//! 2-KiB buffers. The device pops each chain, checks every descriptor, strips or writes the
//! header and copies the frame to or from an in-memory backend that counts what it gets and
//! always has a frame ready. One thread, so the rates are packets per second of that thread's CPU
//! time, i.e. per core even on a busy host. The baseline, measured in the same run, is a plain
//! copy of the same 76 bytes (header and frame) per packet: the ratio says how close the path
//! gets to the copy it cannot avoid.

use std::hint::black_box;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::VirtioDevice;
use super::bench::thread_cpu_time;
use super::net::{NET_HDR_LEN, NetBackend, RX_QUEUE, TX_QUEUE, VirtioNet};
use super::testing::{CountingInterrupt, DriverQueue, F_WRITE, guest_memory};

/// Size of the Ethernet frames sent and received (the minimum frame without its FCS).
pub const FRAME_LEN: usize = 64;
const QUEUE: u16 = 256;
const RX_BUF: u32 = 2048;
const TX_BUFS: u64 = 0x10_0000;
const RX_BUFS: u64 = 0x20_0000;

/// Result of [`bench_net_path_for`]: packets per second of the benchmark thread's CPU time.
#[derive(Clone, Copy, Debug)]
pub struct NetBenchResult {
    /// Guest-to-backend frames per second of CPU time on one core.
    pub tx_packets_per_sec: f64,
    /// Backend-to-guest frames per second of CPU time on one core.
    pub rx_packets_per_sec: f64,
    /// Baseline: copies of header plus frame per second of CPU time on the same core.
    pub memcpy_per_sec: f64,
    /// Frames the device counted as bad or dropped (must be 0).
    pub errors: u64,
}

impl std::fmt::Display for NetBenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "virtio-net packet path ({FRAME_LEN}-byte frames, in-memory backend, 1 core): \
             TX {:.0} packets/s, RX {:.0} packets/s of CPU time; baseline copy of header and \
             frame: {:.0} copies/s; ratios {:.3} and {:.3} ({} errors; goal >= 1,000,000 packets/s)",
            self.tx_packets_per_sec,
            self.rx_packets_per_sec,
            self.memcpy_per_sec,
            self.tx_packets_per_sec / self.memcpy_per_sec,
            self.rx_packets_per_sec / self.memcpy_per_sec,
            self.errors
        )
    }
}

/// A backend with a frame always waiting, that counts the frames written to it.
struct MemoryBackend {
    frame: [u8; FRAME_LEN],
    written: u64,
}

impl NetBackend for MemoryBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = FRAME_LEN.min(buf.len());
        buf[..n].copy_from_slice(&self.frame[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.written += 1;
        black_box(frame);
        Ok(())
    }

    fn raw_fd(&self) -> RawFd {
        -1
    }
}

/// Run each direction and the baseline for about `duration`.
pub fn bench_net_path_for(duration: Duration) -> NetBenchResult {
    let mem = guest_memory(8 << 20);
    let mut rxq = DriverQueue::new(&mem, GuestAddress(0x1000), QUEUE);
    let mut txq = DriverQueue::new(&mem, GuestAddress(0x8000), QUEUE);
    let mut frame = [0u8; FRAME_LEN];
    frame[..6].copy_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 1]);
    frame[6..12].copy_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 2]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let backend = MemoryBackend { frame, written: 0 };
    let mut dev = VirtioNet::new(Box::new(backend), [0xfa, 0x16, 0x3e, 0, 0, 1]);
    let irq = Arc::new(CountingInterrupt::default());
    // A failure here is a bug in this benchmark's own setup, not guest input.
    if let Err(e) = dev.activate(
        mem.clone(),
        irq,
        vec![rxq.device_queue(), txq.device_queue()],
    ) {
        panic!("benchmark setup: {e}");
    }
    let tx_len = (NET_HDR_LEN + FRAME_LEN) as u32;
    let mut packet = vec![0u8; NET_HDR_LEN];
    packet.extend_from_slice(&frame);
    for i in 0..QUEUE {
        let tx = TX_BUFS + u64::from(i) * 128;
        mem.write_slice(&packet, GuestAddress(tx)).ok();
        txq.write_desc(&mem, i, tx, tx_len, 0, 0);
        rxq.write_desc(
            &mem,
            i,
            RX_BUFS + u64::from(i) * u64::from(RX_BUF),
            RX_BUF,
            F_WRITE,
            0,
        );
    }

    let measure = |dq: &mut DriverQueue, dev: &mut VirtioNet, queue: u16| -> f64 {
        let batch = |dq: &mut DriverQueue, dev: &mut VirtioNet| {
            for head in 0..QUEUE {
                dq.publish(&mem, head);
            }
            // Errors would show in the device's stats.
            dev.process_queue(queue).ok();
        };
        for _ in 0..100 {
            batch(dq, dev);
        }
        let cpu_start = thread_cpu_time();
        let start = Instant::now();
        let mut batches = 0u64;
        while start.elapsed() < duration {
            for _ in 0..64 {
                batch(dq, dev);
            }
            batches += 64;
        }
        let cpu = (thread_cpu_time() - cpu_start).as_secs_f64();
        (batches * u64::from(QUEUE)) as f64 / cpu.max(1e-9)
    };
    let tx_packets_per_sec = measure(&mut txq, &mut dev, TX_QUEUE);
    let rx_packets_per_sec = measure(&mut rxq, &mut dev, RX_QUEUE);
    let errors = dev.stats().errors;

    // Baseline: the same bytes per packet with a plain copy between buffers laid out the same way.
    let src = vec![0x5Au8; usize::from(QUEUE) * 128];
    let mut dst = vec![0u8; usize::from(QUEUE) * RX_BUF as usize];
    let len = NET_HDR_LEN + FRAME_LEN;
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let mut copies = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            for i in 0..usize::from(QUEUE) {
                let d = i * RX_BUF as usize;
                dst[d..d + len].copy_from_slice(&src[i * 128..i * 128 + len]);
            }
            black_box(&mut dst);
        }
        copies += 64 * u64::from(QUEUE);
    }
    let memcpy_per_sec = copies as f64 / (thread_cpu_time() - cpu_start).as_secs_f64().max(1e-9);
    NetBenchResult {
        tx_packets_per_sec,
        rx_packets_per_sec,
        memcpy_per_sec,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_move_packets_without_errors() {
        let r = bench_net_path_for(Duration::from_millis(20));
        assert!(r.tx_packets_per_sec > 0.0, "{r}");
        assert!(r.rx_packets_per_sec > 0.0, "{r}");
        assert_eq!(r.errors, 0, "{r}");
    }
}
