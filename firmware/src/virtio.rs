//! A minimal polling virtio 1.x PCI driver: enough for one blk read, one
//! DHCP exchange and one rng read. No interrupts: MSI-X vectors stay unset.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{Ordering, fence};

use crate::PciAddr;
use crate::io::{print, print_dec, putc};

const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

const QUEUE_SIZE: u16 = 8;
/// Polling iterations before a request is declared lost (each is a few µs here).
const POLL_LIMIT: u32 = 300_000;

/// Scratch memory for rings and buffers; reused by each device in turn.
#[repr(C, align(4096))]
struct Pool([u8; 16 * 4096]);

static mut POOL: Pool = Pool([0; 16 * 4096]);

fn pool_page(i: usize) -> u64 {
    // SAFETY: only the address of the static is taken; the probe is single-threaded.
    let base = core::ptr::addr_of_mut!(POOL) as u64;
    base + (i as u64) * 4096
}

fn zero_page(addr: u64) {
    // SAFETY: the page belongs to POOL.
    unsafe { core::ptr::write_bytes(addr as usize as *mut u8, 0, 4096) };
}

fn mmio_r8(a: u64) -> u8 {
    // SAFETY: `a` lies in a BAR of a virtio device (identity-mapped below 4 GiB).
    unsafe { read_volatile(a as usize as *const u8) }
}
fn mmio_w8(a: u64, v: u8) {
    // SAFETY: as mmio_r8.
    unsafe { write_volatile(a as usize as *mut u8, v) }
}
fn mmio_r16(a: u64) -> u16 {
    // SAFETY: as mmio_r8.
    unsafe { read_volatile(a as usize as *const u16) }
}
fn mmio_w16(a: u64, v: u16) {
    // SAFETY: as mmio_r8.
    unsafe { write_volatile(a as usize as *mut u16, v) }
}
fn mmio_r32(a: u64) -> u32 {
    // SAFETY: as mmio_r8.
    unsafe { read_volatile(a as usize as *const u32) }
}
fn mmio_w32(a: u64, v: u32) {
    // SAFETY: as mmio_r8.
    unsafe { write_volatile(a as usize as *mut u32, v) }
}
fn mem_w16(a: u64, v: u16) {
    // SAFETY: `a` lies in POOL.
    unsafe { write_volatile(a as usize as *mut u16, v) }
}
fn mem_r16(a: u64) -> u16 {
    // SAFETY: `a` lies in POOL.
    unsafe { read_volatile(a as usize as *const u16) }
}
fn mem_w32(a: u64, v: u32) {
    // SAFETY: `a` lies in POOL.
    unsafe { write_volatile(a as usize as *mut u32, v) }
}
fn mem_r32(a: u64) -> u32 {
    // SAFETY: `a` lies in POOL.
    unsafe { read_volatile(a as usize as *const u32) }
}
fn mem_w64(a: u64, v: u64) {
    // SAFETY: `a` lies in POOL.
    unsafe { write_volatile(a as usize as *mut u64, v) }
}
fn buf<'a>(a: u64, len: usize) -> &'a mut [u8] {
    // SAFETY: `a..a+len` lies in one POOL page; the probe is single-threaded.
    unsafe { core::slice::from_raw_parts_mut(a as usize as *mut u8, len) }
}

struct Queue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    notify: u64,
    index: u16,
    next_avail: u16,
    last_used: u16,
}

impl Queue {
    fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc + 16 * i as u64;
        mem_w64(d, addr);
        mem_w32(d + 8, len);
        mem_w16(d + 12, flags);
        mem_w16(d + 14, next);
    }

    /// Makes the chain starting at `head` available and notifies the device.
    fn kick(&mut self, head: u16) {
        let slot = self.next_avail % self.size;
        mem_w16(self.avail + 4 + 2 * slot as u64, head);
        fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(1);
        mem_w16(self.avail + 2, self.next_avail);
        fence(Ordering::SeqCst);
        mmio_w16(self.notify, self.index);
    }

    /// Waits for the next used element; returns its (id, len).
    fn wait_used(&mut self, limit: u32) -> Option<(u32, u32)> {
        let mut n = 0;
        while mem_r16(self.used + 2) == self.last_used {
            n += 1;
            if n >= limit {
                return None;
            }
            core::hint::spin_loop();
        }
        fence(Ordering::SeqCst);
        let slot = self.last_used % self.size;
        let e = self.used + 4 + 8 * slot as u64;
        self.last_used = self.last_used.wrapping_add(1);
        Some((mem_r32(e), mem_r32(e + 4)))
    }
}

