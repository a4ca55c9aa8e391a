//! Device and transport tests without KVM: virtqueues laid out in a `GuestMemoryMmap`.

#![allow(clippy::unwrap_used)]

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::block::{
    BlockBackend, MemoryBackend, RawFileBackend, VirtioBlock, request_status as st,
    request_type as rt,
};
use super::net::{FdBackend, NET_HDR_LEN, RX_QUEUE, TX_QUEUE, VirtioNet};
use super::pci::{self, BarWriteOutcome, ConfigWriteOutcome, NO_VECTOR, VirtioPciDevice};
use super::rng::VirtioRng;
use super::testing::{
    CountingInterrupt, DriverQueue, F_INDIRECT, F_NEXT, F_WRITE, guest_memory, write_desc_at,
};
use super::*;
use virtio_queue::QueueT;

const MEM_SIZE: usize = 16 << 20;
const QBASE: u64 = 0x1000;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

fn blk_with(
    backend: MemoryBackend,
    read_only: bool,
) -> (
    GuestMemory,
    DriverQueue,
    VirtioBlock,
    Arc<CountingInterrupt>,
) {
    let mem = guest_memory(MEM_SIZE);
    let dq = DriverQueue::new(&mem, GuestAddress(QBASE), 256);
    let mut dev = VirtioBlock::new(Box::new(backend), read_only, "yunhe-disk-0001");
    let irq = Arc::new(CountingInterrupt::default());
    dev.activate(mem.clone(), irq.clone(), vec![dq.device_queue()])
        .unwrap();
    (mem, dq, dev, irq)
}

fn blk() -> (
    GuestMemory,
    DriverQueue,
    VirtioBlock,
    Arc<CountingInterrupt>,
) {
    blk_with(MemoryBackend::new(1 << 20), false)
}

fn header(mem: &GuestMemory, at: u64, ty: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&ty.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).unwrap();
}

fn status(mem: &GuestMemory) -> u8 {
    mem.read_obj(GuestAddress(STATUS)).unwrap()
}

/// Submit a simple 3-descriptor request and process it; returns (status, used len).
fn simple_request(
    mem: &GuestMemory,
    dq: &mut DriverQueue,
    dev: &mut VirtioBlock,
    ty: u32,
    sector: u64,
    len: u32,
    device_writes: bool,
) -> (u8, u32) {
    header(mem, HDR, ty, sector);
    mem.write_obj(0xEEu8, GuestAddress(STATUS)).unwrap();
    let mut bufs = vec![(HDR, 16, false)];
    if len > 0 {
        bufs.push((DATA, len, device_writes));
    }
    bufs.push((STATUS, 1, true));
    let before = dq.used_idx(mem);
    dq.add_chain(mem, &bufs);
    dev.process_queue(0).unwrap();
    assert_eq!(dq.used_idx(mem), before.wrapping_add(1));
    let (_, used) = dq.used_elem(mem, before);
    (status(mem), used)
}

#[test]
fn blk_write_then_read_round_trips() {
    let (mem, mut dq, mut dev, irq) = blk();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::OUT, 8, 4096, false),
        (st::OK, 1)
    );
    mem.write_slice(&[0u8; 4096], GuestAddress(DATA)).unwrap();
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, 8, 4096, true),
        (st::OK, 4097)
    );
    let mut back = vec![0u8; 4096];
    mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, pattern);
    assert_eq!(irq.queue_count(), 2);
    let s = dev.stats();
    assert_eq!(
        (s.requests, s.errors, s.bytes_from_guest, s.bytes_to_guest),
        (2, 0, 4096, 4096)
    );
}

#[test]
fn blk_request_split_over_many_descriptors() {
    // Header in two pieces, data in 512-byte pieces, status inside the last data buffer.
    let (mem, mut dq, mut dev, _) = blk();
    header(&mem, HDR, rt::OUT, 1);
    let data: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    dq.add_chain(
        &mem,
        &[
            (HDR, 5, false),
            (HDR + 5, 11, false),
            (DATA, 512, false),
            (DATA + 512, 512, false),
            (STATUS, 1, true),
        ],
    );
    dev.process_queue(0).unwrap();
    assert_eq!(status(&mem), st::OK);
    // Read it back with data and status sharing one descriptor (513 bytes).
    header(&mem, HDR, rt::IN, 1);
    dq.add_chain(
        &mem,
        &[
            (HDR, 16, false),
            (DATA + 0x1000, 512, true),
            (DATA + 0x1200, 513, true),
        ],
    );
    dev.process_queue(0).unwrap();
    let mut back = vec![0u8; 1024];
    mem.read_slice(&mut back[..512], GuestAddress(DATA + 0x1000))
        .unwrap();
    mem.read_slice(&mut back[512..], GuestAddress(DATA + 0x1200))
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(DATA + 0x1200 + 512))
            .unwrap(),
        st::OK
    );
    assert_eq!(dq.used_elem(&mem, 1).1, 1025);
}

#[test]
fn blk_flush_get_id_discard_write_zeroes() {
    let mut backend = MemoryBackend::new(1 << 20);
    backend.data_mut().fill(0xAB);
    let (mem, mut dq, mut dev, _) = blk_with(backend, false);
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::FLUSH, 0, 0, false),
        (st::OK, 1)
    );
    let (s, used) = simple_request(&mem, &mut dq, &mut dev, rt::GET_ID, 0, 20, true);
    assert_eq!((s, used), (st::OK, 21));
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..15], b"yunhe-disk-0001");
    assert_eq!(id[15..], [0; 5]);

    // Write-zeroes sectors 2..4, discard sectors 10..11 (two ranges in one request).
    let mut ranges = [0u8; 32];
    ranges[0..8].copy_from_slice(&2u64.to_le_bytes());
    ranges[8..12].copy_from_slice(&2u32.to_le_bytes());
    ranges[16..24].copy_from_slice(&100u64.to_le_bytes());
    ranges[24..28].copy_from_slice(&1u32.to_le_bytes());
    ranges[28..32].copy_from_slice(&1u32.to_le_bytes()); // unmap allowed
    mem.write_slice(&ranges, GuestAddress(DATA)).unwrap();
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::WRITE_ZEROES, 0, 32, false),
        (st::OK, 1)
    );
    mem.write_slice(&ranges[..16], GuestAddress(DATA)).unwrap();
    mem.write_slice(&10u64.to_le_bytes(), GuestAddress(DATA))
        .unwrap();
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::DISCARD, 0, 16, false),
        (st::OK, 1)
    );
    // Discard with the unmap flag is UNSUPP by the spec.
    mem.write_slice(&1u32.to_le_bytes(), GuestAddress(DATA + 12))
        .unwrap();
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::DISCARD, 0, 16, false),
        (st::UNSUPP, 1)
    );
    // Reads see the zeroes.
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, 0, 4096, true).0,
        st::OK
    );
    let mut back = vec![0u8; 4096];
    mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert!(back[..1024].iter().all(|&b| b == 0xAB));
    assert!(back[1024..2048].iter().all(|&b| b == 0));
    assert!(back[2048..].iter().all(|&b| b == 0xAB));
}

#[test]
fn blk_read_only_refuses_writes() {
    let (mem, mut dq, mut dev, _) = blk_with(MemoryBackend::new(1 << 20), true);
    assert_ne!(dev.device_features() & block::blk_features::RO, 0);
    assert_eq!(dev.device_features() & block::blk_features::DISCARD, 0);
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::OUT, 0, 512, false).0,
        st::IOERR
    );
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::WRITE_ZEROES, 0, 16, false).0,
        st::IOERR
    );
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, 0, 512, true).0,
        st::OK
    );
}

#[test]
fn blk_bad_requests_fail_with_status() {
    let (mem, mut dq, mut dev, _) = blk();
    let sectors = (1u64 << 20) / 512;
    // Last sector fine, one past the end not.
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, sectors - 1, 512, true).0,
        st::OK
    );
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, sectors, 512, true).0,
        st::IOERR
    );
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, sectors - 1, 1024, true).0,
        st::IOERR
    );
    // Sector * 512 overflows.
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, u64::MAX / 2, 512, true).0,
        st::IOERR
    );
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::OUT, u64::MAX, 512, false).0,
        st::IOERR
    );
    // Not a multiple of 512.
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, 0, 100, true).0,
        st::IOERR
    );
    // Unknown type.
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, 77, 0, 0, false).0,
        st::UNSUPP
    );
    // Zero-length read is fine.
    assert_eq!(
        simple_request(&mem, &mut dq, &mut dev, rt::IN, 0, 0, true),
        (st::OK, 1)
    );
    // Header too short.
    mem.write_obj(0xEEu8, GuestAddress(STATUS)).unwrap();
    dq.add_chain(&mem, &[(HDR, 8, false), (STATUS, 1, true)]);
    dev.process_queue(0).unwrap();
    assert_eq!(status(&mem), st::IOERR);
    assert_eq!(dev.stats().errors, 7);
}

