//! The serial console's output side: a bounded ring buffer of recent output, a
//! size-capped log file, and live subscribers (the terminal of `vm run`,
//! `console` clients of the control socket).

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use super::bus::lock;

/// How much recent output the ring buffer keeps.
pub const RING_CAPACITY: usize = 64 * 1024;
/// The console log stops growing at this size (a note says so).
pub const LOG_CAP: u64 = 16 << 20;
/// Chunks a slow subscriber may fall behind before it is dropped.
const SUBSCRIBER_BACKLOG: usize = 1024;

struct Inner {
    ring: VecDeque<u8>,
    log: Option<File>,
    log_written: u64,
    stdout: bool,
    subscribers: Vec<SyncSender<Vec<u8>>>,
    total: u64,
    first_line_at: Option<Instant>,
}

/// Serial output fan-out.
pub struct Console {
    inner: Mutex<Inner>,
}

impl Console {
    /// A console; `stdout` mirrors output to fd 1 as it arrives.
    pub fn new(log: Option<File>, stdout: bool) -> Self {
        Console {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                log,
                log_written: 0,
                stdout,
                subscribers: Vec::new(),
                total: 0,
                first_line_at: None,
            }),
        }
    }

    /// The guest wrote `data` to the serial port.
    pub fn output(&self, data: &[u8]) {
        let mut g = lock(&self.inner);
        if g.stdout {
            write_all_fd1(data);
        }
        if g.first_line_at.is_none() && data.contains(&b'\n') {
            g.first_line_at = Some(Instant::now());
        }
        g.total += data.len() as u64;
        if g.ring.len() + data.len() > RING_CAPACITY {
            let drop = (g.ring.len() + data.len())
                .saturating_sub(RING_CAPACITY)
                .min(g.ring.len());
            g.ring.drain(..drop);
        }
        let keep = data.len().min(RING_CAPACITY);
        g.ring.extend(&data[data.len() - keep..]);
        if let Some(mut f) = g.log.take() {
            if g.log_written + data.len() as u64 <= LOG_CAP {
                if f.write_all(data).is_ok() {
                    g.log_written += data.len() as u64;
                    g.log = Some(f);
                }
            } else {
                let _ = f.write_all(b"\n[yunhe: console log reached its size cap]\n");
            }
        }
        g.subscribers.retain(|s| match s.try_send(data.to_vec()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Recent output (up to [`RING_CAPACITY`] bytes).
    pub fn recent(&self) -> Vec<u8> {
        lock(&self.inner).ring.iter().copied().collect()
    }

    /// Total bytes of output so far.
    pub fn total(&self) -> u64 {
        lock(&self.inner).total
    }

    /// When the first complete line was printed.
    pub fn first_line_at(&self) -> Option<Instant> {
        lock(&self.inner).first_line_at
    }

    /// A live stream of output from now on, plus what the ring holds.
    pub fn subscribe(&self) -> (Vec<u8>, Receiver<Vec<u8>>) {
        let (tx, rx) = sync_channel(SUBSCRIBER_BACKLOG);
        let mut g = lock(&self.inner);
        g.subscribers.push(tx);
        (g.ring.iter().copied().collect(), rx)
    }
}

fn write_all_fd1(mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writes from a valid slice to fd 1; no memory is retained.
        let n = unsafe { libc::write(1, data.as_ptr().cast(), data.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_subscribers_get_output() {
        let c = Console::new(None, false);
        let (old, rx) = c.subscribe();
        assert!(old.is_empty());
        c.output(b"hello\n");
        assert_eq!(rx.try_recv().expect("chunk"), b"hello\n");
        let big = vec![b'x'; RING_CAPACITY + 10];
        c.output(&big);
        assert_eq!(c.recent().len(), RING_CAPACITY);
        assert_eq!(c.total(), 6 + RING_CAPACITY as u64 + 10);
        assert!(c.first_line_at().is_some());
    }
}
