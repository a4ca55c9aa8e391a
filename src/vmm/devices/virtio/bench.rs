//! Benchmark of the virtio-blk request path without KVM.
//!
//! A driver (this code, playing the guest) keeps the queue full of 4-KiB requests, half reads
//! and half writes, over an in-memory disk; the device pops each chain, checks every
//! descriptor, parses the header, copies the data and completes it. One thread, so the result
//! is requests per second per core. The baseline, measured in the same run, is a plain
//! `memcpy` of the same 4 KiB per request between the same kind of buffers: the ratio says how
//! close the request path gets to the copy it cannot avoid.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::VirtioDevice;
use super::block::{MemoryBackend, VirtioBlock, request_type};
use super::testing::{CountingInterrupt, DriverQueue, F_NEXT, F_WRITE, guest_memory};

/// Result of [`bench_blk_path`]. Rates are per second of the benchmark thread's CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`), i.e. per core even on a busy host; `wall_requests_per_sec`
/// is the same run divided by wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BlkBenchResult {
    /// 4-KiB requests completed per second of CPU time on one core.
    pub requests_per_sec: f64,
    /// The same requests per second of wall-clock time.
    pub wall_requests_per_sec: f64,
    /// Baseline: 4-KiB `memcpy`s per second of CPU time on the same core.
    pub memcpy_per_sec: f64,
    /// `requests_per_sec / memcpy_per_sec`.
    pub ratio_to_memcpy: f64,
    /// Requests measured.
    pub requests: u64,
    /// Requests that did not complete with status OK (must be 0).
    pub errors: u64,
}

impl std::fmt::Display for BlkBenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "virtio-blk request path (in-memory disk, 4-KiB requests, 1 core): {:.0} req/s of CPU \
             time ({:.0} req/s wall clock); baseline memcpy of 4 KiB: {:.0} copies/s; \
             ratio {:.3} ({} requests, {} errors)",
            self.requests_per_sec,
            self.wall_requests_per_sec,
            self.memcpy_per_sec,
            self.ratio_to_memcpy,
            self.requests,
            self.errors
        )
    }
}

/// CPU time consumed by the calling thread.
pub(super) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` into `ts`, which we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const QUEUE: u16 = 256;
const DESCS_PER_REQ: u16 = 3;
/// Requests in flight: as many 3-descriptor chains as the table holds.
const IN_FLIGHT: u16 = QUEUE / DESCS_PER_REQ;
const BLOCK: u32 = 4096;
const DISK_BYTES: usize = 64 << 20;
const HEADERS: u64 = 0x10_0000;
const STATUSES: u64 = 0x18_0000;
const DATA: u64 = 0x20_0000;

/// Run the benchmark for about `duration` per measurement (the request path and the baseline).
pub fn bench_blk_path_for(duration: Duration) -> BlkBenchResult {
    let mem = guest_memory(16 << 20);
    let mut dq = DriverQueue::new(&mem, GuestAddress(0x1000), QUEUE);
    let mut dev = VirtioBlock::new(Box::new(MemoryBackend::new(DISK_BYTES)), false, "bench");
    let irq = Arc::new(CountingInterrupt::default());
    // A failure here is a bug in this benchmark's own setup, not guest input.
    if let Err(e) = dev.activate(mem.clone(), irq, vec![dq.device_queue()]) {
        panic!("benchmark setup: {e}");
    }
    let sectors_per_block = u64::from(BLOCK) / 512;
    let disk_blocks = (DISK_BYTES / BLOCK as usize) as u64;
    // Lay out the chains once: header, 4-KiB data, status.
    for r in 0..IN_FLIGHT {
        let d = r * DESCS_PER_REQ;
        let hdr = HEADERS + u64::from(r) * 16;
        let data = DATA + u64::from(r) * u64::from(BLOCK);
        let is_read = r % 2 == 0;
        dq.write_desc(&mem, d, hdr, 16, F_NEXT, d + 1);
        let data_flags = if is_read { F_WRITE | F_NEXT } else { F_NEXT };
        dq.write_desc(&mem, d + 1, data, BLOCK, data_flags, d + 2);
        dq.write_desc(&mem, d + 2, STATUSES + u64::from(r), 1, F_WRITE, 0);
        let ty = if is_read {
            request_type::IN
        } else {
            request_type::OUT
        };
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ty.to_le_bytes());
        let sector = (u64::from(r) * 97 % disk_blocks) * sectors_per_block;
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(hdr)).ok();
    }

    let run_batch = |dq: &mut DriverQueue, dev: &mut VirtioBlock| {
        for r in 0..IN_FLIGHT {
            dq.publish(&mem, r * DESCS_PER_REQ);
        }
        // The device processes what the driver published; errors would show in the stats.
        dev.process_queue(0).ok();
    };
    // Warm up.
    for _ in 0..100 {
        run_batch(&mut dq, &mut dev);
    }
    let before = dev.stats();
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            run_batch(&mut dq, &mut dev);
        }
        batches += 64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu_time() - cpu_start).as_secs_f64();
    let after = dev.stats();
    let requests = batches * u64::from(IN_FLIGHT);
    let wall_requests_per_sec = requests as f64 / elapsed;
    let requests_per_sec = requests as f64 / cpu.max(1e-9);

    // Baseline: the same bytes with a plain copy, host buffer to guest-sized buffer and back.
    let src = vec![0x5Au8; DISK_BYTES];
    let mut dst = vec![0u8; usize::from(IN_FLIGHT) * BLOCK as usize];
    let block = BLOCK as usize;
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let mut copies = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            for r in 0..usize::from(IN_FLIGHT) {
                let s = (r * 97 % (DISK_BYTES / block)) * block;
                dst[r * block..(r + 1) * block].copy_from_slice(&src[s..s + block]);
            }
            black_box(&mut dst);
        }
        copies += 64 * u64::from(IN_FLIGHT);
    }
    let memcpy_per_sec = copies as f64 / (thread_cpu_time() - cpu_start).as_secs_f64().max(1e-9);

    BlkBenchResult {
        requests_per_sec,
        wall_requests_per_sec,
        memcpy_per_sec,
        ratio_to_memcpy: requests_per_sec / memcpy_per_sec,
        requests: after.requests - before.requests,
        errors: after.errors - before.errors,
    }
}

/// Run the benchmark (about 2 s) and print the result.
pub fn bench_blk_path() -> BlkBenchResult {
    let r = bench_blk_path_for(Duration::from_secs(1));
    println!("{r}");
    r
}