/// Chains the device must refuse without touching memory: used length 0, status untouched.
#[test]
fn blk_malformed_chains_are_refused() {
    let (mem, mut dq, mut dev, _) = blk();
    let oob = MEM_SIZE as u64;
    let cases: Vec<Vec<(u64, u32, bool)>> = vec![
        // Data buffer outside guest memory.
        vec![(HDR, 16, false), (oob, 512, true), (STATUS, 1, true)],
        // Data buffer straddling the end of guest memory.
        vec![(HDR, 16, false), (oob - 256, 512, true), (STATUS, 1, true)],
        // Huge length.
        vec![(HDR, 16, false), (DATA, u32::MAX, true), (STATUS, 1, true)],
        // Address overflow.
        vec![
            (HDR, 16, false),
            (u64::MAX - 10, 512, true),
            (STATUS, 1, true),
        ],
        // Header outside memory.
        vec![(oob + 0x1000, 16, false), (STATUS, 1, true)],
        // Readable after writable.
        vec![(HDR, 16, false), (STATUS, 1, true), (DATA, 512, false)],
        // No status byte at all.
        vec![(HDR, 16, false), (DATA, 512, false)],
    ];
    for (i, bufs) in cases.iter().enumerate() {
        header(&mem, HDR, rt::IN, 0);
        mem.write_obj(0xEEu8, GuestAddress(STATUS)).unwrap();
        dq.add_chain(&mem, bufs);
        dev.process_queue(0).unwrap();
        assert_eq!(dq.used_idx(&mem), i as u16 + 1, "case {i}");
        assert_eq!(dq.used_elem(&mem, i as u16).1, 0, "case {i}");
        assert_eq!(status(&mem), 0xEE, "case {i}");
    }
}

#[test]
fn blk_descriptor_loops_and_bad_indices_terminate() {
    let (mem, mut dq, mut dev, _) = blk();
    header(&mem, HDR, rt::IN, 0);
    mem.write_obj(0xEEu8, GuestAddress(STATUS)).unwrap();
    // 0 -> 1 -> 0 -> ... loop.
    dq.write_desc(&mem, 0, HDR, 16, F_NEXT, 1);
    dq.write_desc(&mem, 1, STATUS, 1, F_WRITE | F_NEXT, 0);
    dq.publish(&mem, 0);
    // Self loop.
    dq.write_desc(&mem, 2, STATUS, 1, F_WRITE | F_NEXT, 2);
    dq.publish(&mem, 2);
    // Next index past the table.
    dq.write_desc(&mem, 3, HDR, 16, F_NEXT, 4000);
    dq.publish(&mem, 3);
    dev.process_queue(0).unwrap();
    assert_eq!(dq.used_idx(&mem), 3);
    for i in 0..3 {
        assert_eq!(dq.used_elem(&mem, i).1, 0);
    }
    assert_eq!(status(&mem), 0xEE);
    // A head index past the queue size cannot be put in the used ring: the queue is broken.
    dq.publish(&mem, 999);
    assert!(matches!(
        dev.process_queue(0),
        Err(DeviceError::Queue(0, _))
    ));
}

#[test]
fn blk_indirect_descriptors_work_and_nested_ones_fail() {
    let (mem, mut dq, mut dev, _) = blk();
    let table = GuestAddress(0x8000);
    let pattern = [0x5Au8; 512];
    mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    header(&mem, HDR, rt::OUT, 3);
    write_desc_at(&mem, table, 0, HDR, 16, F_NEXT, 1);
    write_desc_at(&mem, table, 1, DATA, 512, F_NEXT, 2);
    write_desc_at(&mem, table, 2, STATUS, 1, F_WRITE, 0);
    dq.write_desc(&mem, 0, table.0, 48, F_INDIRECT, 0);
    dq.publish(&mem, 0);
    dev.process_queue(0).unwrap();
    assert_eq!(status(&mem), st::OK);
    // Indirect table inside an indirect table: refused.
    let table2 = GuestAddress(0x9000);
    write_desc_at(&mem, table2, 0, table.0, 48, F_INDIRECT, 0);
    dq.write_desc(&mem, 1, table2.0, 16, F_INDIRECT, 0);
    dq.publish(&mem, 1);
    mem.write_obj(0xEEu8, GuestAddress(STATUS)).unwrap();
    dev.process_queue(0).unwrap();
    assert_eq!(dq.used_elem(&mem, 1).1, 0);
    // Indirect table outside memory or with a length that is not a multiple of 16.
    dq.write_desc(&mem, 2, MEM_SIZE as u64, 48, F_INDIRECT, 0);
    dq.publish(&mem, 2);
    dq.write_desc(&mem, 3, table.0, 47, F_INDIRECT, 0);
    dq.publish(&mem, 3);
    dev.process_queue(0).unwrap();
    assert_eq!(dq.used_idx(&mem), 4);
    assert_eq!(status(&mem), 0xEE);
}

#[test]
fn blk_avail_index_jump_breaks_the_queue() {
    let (mem, mut dq, mut dev, _) = blk();
    dq.set_avail_idx(&mem, 300); // more than the queue size ahead
    assert!(matches!(
        dev.process_queue(0),
        Err(DeviceError::Queue(0, _))
    ));
}

#[test]
fn blk_queue_outside_memory_is_refused_at_activation() {
    let mem = guest_memory(1 << 20);
    let dq = DriverQueue::new(&mem, GuestAddress((1 << 20) - 0x100), 16);
    let mut dev = VirtioBlock::new(Box::new(MemoryBackend::new(4096)), false, "x");
    let irq = Arc::new(CountingInterrupt::default());
    assert!(matches!(
        dev.activate(mem, irq, vec![dq.device_queue()]),
        Err(ActivateError::InvalidQueue(0))
    ));
    assert!(!dev.is_activated());
}

#[test]
fn blk_raw_file_backend() {
    let dir = std::env::temp_dir().join(format!("yunhe-virtio-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.raw");
    std::fs::write(&path, vec![0x11u8; 1 << 16]).unwrap();
    let mut b = RawFileBackend::open(&path, false).unwrap();
    assert_eq!(b.capacity(), 1 << 16);
    let mem = guest_memory(1 << 20);
    mem.write_slice(&[0x77u8; 4096], GuestAddress(0x1000))
        .unwrap();
    b.write_at(4096, &mem.get_slice(GuestAddress(0x1000), 4096).unwrap())
        .unwrap();
    b.read_at(0, &mem.get_slice(GuestAddress(0x4000), 8192).unwrap())
        .unwrap();
    let mut back = vec![0u8; 8192];
    mem.read_slice(&mut back, GuestAddress(0x4000)).unwrap();
    assert!(back[..4096].iter().all(|&x| x == 0x11));
    assert!(back[4096..].iter().all(|&x| x == 0x77));
    b.write_zeroes(4096, 4096, false).unwrap();
    b.discard(0, 4096).unwrap();
    b.flush().unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len(), 1 << 16);
    assert!(on_disk[4096..8192].iter().all(|&x| x == 0));
    assert!(on_disk[8192..].iter().all(|&x| x == 0x11));
    // Read-only open cannot write.
    let mut ro = RawFileBackend::open(&path, true).unwrap();
    assert!(
        ro.write_at(0, &mem.get_slice(GuestAddress(0x1000), 512).unwrap())
            .is_err()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn blk_config_space() {
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "s");
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 2048);
    let mut b = [0u8; 4];
    dev.read_config(20, &mut b);
    assert_eq!(u32::from_le_bytes(b), 512);
    dev.read_config(1000, &mut b);
    assert_eq!(b, [0; 4]);
}

// ----- net -----

fn net() -> (
    GuestMemory,
    DriverQueue,
    DriverQueue,
    VirtioNet,
    UnixDatagram,
    Arc<CountingInterrupt>,
) {
    let (a, b) = UnixDatagram::pair().unwrap();
    let backend = FdBackend::new(OwnedFd::from(a)).unwrap();
    let (mem, rxq, txq, dev, irq) = activated_nic(Box::new(backend), 0, 256);
    b.set_nonblocking(true).unwrap();
    (mem, rxq, txq, dev, b, irq)
}

/// A NIC over `backend` with `acked` features, activated on an RX queue of `rx_size` entries
/// and a TX queue of 256.
fn activated_nic(
    backend: Box<dyn net::NetBackend>,
    acked: u64,
    rx_size: u16,
) -> (
    GuestMemory,
    DriverQueue,
    DriverQueue,
    VirtioNet,
    Arc<CountingInterrupt>,
) {
    let mem = guest_memory(MEM_SIZE);
    let rxq = DriverQueue::new(&mem, GuestAddress(QBASE), rx_size);
    let txq = DriverQueue::new(&mem, GuestAddress(0x8000), 256);
    let mut dev = VirtioNet::new(backend, [0x52, 0x54, 0, 1, 2, 3]);
    assert_eq!(dev.device_features() & acked, acked, "offered");
    dev.set_acked_features(acked);
    let irq = Arc::new(CountingInterrupt::default());
    dev.activate(
        mem.clone(),
        irq.clone(),
        vec![rxq.device_queue(), txq.device_queue()],
    )
    .unwrap();
    (mem, rxq, txq, dev, irq)
}

#[test]
fn net_tx_sends_frames_without_header() {
    let (mem, _rxq, mut txq, mut dev, peer, irq) = net();
    let frame: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    mem.write_slice(&[0u8; NET_HDR_LEN], GuestAddress(HDR))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(DATA)).unwrap();
    txq.add_chain(
        &mem,
        &[
            (HDR, NET_HDR_LEN as u32, false),
            (DATA, 1000, false),
            (DATA + 1000, 500, false),
        ],
    );
    dev.process_queue(TX_QUEUE).unwrap();
    let mut got = vec![0u8; 2000];
    let n = peer.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &frame[..]);
    assert_eq!(txq.used_idx(&mem), 1);
    assert_eq!(irq.queue_count(), 1);
    // Too short for a header: dropped, buffer returned.
    txq.add_chain(&mem, &[(HDR, 4, false)]);
    dev.process_queue(TX_QUEUE).unwrap();
    assert_eq!(txq.used_idx(&mem), 2);
    assert!(peer.recv(&mut got).is_err());
    assert_eq!(dev.stats().errors, 1);
}