/// A virtio 1.x device behind the modern PCI transport.
pub struct Device {
    common: u64,
    notify_base: u64,
    notify_mul: u32,
    device_cfg: u64,
    next_page: usize,
}

fn bar_address(addr: PciAddr, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let off = 0x10 + 4 * bar;
    let lo = addr.read(off);
    if lo & 1 != 0 {
        return None;
    }
    let mut base = (lo & !0xf) as u64;
    if (lo >> 1) & 3 == 2 && bar < 5 {
        base |= (addr.read(off + 4) as u64) << 32;
    }
    if base == 0 || base >= 0x1_0000_0000 {
        None
    } else {
        Some(base)
    }
}

impl Device {
    /// Finds the transport's capabilities and resets the device.
    pub fn open(addr: PciAddr) -> Option<Device> {
        // Memory space and bus mastering on.
        let cmd = addr.read(0x04);
        addr.write(0x04, (cmd & 0xffff) | 0x6);
        if (cmd >> 16) & 0x10 == 0 {
            return None;
        }
        let mut dev = Device {
            common: 0,
            notify_base: 0,
            notify_mul: 0,
            device_cfg: 0,
            next_page: 0,
        };
        let mut ptr = (addr.read(0x34) & 0xfc) as u8;
        let mut guard = 0;
        while ptr != 0 && guard < 48 {
            guard += 1;
            let head = addr.read(ptr);
            let next = ((head >> 8) & 0xfc) as u8;
            if head & 0xff == 0x09 {
                let cfg_type = (head >> 24) & 0xff;
                let bar = (addr.read(ptr + 4) & 0xff) as u8;
                let offset = addr.read(ptr + 8) as u64;
                if let Some(base) = bar_address(addr, bar) {
                    match cfg_type {
                        1 => dev.common = base + offset,
                        2 => {
                            dev.notify_base = base + offset;
                            dev.notify_mul = addr.read(ptr + 16);
                        }
                        4 => dev.device_cfg = base + offset,
                        _ => {}
                    }
                }
            }
            ptr = next;
        }
        if dev.common == 0 || dev.notify_base == 0 {
            return None;
        }
        dev.reset();
        Some(dev)
    }

    pub fn reset(&mut self) {
        mmio_w8(self.common + 0x14, 0);
        let mut n = 0;
        while mmio_r8(self.common + 0x14) != 0 && n < 1000 {
            n += 1;
        }
    }