#[test]
fn net_rx_delivers_and_waits_for_buffers() {
    let (mem, mut rxq, _txq, mut dev, peer, _irq) = net();
    assert!(dev.backend_fd().is_some());
    peer.send(&[0xAAu8; 60]).unwrap();
    peer.send(&[0xBBu8; 70]).unwrap();
    // No RX buffers yet: the frame is held.
    dev.process_backend().unwrap();
    assert_eq!(rxq.used_idx(&mem), 0);
    rxq.add_chain(&mem, &[(DATA, 2048, true)]);
    dev.process_queue(RX_QUEUE).unwrap();
    assert_eq!(rxq.used_idx(&mem), 1);
    assert_eq!(rxq.used_elem(&mem, 0).1, (NET_HDR_LEN + 60) as u32);
    let mut got = vec![0u8; NET_HDR_LEN + 60];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(&got[..NET_HDR_LEN], &net::rx_header());
    assert!(got[NET_HDR_LEN..].iter().all(|&b| b == 0xAA));
    // Second frame, into a header-split buffer pair.
    rxq.add_chain(
        &mem,
        &[(DATA + 0x1000, 5, true), (DATA + 0x2000, 2000, true)],
    );
    dev.process_backend().unwrap();
    assert_eq!(rxq.used_idx(&mem), 2);
    let mut b = [0u8; 8];
    mem.read_slice(&mut b, GuestAddress(DATA + 0x2000)).unwrap();
    assert_eq!(b, [0u8, 0, 0, 0, 0, 1, 0, 0xBB]);
    // A frame larger than the buffer is dropped, the buffer returned empty.
    peer.send(&[0xCCu8; 1000]).unwrap();
    rxq.add_chain(&mem, &[(DATA, 100, true)]);
    dev.process_backend().unwrap();
    assert_eq!(rxq.used_elem(&mem, 2).1, 0);
    // RX buffer outside memory: dropped too.
    peer.send(&[0xDDu8; 10]).unwrap();
    rxq.add_chain(&mem, &[(MEM_SIZE as u64, 2048, true)]);
    dev.process_backend().unwrap();
    assert_eq!(rxq.used_elem(&mem, 3).1, 0);
    assert_eq!(dev.stats().errors, 2);
}

#[test]
fn net_config_has_mac_and_link() {
    let (_, _, _, dev, _, _) = net();
    let mut c = [0u8; 8];
    dev.read_config(0, &mut c);
    assert_eq!(c, [0x52, 0x54, 0, 1, 2, 3, 1, 0]);
}

/// A backend that carries a `virtio_net_hdr` (as a tap with `IFF_VNET_HDR`), over a datagram
/// pair; it records the offloads it is told.
struct VnetBackend {
    sock: UnixDatagram,
    offloads: Arc<Mutex<Vec<u32>>>,
}

impl net::NetBackend for VnetBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.sock.recv(buf)
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.sock.send(frame).map(drop)
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }
    fn has_vnet_hdr(&self) -> bool {
        true
    }
    fn set_offload(&mut self, tun_offload: u32) -> std::io::Result<()> {
        self.offloads.lock().unwrap().push(tun_offload);
        Ok(())
    }
}

struct VnetNic {
    mem: GuestMemory,
    rxq: DriverQueue,
    txq: DriverQueue,
    dev: VirtioNet,
    peer: UnixDatagram,
    irq: Arc<CountingInterrupt>,
    offloads: Arc<Mutex<Vec<u32>>>,
}

fn vnet_nic(acked: u64) -> VnetNic {
    vnet_nic_with(acked, 256)
}

fn vnet_nic_with(acked: u64, rx_size: u16) -> VnetNic {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let offloads = Arc::new(Mutex::new(Vec::new()));
    let backend = VnetBackend {
        sock: a,
        offloads: offloads.clone(),
    };
    let (mem, rxq, txq, dev, irq) = activated_nic(Box::new(backend), acked, rx_size);
    VnetNic {
        mem,
        rxq,
        txq,
        dev,
        peer: b,
        irq,
        offloads,
    }
}

/// A `virtio_net_hdr` with `flags`, `gso_type` and the rest zero.
fn vnet_hdr(flags: u8, gso: u8) -> [u8; NET_HDR_LEN] {
    let mut h = [0u8; NET_HDR_LEN];
    h[0] = flags;
    h[1] = gso;
    h[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    h[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
    h
}

const ALL_OFFLOADS: u64 =
    features::VERSION_1 | net::net_features::OFFLOADS | net::net_features::MRG_RXBUF;

#[test]
fn net_offloads_are_offered_only_over_a_vnet_header() {
    let (_, _, _, plain, _, _) = net();
    assert_eq!(plain.device_features() & net::net_features::OFFLOADS, 0);
    assert_ne!(plain.device_features() & net::net_features::MRG_RXBUF, 0);
    let n = vnet_nic(ALL_OFFLOADS);
    // GUEST_CSUM, TSO4, TSO6 and ECN reach the tap on activation; a reset clears them.
    assert_eq!(*n.offloads.lock().unwrap(), vec![0x0f]);
    let mut dev = n.dev;
    dev.reset();
    assert_eq!(*n.offloads.lock().unwrap(), vec![0x0f, 0]);
    let m = vnet_nic(features::VERSION_1 | net::net_features::CSUM | net::net_features::HOST_TSO4);
    assert_eq!(
        *m.offloads.lock().unwrap(),
        vec![0],
        "the guest takes no offload on receive"
    );
}

#[test]
fn net_tx_passes_negotiated_offloads_to_the_tap_and_drops_others() {
    let acked = features::VERSION_1 | net::net_features::CSUM | net::net_features::HOST_TSO4;
    let mut n = vnet_nic(acked);
    let payload: Vec<u8> = (0..30000u32).map(|i| i as u8).collect();
    let send = |n: &mut VnetNic, hdr: [u8; NET_HDR_LEN]| {
        n.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        n.mem.write_slice(&payload, GuestAddress(DATA)).unwrap();
        n.txq.add_chain(
            &n.mem,
            &[
                (HDR, NET_HDR_LEN as u32, false),
                (DATA, payload.len() as u32, false),
            ],
        );
        n.dev.process_queue(TX_QUEUE).unwrap();
    };
    // A 30,000-byte TCP/IPv4 segment with a partial checksum goes out whole, header first.
    let tso = vnet_hdr(net::net_hdr::F_NEEDS_CSUM, net::net_hdr::GSO_TCPV4);
    send(&mut n, tso);
    let mut got = vec![0u8; 70000];
    let len = n.peer.recv(&mut got).unwrap();
    assert_eq!(len, NET_HDR_LEN + payload.len());
    assert_eq!(&got[..NET_HDR_LEN], &tso);
    assert_eq!(&got[NET_HDR_LEN..len], &payload[..]);
    // TSO for IPv6 and ECN were not negotiated: dropped, the buffer returned.
    send(
        &mut n,
        vnet_hdr(net::net_hdr::F_NEEDS_CSUM, net::net_hdr::GSO_TCPV6),
    );
    send(
        &mut n,
        vnet_hdr(
            net::net_hdr::F_NEEDS_CSUM,
            net::net_hdr::GSO_TCPV4 | net::net_hdr::GSO_ECN,
        ),
    );
    // An unknown GSO type (UDP) is never passed on.
    send(&mut n, vnet_hdr(0, 3));
    assert!(n.peer.recv(&mut got).is_err());
    assert_eq!(n.txq.used_idx(&n.mem), 4);
    assert_eq!(n.dev.stats().errors, 3);
    // Without a vnet header on the backend a header asking for anything is dropped too.
    let (mem, _rxq, mut txq, mut dev, peer, _irq) = net();
    mem.write_slice(&vnet_hdr(net::net_hdr::F_NEEDS_CSUM, 0), GuestAddress(HDR))
        .unwrap();
    txq.add_chain(&mem, &[(HDR, NET_HDR_LEN as u32, false), (DATA, 60, false)]);
    dev.process_queue(TX_QUEUE).unwrap();
    assert!(peer.recv(&mut got).is_err());
    assert_eq!(dev.stats().errors, 1);
}

#[test]
fn net_rx_spreads_a_large_packet_over_mergeable_buffers() {
    let mut n = vnet_nic(ALL_OFFLOADS);
    let frame: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut packet = vnet_hdr(net::net_hdr::F_NEEDS_CSUM, net::net_hdr::GSO_TCPV4).to_vec();
    packet.extend_from_slice(&frame);
    n.peer.send(&packet).unwrap();
    // One 2-KiB buffer is not enough: it is held, nothing is used yet.
    n.rxq.add_chain(&n.mem, &[(DATA, 2048, true)]);
    n.dev.process_backend().unwrap();
    assert_eq!(n.rxq.used_idx(&n.mem), 0);
    assert_eq!(n.irq.queue_count(), 0);
    // While held, a saved position puts the buffer back in the available ring.
    assert_eq!(n.dev.queue_positions()[0], (0, 0));
    // Two more arrive: the packet takes all three, published at once with one interrupt.
    n.rxq.add_chain(&n.mem, &[(DATA + 0x1000, 2048, true)]);
    n.rxq.add_chain(&n.mem, &[(DATA + 0x2000, 2048, true)]);
    n.dev.process_queue(RX_QUEUE).unwrap();
    assert_eq!(n.rxq.used_idx(&n.mem), 3);
    assert_eq!(n.irq.queue_count(), 1);
    let lens: Vec<u32> = (0..3).map(|i| n.rxq.used_elem(&n.mem, i).1).collect();
    assert_eq!(lens, vec![2048, 2048, (NET_HDR_LEN + 5000 - 4096) as u32]);
    let mut got = vec![0u8; NET_HDR_LEN + 5000];
    n.mem
        .read_slice(&mut got[..2048], GuestAddress(DATA))
        .unwrap();
    n.mem
        .read_slice(&mut got[2048..4096], GuestAddress(DATA + 0x1000))
        .unwrap();
    n.mem
        .read_slice(&mut got[4096..], GuestAddress(DATA + 0x2000))
        .unwrap();
    assert_eq!(&got[..2], &packet[..2], "flags and gso type kept");
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[NET_HDR_LEN..], &frame[..]);
    assert_eq!(n.dev.queue_positions()[0], (3, 3));
    assert_eq!(n.dev.stats().bytes_to_guest, 5000);
}

#[test]
fn net_rx_drops_what_the_driver_did_not_negotiate() {
    // Checksum offload but no TSO, no mergeable buffers.
    let acked = features::VERSION_1 | net::net_features::GUEST_CSUM;
    let mut n = vnet_nic(acked);
    let send = |n: &VnetNic, hdr: [u8; NET_HDR_LEN]| {
        let mut p = hdr.to_vec();
        p.extend_from_slice(&[0xAB; 100]);
        n.peer.send(&p).unwrap();
    };
    send(
        &n,
        vnet_hdr(net::net_hdr::F_NEEDS_CSUM, net::net_hdr::GSO_TCPV4),
    );
    send(&n, vnet_hdr(net::net_hdr::F_DATA_VALID | 0x40, 0));
    for i in 0..2 {
        n.rxq.add_chain(&n.mem, &[(DATA + i * 0x1000, 2048, true)]);
    }
    n.dev.process_backend().unwrap();
    // The segment is dropped without taking a buffer; the second packet keeps DATA_VALID only.
    assert_eq!(n.rxq.used_idx(&n.mem), 1);
    assert_eq!(n.rxq.used_elem(&n.mem, 0).1, (NET_HDR_LEN + 100) as u32);
    let mut h = [0u8; NET_HDR_LEN];
    n.mem.read_slice(&mut h, GuestAddress(DATA)).unwrap();
    assert_eq!((h[0], h[10]), (net::net_hdr::F_DATA_VALID, 1));
    assert_eq!(n.dev.stats().errors, 1);
    // A driver without GUEST_CSUM gets no flags at all, and no partial checksum.
    let mut m = vnet_nic(features::VERSION_1);
    send(&m, vnet_hdr(net::net_hdr::F_NEEDS_CSUM, 0));
    send(&m, vnet_hdr(net::net_hdr::F_DATA_VALID, 0));
    m.rxq.add_chain(&m.mem, &[(DATA, 2048, true)]);
    m.dev.process_backend().unwrap();
    assert_eq!(m.rxq.used_idx(&m.mem), 1);
    m.mem.read_slice(&mut h, GuestAddress(DATA)).unwrap();
    assert_eq!(h[0], 0);
    // A packet larger than every buffer the ring holds is dropped, its buffers returned empty.
    let mut k = vnet_nic_with(ALL_OFFLOADS, 2);
    let mut big = vnet_hdr(0, 0).to_vec();
    big.extend_from_slice(&[1u8; 3000]);
    k.peer.send(&big).unwrap();
    k.rxq.add_chain(&k.mem, &[(DATA, 1024, true)]);
    k.rxq.add_chain(&k.mem, &[(DATA + 0x1000, 1024, true)]);
    k.dev.process_backend().unwrap();
    assert_eq!(k.rxq.used_idx(&k.mem), 2);
    assert_eq!(k.rxq.used_elem(&k.mem, 0).1, 0);
    assert_eq!(k.rxq.used_elem(&k.mem, 1).1, 0);
}

#[test]
fn net_rx_interrupts_as_used_event_asks() {
    let mut n = vnet_nic(ALL_OFFLOADS | features::RING_EVENT_IDX);
    let mut q = n.rxq.device_queue();
    q.set_event_idx(true);
    let txq = n.txq.device_queue();
    n.dev.reset();
    n.dev
        .set_acked_features(ALL_OFFLOADS | features::RING_EVENT_IDX);
    n.dev
        .activate(n.mem.clone(), n.irq.clone(), vec![q, txq])
        .unwrap();
    // used_event (after the avail ring's 256 entries) = 1: interrupt only once entry 1 is used.
    let used_event = GuestAddress(n.rxq.avail.0 + 4 + 2 * 256);
    n.mem.write_obj(1u16, used_event).unwrap();
    for i in 0..2 {
        n.rxq.add_chain(&n.mem, &[(DATA + i * 0x1000, 2048, true)]);
    }
    n.peer.send(&[0u8; NET_HDR_LEN + 60]).unwrap();
    n.dev.process_backend().unwrap();
    assert_eq!((n.rxq.used_idx(&n.mem), n.irq.queue_count()), (1, 0));
    n.peer.send(&[0u8; NET_HDR_LEN + 60]).unwrap();
    n.dev.process_backend().unwrap();
    assert_eq!((n.rxq.used_idx(&n.mem), n.irq.queue_count()), (2, 1));
}

/// A real tap (root only; in a network namespace of the test thread's own, which goes away
/// with the thread and takes the tap with it): `open_tap` sets the vnet header, `FdBackend`
/// finds it out, and the tap takes the offload bits the device computes.
#[test]
fn net_real_tap_carries_a_vnet_header() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a network namespace and a tap");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare takes no pointers; it moves only this thread, which ends after.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let mut tap = net::open_tap("yunhe-vnet0").unwrap();
        assert!(net::NetBackend::has_vnet_hdr(&tap));
        net::NetBackend::set_offload(&mut tap, 0x0f).unwrap();
        net::NetBackend::set_offload(&mut tap, 0).unwrap();
        // The kernel refuses TSO without checksum offload: the call reaches the tap.
        assert!(net::NetBackend::set_offload(&mut tap, 0x02).is_err());
        // A socket is no tap.
        let (a, _b) = UnixDatagram::pair().unwrap();
        let sock = FdBackend::new(OwnedFd::from(a)).unwrap();
        assert!(!net::NetBackend::has_vnet_hdr(&sock));
    })
    .join()
    .unwrap();
}

// ----- rng -----

#[test]
fn rng_fills_buffers_and_caps_huge_ones() {
    let mem = guest_memory(MEM_SIZE);
    let mut dq = DriverQueue::new(&mem, GuestAddress(QBASE), 64);
    let mut dev = VirtioRng::new();
    let irq = Arc::new(CountingInterrupt::default());
    dev.activate(mem.clone(), irq.clone(), vec![dq.device_queue()])
        .unwrap();
    dq.add_chain(&mem, &[(DATA, 64, true)]);
    dq.add_chain(&mem, &[(DATA + 0x1000, 8 << 20, true)]);
    dq.add_chain(&mem, &[(u64::MAX - 100, 64, true)]);
    dev.process_queue(0).unwrap();
    assert_eq!(dq.used_idx(&mem), 3);
    assert_eq!(dq.used_elem(&mem, 0).1, 64);
    assert_eq!(dq.used_elem(&mem, 1).1, rng::MAX_BYTES_PER_REQUEST as u32);
    assert_eq!(dq.used_elem(&mem, 2).1, 0);
    let mut b = [0u8; 64];
    mem.read_slice(&mut b, GuestAddress(DATA)).unwrap();
    assert!(b.iter().any(|&x| x != 0));
    assert_eq!(irq.queue_count(), 1);
}

// ----- PCI transport -----

#[derive(Default)]
struct Sink {
    routes: Mutex<Vec<(u16, Option<MsiMessage>)>>,
    signals: Mutex<Vec<u16>>,
    intx: Mutex<Vec<bool>>,
}

impl PciInterruptSink for Sink {
    fn route_msix(&self, vector: u16, message: Option<MsiMessage>) {
        self.routes.lock().unwrap().push((vector, message));
    }
    fn signal_msix(&self, vector: u16) {
        self.signals.lock().unwrap().push(vector);
    }
    fn set_intx(&self, asserted: bool) {
        self.intx.lock().unwrap().push(asserted);
    }
}

const BAR: u64 = 0xE000_0000;

fn pci_blk() -> (GuestMemory, VirtioPciDevice, Arc<Sink>) {
    let mem = guest_memory(MEM_SIZE);
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "p");
    let sink = Arc::new(Sink::default());
    let pci = VirtioPciDevice::new(Box::new(dev), mem.clone(), sink.clone(), BAR).unwrap();
    (mem, pci, sink)
}