    /// Acknowledges the device and negotiates VERSION_1 plus `low` (feature bits 0..32).
    fn negotiate(&mut self, low: u32) -> bool {
        mmio_w8(self.common + 0x14, STATUS_ACKNOWLEDGE);
        mmio_w8(self.common + 0x14, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        mmio_w32(self.common, 0);
        let dev_low = mmio_r32(self.common + 4);
        mmio_w32(self.common, 1);
        let dev_high = mmio_r32(self.common + 4);
        if dev_high & 1 == 0 {
            print("device lacks VIRTIO_F_VERSION_1; ");
            return false;
        }
        mmio_w32(self.common + 8, 0);
        mmio_w32(self.common + 0xc, dev_low & low);
        mmio_w32(self.common + 8, 1);
        mmio_w32(self.common + 0xc, 1);
        let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        mmio_w8(self.common + 0x14, s);
        if mmio_r8(self.common + 0x14) & STATUS_FEATURES_OK == 0 {
            print("features refused; ");
            return false;
        }
        true
    }

    fn driver_ok(&mut self) {
        let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        mmio_w8(self.common + 0x14, s);
    }

    fn page(&mut self) -> u64 {
        let p = pool_page(self.next_page % 16);
        self.next_page += 1;
        zero_page(p);
        p
    }

    fn queue(&mut self, index: u16) -> Option<Queue> {
        mmio_w16(self.common + 0x16, index);
        let max = mmio_r16(self.common + 0x18);
        if max == 0 {
            print("queue ");
            print_dec(index as u64);
            print(" missing; ");
            return None;
        }
        let mut size = QUEUE_SIZE;
        while size > max {
            size /= 2;
        }
        let (desc, avail, used) = (self.page(), self.page(), self.page());
        mmio_w16(self.common + 0x18, size);
        mmio_w16(self.common + 0x1a, 0xffff);
        mmio_w32(self.common + 0x20, desc as u32);
        mmio_w32(self.common + 0x24, (desc >> 32) as u32);
        mmio_w32(self.common + 0x28, avail as u32);
        mmio_w32(self.common + 0x2c, (avail >> 32) as u32);
        mmio_w32(self.common + 0x30, used as u32);
        mmio_w32(self.common + 0x34, (used >> 32) as u32);
        let notify_off = mmio_r16(self.common + 0x1e) as u64;
        mmio_w16(self.common + 0x1c, 1);
        Some(Queue {
            size,
            desc,
            avail,
            used,
            notify: self.notify_base + notify_off * self.notify_mul as u64,
            index,
            next_avail: 0,
            last_used: 0,
        })
    }

    /// Reads sector 0; returns (capacity in sectors, FNV-1a of the sector).
    pub fn blk_read_sector0(&mut self) -> Option<(u64, u32)> {
        if !self.negotiate(0) {
            return None;
        }
        let mut q = self.queue(0)?;
        self.driver_ok();
        let capacity = if self.device_cfg != 0 {
            mmio_r32(self.device_cfg) as u64 | (mmio_r32(self.device_cfg + 4) as u64) << 32
        } else {
            0
        };
        let page = self.page();
        let (hdr, data, status) = (page, page + 512, page + 2048);
        mem_w32(hdr, 0); // VIRTIO_BLK_T_IN
        mem_w32(hdr + 4, 0);
        mem_w64(hdr + 8, 0);
        buf(status, 1)[0] = 0xff;
        q.set_desc(0, hdr, 16, DESC_F_NEXT, 1);
        q.set_desc(1, data, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
        q.set_desc(2, status, 1, DESC_F_WRITE, 0);
        q.kick(0);
        q.wait_used(POLL_LIMIT)?;
        if buf(status, 1)[0] != 0 {
            print("status ");
            print_dec(buf(status, 1)[0] as u64);
            print("; ");
            return None;
        }
        let mut h: u32 = 0x811c_9dc5;
        for &b in buf(data, 512).iter() {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        Some((capacity, h))
    }

    /// Reads 16 random bytes.
    pub fn rng_read(&mut self) -> Option<[u8; 16]> {
        if !self.negotiate(0) {
            return None;
        }
        let mut q = self.queue(0)?;
        self.driver_ok();
        let page = self.page();
        q.set_desc(0, page, 16, DESC_F_WRITE, 0);
        q.kick(0);
        let (_, len) = q.wait_used(POLL_LIMIT)?;
        if len == 0 {
            return None;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&buf(page, 16)[..16]);
        Some(out)
    }

    /// Broadcasts a DHCP DISCOVER and prints the offer, or "no offer".
    pub fn net_dhcp_discover(&mut self) {
        const F_MAC: u32 = 1 << 5;
        if !self.negotiate(F_MAC) {
            print("setup failed\n");
            return;
        }
        let (Some(mut rx), Some(mut tx)) = (self.queue(0), self.queue(1)) else {
            print("setup failed\n");
            return;
        };
        self.driver_ok();
        let mut mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        if self.device_cfg != 0 {
            for (i, m) in mac.iter_mut().enumerate() {
                *m = mmio_r8(self.device_cfg + i as u64);
            }
        }
        // Two receive buffers, one page each.
        let rx_pages = [self.page(), self.page()];
        for (i, &p) in rx_pages.iter().enumerate() {
            rx.set_desc(i as u16, p, 2048, DESC_F_WRITE, 0);
            rx.kick(i as u16);
        }
        let txp = self.page();
        let len = build_discover(buf(txp, 4096), &mac);
        tx.set_desc(0, txp, len as u32, 0, 0);
        tx.kick(0);
        if tx.wait_used(POLL_LIMIT).is_none() {
            print("transmit timed out\n");
            return;
        }
        // Wait for an offer; other traffic is skipped and its buffer reposted.
        for _ in 0..8 {
            let Some((id, len)) = rx.wait_used(POLL_LIMIT) else {
                break;
            };
            let id = (id as usize) % 2;
            let p = rx_pages[id];
            let len = (len as usize).min(2048);
            if let Some((yiaddr, server)) = parse_offer(&buf(p, 2048)[..len]) {
                print("offer ");
                print_ip(yiaddr);
                print(" from ");
                print_ip(server);
                putc(b'\n');
                return;
            }
            rx.kick(id as u16);
        }
        print("no offer\n");
    }
}

fn print_ip(ip: [u8; 4]) {
    for (i, b) in ip.iter().enumerate() {
        if i > 0 {
            putc(b'.');
        }
        print_dec(*b as u64);
    }
}

const XID: u32 = 0x7968_656e;
/// virtio_net_hdr with VIRTIO_F_VERSION_1: 12 bytes.
const NET_HDR: usize = 12;

fn build_discover(b: &mut [u8], mac: &[u8; 6]) -> usize {
    let e = NET_HDR;
    b[e..e + 6].copy_from_slice(&[0xff; 6]);
    b[e + 6..e + 12].copy_from_slice(mac);
    b[e + 12] = 0x08;
    b[e + 13] = 0x00;
    let ip = e + 14;
    let udp = ip + 20;
    let dhcp = udp + 8;
    // BOOTP fixed part.
    b[dhcp] = 1;
    b[dhcp + 1] = 1;
    b[dhcp + 2] = 6;
    b[dhcp + 4..dhcp + 8].copy_from_slice(&XID.to_be_bytes());
    b[dhcp + 10] = 0x80; // broadcast flag
    b[dhcp + 28..dhcp + 34].copy_from_slice(mac);
    let opt = dhcp + 236;
    b[opt..opt + 4].copy_from_slice(&[99, 130, 83, 99]);
    b[opt + 4..opt + 7].copy_from_slice(&[53, 1, 1]);
    b[opt + 7..opt + 11].copy_from_slice(&[55, 2, 1, 3]);
    b[opt + 11] = 255;
    let dhcp_len = 300;
    let udp_len = 8 + dhcp_len;
    let ip_len = 20 + udp_len;
    b[udp..udp + 2].copy_from_slice(&68u16.to_be_bytes());
    b[udp + 2..udp + 4].copy_from_slice(&67u16.to_be_bytes());
    b[udp + 4..udp + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    b[ip] = 0x45;
    b[ip + 2..ip + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    b[ip + 8] = 64;
    b[ip + 9] = 17;
    b[ip + 16..ip + 20].copy_from_slice(&[255; 4]);
    let mut sum: u32 = 0;
    for i in 0..10 {
        sum += u16::from_be_bytes([b[ip + 2 * i], b[ip + 2 * i + 1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    b[ip + 10..ip + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    NET_HDR + 14 + ip_len
}

/// Returns (your IP, server id) when `frame` is a DHCP OFFER for our XID.
fn parse_offer(frame: &[u8]) -> Option<([u8; 4], [u8; 4])> {
    let e = NET_HDR;
    let ip = e + 14;
    if frame.len() < ip + 20 + 8 + 240 || frame[e + 12] != 0x08 || frame[e + 13] != 0 {
        return None;
    }
    let ihl = ((frame[ip] & 0xf) as usize) * 4;
    if frame[ip + 9] != 17 || ihl < 20 {
        return None;
    }
    let udp = ip + ihl;
    let dhcp = udp + 8;
    if frame.len() < dhcp + 240 || u16::from_be_bytes([frame[udp + 2], frame[udp + 3]]) != 68 {
        return None;
    }
    if frame[dhcp] != 2 || frame[dhcp + 4..dhcp + 8] != XID.to_be_bytes() {
        return None;
    }
    let mut yiaddr = [0u8; 4];
    yiaddr.copy_from_slice(&frame[dhcp + 16..dhcp + 20]);
    let mut server = [0u8; 4];
    server.copy_from_slice(&frame[dhcp + 20..dhcp + 24]);
    let mut is_offer = false;
    let mut i = dhcp + 240;
    while i + 1 < frame.len() {
        let code = frame[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = frame[i + 1] as usize;
        if i + 2 + len > frame.len() {
            break;
        }
        if code == 53 && len == 1 {
            is_offer = frame[i + 2] == 2;
        }
        if code == 54 && len == 4 {
            server.copy_from_slice(&frame[i + 2..i + 6]);
        }
        i += 2 + len;
    }
    if is_offer {
        Some((yiaddr, server))
    } else {
        None
    }
}