fn cfg_read(p: &mut VirtioPciDevice, off: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    p.config_read(off, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn cfg_write(p: &mut VirtioPciDevice, off: u64, len: usize, v: u64) -> ConfigWriteOutcome {
    p.config_write(off, &v.to_le_bytes()[..len])
}

fn bar_read(p: &mut VirtioPciDevice, off: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    p.bar_read(off, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn bar_write(p: &mut VirtioPciDevice, off: u64, len: usize, v: u64) -> BarWriteOutcome {
    p.bar_write(off, &v.to_le_bytes()[..len])
}

// Common configuration offsets.
const DFSELECT: u64 = 0x00;
const DF: u64 = 0x04;
const GFSELECT: u64 = 0x08;
const GF: u64 = 0x0C;
const MSIX_CONFIG: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const STATUS_REG: u64 = 0x14;
const Q_SELECT: u64 = 0x16;
const Q_SIZE: u64 = 0x18;
const Q_MSIX: u64 = 0x1A;
const Q_ENABLE: u64 = 0x1C;
const Q_NOTIFY_OFF: u64 = 0x1E;
const Q_DESC: u64 = 0x20;
const Q_AVAIL: u64 = 0x28;
const Q_USED: u64 = 0x30;

#[test]
fn pci_config_space_identity_and_capabilities() {
    let (_, mut p, _) = pci_blk();
    assert_eq!(cfg_read(&mut p, 0, 2), 0x1AF4);
    assert_eq!(cfg_read(&mut p, 2, 2), 0x1042);
    assert_eq!(cfg_read(&mut p, 8, 1), 1);
    assert_ne!(cfg_read(&mut p, 6, 2) & 0x10, 0);
    // Walk the capability list.
    let mut found = Vec::new();
    let mut at = cfg_read(&mut p, 0x34, 1);
    while at != 0 {
        let id = cfg_read(&mut p, at, 1);
        if id == 0x09 {
            found.push((cfg_read(&mut p, at + 3, 1), cfg_read(&mut p, at + 8, 4)));
        } else {
            assert_eq!(id, 0x11);
            // MSI-X: 2 vectors (1 queue + config), table and PBA in BAR 0.
            assert_eq!(cfg_read(&mut p, at + 2, 2) & 0x7FF, 1);
            assert_eq!(cfg_read(&mut p, at + 4, 4), pci::MSIX_TABLE_OFFSET);
            assert_eq!(cfg_read(&mut p, at + 8, 4), pci::MSIX_PBA_OFFSET);
        }
        at = cfg_read(&mut p, at + 1, 1);
    }
    assert_eq!(
        found,
        vec![
            (1, pci::COMMON_CFG_OFFSET),
            (2, pci::NOTIFY_OFFSET),
            (3, pci::ISR_OFFSET),
            (4, pci::DEVICE_CFG_OFFSET),
            (5, 0)
        ]
    );
    // Out-of-range reads are zero, writes ignored.
    assert_eq!(cfg_read(&mut p, 0x800, 4), 0);
    assert_eq!(cfg_write(&mut p, 0x1000, 4, 1), ConfigWriteOutcome::None);
    // Read-only identity.
    cfg_write(&mut p, 0, 4, 0);
    assert_eq!(cfg_read(&mut p, 0, 2), 0x1AF4);
}

#[test]
fn pci_bar_sizing_and_relocation() {
    let (_, mut p, _) = pci_blk();
    assert_eq!(cfg_read(&mut p, 0x10, 4), BAR | 0b100);
    assert_eq!(
        cfg_write(&mut p, 0x10, 4, 0xFFFF_FFFF),
        ConfigWriteOutcome::None
    );
    assert_eq!(
        cfg_read(&mut p, 0x10, 4),
        (!(pci::BAR0_SIZE - 1) & 0xFFFF_FFF0) | 0b100
    );
    assert_eq!(
        cfg_write(&mut p, 0x14, 4, 0xFFFF_FFFF),
        ConfigWriteOutcome::None
    );
    assert_eq!(cfg_read(&mut p, 0x14, 4), 0xFFFF_FFFF);
    // Decoding is off during sizing: nothing moves.
    assert_eq!(p.bar0_address(), BAR);
    assert_eq!(cfg_write(&mut p, 0x14, 4, 0), ConfigWriteOutcome::None);
    assert_eq!(
        cfg_write(&mut p, 0x10, 4, 0xD000_0000),
        ConfigWriteOutcome::None
    );
    assert_eq!(
        cfg_write(&mut p, 0x04, 2, 0x6),
        ConfigWriteOutcome::Bar0Moved {
            old: BAR,
            new: 0xD000_0000
        }
    );
    assert!(p.memory_decode_enabled());
    assert_eq!(p.bar0_address(), 0xD000_0000);
    assert_eq!(
        p.notify_addresses(),
        vec![(0xD000_0000 + pci::NOTIFY_OFFSET, 0)]
    );
    // Unused BARs read 0 and stay 0.
    cfg_write(&mut p, 0x18, 4, 0xFFFF_FFFF);
    assert_eq!(cfg_read(&mut p, 0x18, 4), 0);
}

/// Bring a device to DRIVER_OK with one queue laid out by `dq`.
fn driver_init(p: &mut VirtioPciDevice, dq: &DriverQueue, feats: u64) -> u8 {
    bar_write(p, STATUS_REG, 1, 0);
    bar_write(p, STATUS_REG, 1, 1);
    bar_write(p, STATUS_REG, 1, 1 | 2);
    bar_write(p, GFSELECT, 4, 0);
    bar_write(p, GF, 4, feats & 0xFFFF_FFFF);
    bar_write(p, GFSELECT, 4, 1);
    bar_write(p, GF, 4, feats >> 32);
    bar_write(p, STATUS_REG, 1, 1 | 2 | 8);
    if bar_read(p, STATUS_REG, 1) & 8 == 0 {
        return bar_read(p, STATUS_REG, 1) as u8;
    }
    bar_write(p, Q_SELECT, 2, 0);
    bar_write(p, Q_SIZE, 2, u64::from(dq.size));
    bar_write(p, Q_MSIX, 2, 1);
    // 64-bit fields written as two dwords, as Linux does.
    bar_write(p, Q_DESC, 4, dq.desc.0 & 0xFFFF_FFFF);
    bar_write(p, Q_DESC + 4, 4, dq.desc.0 >> 32);
    bar_write(p, Q_AVAIL, 8, dq.avail.0);
    bar_write(p, Q_USED, 8, dq.used.0);
    bar_write(p, Q_ENABLE, 2, 1);
    bar_write(p, MSIX_CONFIG, 2, 0);
    bar_write(p, STATUS_REG, 1, 1 | 2 | 8 | 4);
    bar_read(p, STATUS_REG, 1) as u8
}

fn enable_msix(p: &mut VirtioPciDevice) {
    for v in 0..2u64 {
        let e = pci::MSIX_TABLE_OFFSET + v * 16;
        bar_write(p, e, 4, 0xFEE0_0000);
        bar_write(p, e + 4, 4, 0);
        bar_write(p, e + 8, 4, 0x40 + v);
        bar_write(p, e + 12, 4, 0); // unmask
    }
    cfg_write(p, 0x42, 2, 0x8000);
}

#[test]
fn pci_feature_negotiation() {
    let (mem, mut p, _) = pci_blk();
    bar_write(&mut p, DFSELECT, 4, 1);
    assert_eq!(bar_read(&mut p, DF, 4) & 1, 1); // VERSION_1 (bit 32)
    bar_write(&mut p, DFSELECT, 4, 0);
    let low = bar_read(&mut p, DF, 4);
    assert_ne!(low & block::blk_features::FLUSH, 0);
    bar_write(&mut p, DFSELECT, 4, 7);
    assert_eq!(bar_read(&mut p, DF, 4), 0);
    let dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    // Without VERSION_1: FEATURES_OK is refused.
    assert_eq!(driver_init(&mut p, &dq, 0) & 8, 0);
    // A feature the device does not offer: refused.
    assert_eq!(
        driver_init(&mut p, &dq, features::VERSION_1 | (1 << 40)) & 8,
        0
    );
    // Accepted.
    let s = driver_init(
        &mut p,
        &dq,
        features::VERSION_1 | block::blk_features::FLUSH,
    );
    assert_eq!(s, 1 | 2 | 4 | 8);
    assert!(p.device().is_activated());
    // Driver features are frozen after FEATURES_OK.
    bar_write(&mut p, GFSELECT, 4, 0);
    bar_write(&mut p, GF, 4, 0);
    assert_eq!(bar_read(&mut p, GF, 4), block::blk_features::FLUSH);
}

#[test]
fn pci_queue_registers() {
    let (_, mut p, _) = pci_blk();
    assert_eq!(bar_read(&mut p, NUM_QUEUES, 2), 1);
    bar_write(&mut p, Q_SELECT, 2, 0);
    assert_eq!(bar_read(&mut p, Q_SIZE, 2), 256);
    // Not a power of two or too big: ignored.
    bar_write(&mut p, Q_SIZE, 2, 100);
    assert_eq!(bar_read(&mut p, Q_SIZE, 2), 256);
    bar_write(&mut p, Q_SIZE, 2, 512);
    assert_eq!(bar_read(&mut p, Q_SIZE, 2), 256);
    bar_write(&mut p, Q_SIZE, 2, 64);
    assert_eq!(bar_read(&mut p, Q_SIZE, 2), 64);
    // Vector beyond the table reads back NO_VECTOR.
    bar_write(&mut p, Q_MSIX, 2, 5);
    assert_eq!(bar_read(&mut p, Q_MSIX, 2), u64::from(NO_VECTOR));
    bar_write(&mut p, Q_MSIX, 2, 1);
    assert_eq!(bar_read(&mut p, Q_MSIX, 2), 1);
    bar_write(&mut p, Q_DESC, 8, 0x1234_5678_9ABC_DEF0);
    assert_eq!(bar_read(&mut p, Q_DESC, 4), 0x9ABC_DEF0);
    assert_eq!(bar_read(&mut p, Q_DESC + 4, 4), 0x1234_5678);
    assert_eq!(bar_read(&mut p, Q_NOTIFY_OFF, 2), 0);
    // A queue that does not exist reads as size 0.
    bar_write(&mut p, Q_SELECT, 2, 3);
    assert_eq!(bar_read(&mut p, Q_SIZE, 2), 0);
    // Notify.
    assert_eq!(
        bar_write(&mut p, pci::NOTIFY_OFFSET, 2, 0),
        BarWriteOutcome::QueueNotify(0)
    );
    assert_eq!(
        bar_write(&mut p, pci::NOTIFY_OFFSET + 4, 2, 1),
        BarWriteOutcome::None
    );
    // Odd access sizes and out-of-BAR offsets are ignored.
    assert_eq!(
        bar_write(&mut p, pci::NOTIFY_OFFSET, 3, 0),
        BarWriteOutcome::None
    );
    assert_eq!(
        bar_write(&mut p, pci::BAR0_SIZE, 4, 0),
        BarWriteOutcome::None
    );
    assert_eq!(bar_read(&mut p, pci::BAR0_SIZE - 2, 4), 0);
}

#[test]
fn pci_end_to_end_block_request_with_msix() {
    let (mem, mut p, sink) = pci_blk();
    let mut dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    enable_msix(&mut p);
    assert!(sink.routes.lock().unwrap().contains(&(
        0,
        Some(MsiMessage {
            address: 0xFEE0_0000,
            data: 0x40
        })
    )));
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    // Device config through BAR 0: capacity in sectors.
    assert_eq!(bar_read(&mut p, pci::DEVICE_CFG_OFFSET, 8), 2048);
    header(&mem, HDR, rt::GET_ID, 0);
    dq.add_chain(
        &mem,
        &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
    );
    let BarWriteOutcome::QueueNotify(q) = bar_write(&mut p, pci::NOTIFY_OFFSET, 2, 0) else {
        panic!("no notify");
    };
    p.process_queue(q);
    assert_eq!(status(&mem), st::OK);
    assert_eq!(*sink.signals.lock().unwrap(), vec![1]);
    // ISR has the queue bit and clears on read.
    assert_eq!(bar_read(&mut p, pci::ISR_OFFSET, 1), 1);
    assert_eq!(bar_read(&mut p, pci::ISR_OFFSET, 1), 0);

    // Mask vector 1: the next interrupt is pending in the PBA, then fires on unmask.
    bar_write(&mut p, pci::MSIX_TABLE_OFFSET + 16 + 12, 4, 1);
    dq.add_chain(
        &mem,
        &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
    );
    p.process_queue(0);
    assert_eq!(sink.signals.lock().unwrap().len(), 1);
    assert_eq!(bar_read(&mut p, pci::MSIX_PBA_OFFSET, 8), 0b10);
    bar_write(&mut p, pci::MSIX_TABLE_OFFSET + 16 + 12, 4, 0);
    assert_eq!(*sink.signals.lock().unwrap(), vec![1, 1]);
    assert_eq!(bar_read(&mut p, pci::MSIX_PBA_OFFSET, 8), 0);
    // Function mask works the same way.
    cfg_write(&mut p, 0x42, 2, 0xC000);
    dq.add_chain(
        &mem,
        &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
    );
    p.process_queue(0);
    assert_eq!(sink.signals.lock().unwrap().len(), 2);
    cfg_write(&mut p, 0x42, 2, 0x8000);
    assert_eq!(sink.signals.lock().unwrap().len(), 3);
    // MSI-X table reads back.
    assert_eq!(bar_read(&mut p, pci::MSIX_TABLE_OFFSET + 8, 4), 0x40);
    assert_eq!(p.device().stats().requests, 3);
}

#[test]
fn pci_intx_without_msix() {
    let (mem, mut p, sink) = pci_blk();
    let mut dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    header(&mem, HDR, rt::FLUSH, 0);
    dq.add_chain(&mem, &[(HDR, 16, false), (STATUS, 1, true)]);
    p.process_queue(0);
    assert_eq!(*sink.intx.lock().unwrap(), vec![true]);
    assert_eq!(bar_read(&mut p, pci::ISR_OFFSET, 1), 1);
    assert_eq!(*sink.intx.lock().unwrap(), vec![true, false]);
}

#[test]
fn pci_reset_returns_to_initial_state() {
    let (mem, mut p, _) = pci_blk();
    let dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    bar_write(&mut p, STATUS_REG, 1, 0);
    assert_eq!(bar_read(&mut p, STATUS_REG, 1), 0);
    assert!(!p.device().is_activated());
    bar_write(&mut p, Q_SELECT, 2, 0);
    assert_eq!(bar_read(&mut p, Q_ENABLE, 2), 0);
    assert_eq!(bar_read(&mut p, Q_SIZE, 2), 256);
    assert_eq!(bar_read(&mut p, Q_MSIX, 2), u64::from(NO_VECTOR));
    assert_eq!(bar_read(&mut p, Q_DESC, 8), 0);
    // And it comes up again.
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    assert!(p.device().is_activated());
}

#[test]
fn pci_queue_outside_memory_needs_reset() {
    let (_, mut p, sink) = pci_blk();
    let mem2 = guest_memory(MEM_SIZE);
    let mut dq = DriverQueue::new(&mem2, GuestAddress(QBASE), 128);
    dq.desc = GuestAddress(MEM_SIZE as u64 + 0x1000);
    enable_msix(&mut p);
    let s = driver_init(&mut p, &dq, features::VERSION_1);
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0);
    assert!(!p.device().is_activated());
    // Config interrupt on vector 0.
    assert_eq!(*sink.signals.lock().unwrap(), vec![0]);
    assert_eq!(bar_read(&mut p, pci::ISR_OFFSET, 1), 2);
    // The driver cannot clear NEEDS_RESET except by resetting.
    bar_write(&mut p, STATUS_REG, 1, 0x0F);
    assert_ne!(
        bar_read(&mut p, STATUS_REG, 1) as u8 & status::DEVICE_NEEDS_RESET,
        0
    );
    bar_write(&mut p, STATUS_REG, 1, 0);
    assert_eq!(bar_read(&mut p, STATUS_REG, 1), 0);
}

#[test]
fn pci_broken_avail_ring_marks_needs_reset() {
    let (mem, mut p, _) = pci_blk();
    let mut dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    dq.set_avail_idx(&mem, 1000);
    p.process_queue(0);
    assert_ne!(p.device_status() & status::DEVICE_NEEDS_RESET, 0);
    // Further notifications are ignored until reset.
    p.process_queue(0);
}

#[test]
fn pci_cfg_access_window_reaches_bar0() {
    let (_, mut p, _) = pci_blk();
    // Window: BAR 0, offset of num_queues, 2 bytes.
    cfg_write(&mut p, 0x94, 1, 0);
    cfg_write(&mut p, 0x98, 4, NUM_QUEUES);
    cfg_write(&mut p, 0x9C, 4, 2);
    assert_eq!(cfg_read(&mut p, 0xA0, 4), 1);
    // Writing status through the window.
    cfg_write(&mut p, 0x98, 4, STATUS_REG);
    cfg_write(&mut p, 0x9C, 4, 1);
    cfg_write(&mut p, 0xA0, 1, 1);
    assert_eq!(bar_read(&mut p, STATUS_REG, 1), 1);
    // Notify through the window.
    cfg_write(&mut p, 0x98, 4, pci::NOTIFY_OFFSET);
    cfg_write(&mut p, 0x9C, 4, 2);
    assert_eq!(
        cfg_write(&mut p, 0xA0, 2, 0),
        ConfigWriteOutcome::QueueNotify(0)
    );
}

#[test]
fn pci_net_and_rng_identities() {
    let mem = guest_memory(1 << 20);
    let (a, _b) = UnixDatagram::pair().unwrap();
    let net = VirtioNet::new(Box::new(FdBackend::new(OwnedFd::from(a)).unwrap()), [2; 6]);
    let sink = Arc::new(Sink::default());
    let mut p = VirtioPciDevice::new(Box::new(net), mem.clone(), sink.clone(), BAR).unwrap();
    assert_eq!(cfg_read(&mut p, 2, 2), 0x1041);
    assert_eq!(cfg_read(&mut p, 0x0B, 1), 0x02);
    assert_eq!(bar_read(&mut p, NUM_QUEUES, 2), 2);
    assert_eq!(p.msix_vectors(), 3);
    assert_eq!(p.notify_addresses().len(), 2);
    assert!(p.backend_fd().is_some());
    let mut r = VirtioPciDevice::new(Box::new(VirtioRng::new()), mem, sink, BAR).unwrap();
    assert_eq!(cfg_read(&mut r, 2, 2), 0x1044);
    assert!(
        VirtioPciDevice::new(
            Box::new(VirtioRng::new()),
            guest_memory(4096),
            Arc::new(Sink::default()),
            0x1234
        )
        .is_err()
    );
}

#[test]
fn counting_interrupt_counts() {
    let c = CountingInterrupt::default();
    c.trigger(VirtioInterruptKind::Config);
    assert_eq!(c.config.load(Ordering::Relaxed), 1);
}

/// Not a timed test: prints the benchmark. `cargo test --release bench_blk -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_blk_path_prints() {
    let r = bench::bench_blk_path();
    assert_eq!(r.errors, 0);
}

#[test]
fn pci_save_and_restore_resumes_queues() {
    let (mem, mut p, _) = pci_blk();
    let mut dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    enable_msix(&mut p);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    for _ in 0..3 {
        header(&mem, HDR, rt::FLUSH, 0);
        dq.add_chain(&mem, &[(HDR, 16, false), (STATUS, 1, true)]);
        p.process_queue(0);
    }
    let state = p.save_state();
    assert_eq!(state.queues[0].next_avail, 3);
    assert_eq!(state.queues[0].next_used, 3);
    // Through JSON, as the VMM writes it.
    let json = serde_json::to_string(&state).unwrap();
    let state: pci::VirtioPciState = serde_json::from_str(&json).unwrap();
    let sink = Arc::new(Sink::default());
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "p");
    let mut r = VirtioPciDevice::restore(Box::new(dev), mem.clone(), sink.clone(), &state).unwrap();
    assert!(r.device().is_activated());
    assert_eq!(r.device_status(), 15);
    assert_eq!(sink.routes.lock().unwrap().len(), 2);
    header(&mem, HDR, rt::GET_ID, 0);
    dq.add_chain(
        &mem,
        &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
    );
    r.process_queue(0);
    assert_eq!(dq.used_idx(&mem), 4);
    assert_eq!(r.device().stats().requests, 1);
    assert_eq!(*sink.signals.lock().unwrap(), vec![1]);
    // A foreign or corrupt state is refused.
    let rng = Box::new(VirtioRng::new());
    assert!(VirtioPciDevice::restore(rng, mem.clone(), sink.clone(), &state).is_err());
    let mut bad = state.clone();
    bad.config_space[2] ^= 1;
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "p");
    assert!(VirtioPciDevice::restore(Box::new(dev), mem.clone(), sink.clone(), &bad).is_err());
    let mut bad = state.clone();
    bad.queues[0].size = 1000;
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "p");
    assert!(VirtioPciDevice::restore(Box::new(dev), mem.clone(), sink.clone(), &bad).is_err());
    let mut bad = state;
    bad.config_space.truncate(10);
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "p");
    assert!(VirtioPciDevice::restore(Box::new(dev), mem, sink, &bad).is_err());
}

#[test]
fn pci_restore_processes_what_was_made_available_before_the_save() {
    let (mem, mut p, _) = pci_blk();
    let mut dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    enable_msix(&mut p);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    // The driver adds a request and notifies, but the VMM pauses and saves before acting on it.
    header(&mem, HDR, rt::FLUSH, 0);
    dq.add_chain(&mem, &[(HDR, 16, false), (STATUS, 1, true)]);
    let state = p.save_state();
    assert_eq!(state.queues[0].next_avail, 0);
    let sink = Arc::new(Sink::default());
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "p");
    let mut r = VirtioPciDevice::restore(Box::new(dev), mem.clone(), sink.clone(), &state).unwrap();
    // Nothing moves before the vCPUs hold their state: an interrupt now would reach no APIC.
    assert_eq!(dq.used_idx(&mem), 0);
    assert!(sink.signals.lock().unwrap().is_empty());
    r.resume_after_restore();
    // The restored device completed it with no new notification, and told the driver.
    assert_eq!(dq.used_idx(&mem), 1);
    assert_eq!(r.device().stats().requests, 1);
    assert!(sink.signals.lock().unwrap().contains(&1));
}

/// An interrupt the old VMM raised after the vCPUs parked is in the saved used ring but in no
/// saved APIC; with EVENT_IDX the device would never raise it again. The restored device
/// interrupts each enabled queue once, with nothing new to serve.
#[test]
fn pci_restore_interrupts_every_queue_once() {
    let (mem, mut p, _) = pci_blk();
    let dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    enable_msix(&mut p);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    let state = p.save_state();
    let sink = Arc::new(Sink::default());
    let dev = VirtioBlock::new(Box::new(MemoryBackend::new(1 << 20)), false, "p");
    let mut r = VirtioPciDevice::restore(Box::new(dev), mem.clone(), sink.clone(), &state).unwrap();
    r.resume_after_restore();
    assert_eq!(dq.used_idx(&mem), 0);
    assert_eq!(*sink.signals.lock().unwrap(), vec![1]);
}

/// With EVENT_IDX the device must publish avail_event, or a Linux driver stops notifying.
#[test]
fn event_idx_publishes_avail_event() {
    use virtio_queue::QueueT;
    let mem = guest_memory(MEM_SIZE);
    let rxq = DriverQueue::new(&mem, GuestAddress(QBASE), 256);
    let mut txq = DriverQueue::new(&mem, GuestAddress(0x8000), 256);
    let (a, peer) = UnixDatagram::pair().unwrap();
    let mut dev = VirtioNet::new(Box::new(FdBackend::new(OwnedFd::from(a)).unwrap()), [2; 6]);
    let irq = Arc::new(CountingInterrupt::default());
    let mut qs = vec![rxq.device_queue(), txq.device_queue()];
    for q in &mut qs {
        q.set_event_idx(true);
    }
    dev.activate(mem.clone(), irq.clone(), qs).unwrap();
    let avail_event = |dq: &DriverQueue| -> u16 {
        mem.read_obj(GuestAddress(dq.used.0 + 4 + 8 * u64::from(dq.size)))
            .unwrap()
    };
    mem.write_slice(&[0u8; 64], GuestAddress(DATA)).unwrap();
    txq.add_chain(&mem, &[(DATA, 64, false)]);
    txq.add_chain(&mem, &[(DATA, 64, false)]);
    dev.process_queue(TX_QUEUE).unwrap();
    assert_eq!(avail_event(&txq), 2);
    let mut b = [0u8; 64];
    assert_eq!(peer.recv(&mut b).unwrap(), 52);
    // used_event (avail ring tail) is 0: the driver asked for an interrupt after the first.
    assert_eq!(irq.queue_count(), 1);
    dev.process_queue(RX_QUEUE).unwrap();
    assert_eq!(avail_event(&rxq), 0);
}

/// Two disks, one a raw file and one read-only in memory, each with its own queue.
#[test]
fn blk_several_disks_raw_file_requests() {
    let dir = std::env::temp_dir().join(format!("yunhe-virtio-disks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.raw");
    let mut image = vec![0u8; 1 << 16];
    image[..512].copy_from_slice(&[0x42; 512]);
    std::fs::write(&path, &image).unwrap();
    let mem = guest_memory(MEM_SIZE);
    let irq = Arc::new(CountingInterrupt::default());
    let mut q1 = DriverQueue::new(&mem, GuestAddress(QBASE), 64);
    let mut q2 = DriverQueue::new(&mem, GuestAddress(0x8000), 64);
    let file = RawFileBackend::open(&path, false).unwrap();
    let mut d1 = VirtioBlock::new(Box::new(file), false, "a");
    let mut d2 = VirtioBlock::new(Box::new(MemoryBackend::new(4096)), true, "b");
    d1.activate(mem.clone(), irq.clone(), vec![q1.device_queue()])
        .unwrap();
    d2.activate(mem.clone(), irq.clone(), vec![q2.device_queue()])
        .unwrap();
    // Read sector 0 of disk a, write it to sector 8 of a, try to write disk b.
    assert_eq!(
        simple_request(&mem, &mut q1, &mut d1, rt::IN, 0, 512, true),
        (st::OK, 513)
    );
    let mut s0 = [0u8; 512];
    mem.read_slice(&mut s0, GuestAddress(DATA)).unwrap();
    assert_eq!(s0, [0x42; 512]);
    assert_eq!(
        simple_request(&mem, &mut q1, &mut d1, rt::OUT, 8, 512, false).0,
        st::OK
    );
    assert_eq!(
        simple_request(&mem, &mut q1, &mut d1, rt::FLUSH, 0, 0, false).0,
        st::OK
    );
    assert_eq!(
        simple_request(&mem, &mut q2, &mut d2, rt::OUT, 0, 512, false).0,
        st::IOERR
    );
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk[4096..4608], [0x42; 512]);
    // Past the end of the file.
    assert_eq!(
        simple_request(&mem, &mut q1, &mut d1, rt::IN, 128, 512, true).0,
        st::IOERR
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// virtio-net through the PCI transport as Linux drives it: two queues, EVENT_IDX, MSI-X.
#[test]
fn pci_net_end_to_end() {
    let mem = guest_memory(MEM_SIZE);
    let (a, peer) = UnixDatagram::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    let net = VirtioNet::new(
        Box::new(FdBackend::new(OwnedFd::from(a)).unwrap()),
        [0x52, 0x54, 0, 0xAB, 0xCD, 0xEF],
    );
    let sink = Arc::new(Sink::default());
    let mut p = VirtioPciDevice::new(Box::new(net), mem.clone(), sink.clone(), BAR).unwrap();
    let mut rxq = DriverQueue::new(&mem, GuestAddress(QBASE), 256);
    let mut txq = DriverQueue::new(&mem, GuestAddress(0x8000), 256);
    for v in 0..3u64 {
        let e = pci::MSIX_TABLE_OFFSET + v * 16;
        bar_write(&mut p, e, 4, 0xFEE0_0000);
        bar_write(&mut p, e + 8, 4, 0x50 + v);
        bar_write(&mut p, e + 12, 4, 0);
    }
    cfg_write(&mut p, 0x42, 2, 0x8000);
    bar_write(&mut p, STATUS_REG, 1, 0);
    bar_write(&mut p, STATUS_REG, 1, 3);
    bar_write(&mut p, DFSELECT, 4, 0);
    let offered = bar_read(&mut p, DF, 4);
    assert_ne!(offered & net::net_features::MAC, 0);
    let feats = features::VERSION_1 | features::RING_EVENT_IDX | net::net_features::MAC;
    bar_write(&mut p, GFSELECT, 4, 0);
    bar_write(&mut p, GF, 4, feats & 0xFFFF_FFFF);
    bar_write(&mut p, GFSELECT, 4, 1);
    bar_write(&mut p, GF, 4, feats >> 32);
    bar_write(&mut p, STATUS_REG, 1, 11);
    assert_eq!(bar_read(&mut p, STATUS_REG, 1), 11);
    bar_write(&mut p, MSIX_CONFIG, 2, 0);
    for (i, dq) in [&rxq, &txq].into_iter().enumerate() {
        bar_write(&mut p, Q_SELECT, 2, i as u64);
        assert_eq!(bar_read(&mut p, Q_NOTIFY_OFF, 2), i as u64);
        bar_write(&mut p, Q_MSIX, 2, i as u64 + 1);
        bar_write(&mut p, Q_DESC, 8, dq.desc.0);
        bar_write(&mut p, Q_AVAIL, 8, dq.avail.0);
        bar_write(&mut p, Q_USED, 8, dq.used.0);
        bar_write(&mut p, Q_ENABLE, 2, 1);
    }
    bar_write(&mut p, STATUS_REG, 1, 15);
    assert_eq!(bar_read(&mut p, STATUS_REG, 1), 15);
    // MAC through the device configuration window, byte by byte as Linux reads it.
    let mac: Vec<u64> = (0..6)
        .map(|i| bar_read(&mut p, pci::DEVICE_CFG_OFFSET + i, 1))
        .collect();
    assert_eq!(mac, vec![0x52, 0x54, 0, 0xAB, 0xCD, 0xEF]);
    // RX: the guest posts a buffer and kicks, a frame arrives from the tap side.
    rxq.add_chain(&mem, &[(DATA, 1526, true)]);
    let BarWriteOutcome::QueueNotify(q) = bar_write(&mut p, pci::NOTIFY_OFFSET, 2, 0) else {
        panic!("no RX notify");
    };
    p.process_queue(q);
    peer.send(&[0x11u8; 42]).unwrap();
    p.process_backend();
    assert_eq!(rxq.used_elem(&mem, 0).1, (NET_HDR_LEN + 42) as u32);
    // TX via queue 1's notify address.
    mem.write_slice(&[0u8; 12], GuestAddress(HDR)).unwrap();
    mem.write_slice(&[0x22u8; 60], GuestAddress(HDR + 12))
        .unwrap();
    txq.add_chain(&mem, &[(HDR, 72, false)]);
    let BarWriteOutcome::QueueNotify(q) = bar_write(&mut p, pci::NOTIFY_OFFSET + 4, 2, 1) else {
        panic!("no TX notify");
    };
    p.process_queue(q);
    let mut got = [0u8; 100];
    assert_eq!(peer.recv(&mut got).unwrap(), 60);
    assert_eq!(*sink.signals.lock().unwrap(), vec![1, 2]);
    let s = p.device().stats();
    assert_eq!(
        (s.requests, s.bytes_to_guest, s.bytes_from_guest),
        (2, 42, 60)
    );
}

// ----- online resize -----

/// A scratch image of `bytes` bytes, removed on drop.
struct ScratchImage {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl ScratchImage {
    fn new(tag: &str, bytes: u64) -> Self {
        let dir =
            std::env::temp_dir().join(format!("yunhe-virtio-resize-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.raw");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        ScratchImage { dir, path }
    }

    fn set_len(&self, bytes: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap()
            .set_len(bytes)
            .unwrap();
    }

    fn disk(&self) -> VirtioBlock {
        let b = RawFileBackend::open(&self.path, false).unwrap();
        VirtioBlock::new(Box::new(b), false, "grow")
    }
}

impl Drop for ScratchImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_capacity(dev: &dyn VirtioDevice) -> u64 {
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    u64::from_le_bytes(cap)
}

#[test]
fn blk_resize_takes_the_image_size_and_refuses_shrinking() {
    let img = ScratchImage::new("blk", 1 << 20);
    let mut dev = img.disk();
    assert_eq!(config_capacity(&dev), 2048);
    assert_eq!(dev.capacity(), Some(1 << 20));
    // Nothing changed: same size, nothing to tell.
    let r = dev.resize().unwrap();
    assert_eq!((r.old, r.new), (1 << 20, 1 << 20));
    img.set_len(3 << 20);
    let r = dev.resize().unwrap();
    assert_eq!((r.old, r.new), (1 << 20, 3 << 20));
    assert_eq!(config_capacity(&dev), 6144);
    assert_eq!(dev.capacity(), Some(3 << 20));
    // The grown part is readable: a request past the old end succeeds.
    let mem = guest_memory(MEM_SIZE);
    let mut dq = DriverQueue::new(&mem, GuestAddress(QBASE), 256);
    let irq = Arc::new(CountingInterrupt::default());
    dev.activate(mem.clone(), irq, vec![dq.device_queue()])
        .unwrap();
    header(&mem, HDR, rt::IN, 5000);
    dq.add_chain(
        &mem,
        &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
    );
    dev.process_queue(0).unwrap();
    assert_eq!(status(&mem), st::OK);
    // A smaller image is refused and the capacity kept.
    img.set_len(2 << 20);
    assert!(matches!(
        dev.resize(),
        Err(ResizeError::Shrunk { old, new }) if old == 3 << 20 && new == 2 << 20
    ));
    assert_eq!(config_capacity(&dev), 6144);
    // Devices without a capacity refuse.
    assert!(matches!(
        VirtioRng::new().resize(),
        Err(ResizeError::NotADisk)
    ));
}

fn pci_over(img: &ScratchImage) -> (GuestMemory, VirtioPciDevice, Arc<Sink>) {
    let mem = guest_memory(MEM_SIZE);
    let sink = Arc::new(Sink::default());
    let pci = VirtioPciDevice::new(Box::new(img.disk()), mem.clone(), sink.clone(), BAR).unwrap();
    (mem, pci, sink)
}

const CONFIG_GENERATION: u64 = 0x15;

#[test]
fn pci_resize_bumps_the_generation_and_raises_the_config_interrupt() {
    let img = ScratchImage::new("msix", 1 << 20);
    let (mem, mut p, sink) = pci_over(&img);
    let dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    enable_msix(&mut p);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    assert_eq!(bar_read(&mut p, pci::DEVICE_CFG_OFFSET, 8), 2048);
    let generation = bar_read(&mut p, CONFIG_GENERATION, 1);
    // Unchanged size: no generation change, no interrupt.
    p.resize().unwrap();
    assert_eq!(bar_read(&mut p, CONFIG_GENERATION, 1), generation);
    assert!(sink.signals.lock().unwrap().is_empty());
    img.set_len(4 << 20);
    let r = p.resize().unwrap();
    assert_eq!((r.old, r.new), (1 << 20, 4 << 20));
    assert_eq!(bar_read(&mut p, pci::DEVICE_CFG_OFFSET, 8), 8192);
    assert_eq!(
        bar_read(&mut p, CONFIG_GENERATION, 1),
        (generation + 1) & 0xFF
    );
    // driver_init put the configuration interrupt on vector 0.
    assert_eq!(*sink.signals.lock().unwrap(), vec![0]);
    assert_eq!(bar_read(&mut p, pci::ISR_OFFSET, 1), 2);
    // A refused shrink changes nothing the guest sees.
    img.set_len(1 << 20);
    assert!(p.resize().is_err());
    assert_eq!(bar_read(&mut p, pci::DEVICE_CFG_OFFSET, 8), 8192);
    assert_eq!(sink.signals.lock().unwrap().len(), 1);
}

#[test]
fn pci_resize_uses_isr_bit_1_on_intx_and_waits_for_driver_ok() {
    let img = ScratchImage::new("intx", 1 << 20);
    let (mem, mut p, sink) = pci_over(&img);
    // Before the driver is up: the capacity changes, no interrupt.
    img.set_len(2 << 20);
    p.resize().unwrap();
    assert!(sink.intx.lock().unwrap().is_empty());
    let dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    assert_eq!(bar_read(&mut p, pci::DEVICE_CFG_OFFSET, 8), 4096);
    img.set_len(3 << 20);
    p.resize().unwrap();
    assert_eq!(*sink.intx.lock().unwrap(), vec![true]);
    assert_eq!(bar_read(&mut p, pci::ISR_OFFSET, 1), 2);
    assert_eq!(*sink.intx.lock().unwrap(), vec![true, false]);
    assert_eq!(bar_read(&mut p, pci::DEVICE_CFG_OFFSET, 8), 6144);
}

#[test]
fn pci_save_and_restore_keep_the_new_capacity() {
    let img = ScratchImage::new("save", 1 << 20);
    let (mem, mut p, _) = pci_over(&img);
    let dq = DriverQueue::new(&mem, GuestAddress(QBASE), 128);
    enable_msix(&mut p);
    assert_eq!(driver_init(&mut p, &dq, features::VERSION_1), 15);
    img.set_len(5 << 20);
    p.resize().unwrap();
    let generation = bar_read(&mut p, CONFIG_GENERATION, 1);
    let json = serde_json::to_string(&p.save_state()).unwrap();
    let state: pci::VirtioPciState = serde_json::from_str(&json).unwrap();
    // A restore reopens the image, whose size is the capacity.
    let sink = Arc::new(Sink::default());
    let mut r = VirtioPciDevice::restore(Box::new(img.disk()), mem, sink, &state).unwrap();
    assert_eq!(bar_read(&mut r, pci::DEVICE_CFG_OFFSET, 8), 10240);
    assert_eq!(bar_read(&mut r, CONFIG_GENERATION, 1), generation);
    assert_eq!(r.device().capacity(), Some(5 << 20));
}
