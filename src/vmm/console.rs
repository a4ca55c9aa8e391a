//! The serial console's output side: a bounded ring buffer of recent output, a
//! size-capped log file, and live subscribers (the terminal of `vm run`,
//! `console` clients of the control socket).
//!
//! The log of one VM stays under [`LOG_CAP`] however often its VMM starts:
//! [`open_log`] rotates the file to a single `<name>.1` once it holds half the
//! cap, and a VMM writes at most [`LOG_FILE_CAP`] into the current file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use super::bus::lock;

/// How much recent output the ring buffer keeps.
pub const RING_CAPACITY: usize = 64 * 1024;
/// The console log of a VM, the current file and its one rotated copy together,
/// stays under this size.
pub const LOG_CAP: u64 = 16 << 20;
/// Each of the two files stops growing at this size (a note says so).
pub const LOG_FILE_CAP: u64 = LOG_CAP / 2;
/// At start, a log at least this large is rotated to `<name>.1`.
const ROTATE_AT: u64 = LOG_FILE_CAP / 2;
/// Written once when the current file reaches [`LOG_FILE_CAP`].
const CAP_NOTE: &[u8] = b"\n[yunhe: console log reached its size cap]\n";
/// Chunks a slow subscriber may fall behind before it is dropped.
const SUBSCRIBER_BACKLOG: usize = 1024;

struct Inner {
    ring: VecDeque<u8>,
    log: Option<File>,
    log_written: u64,
    stdout: bool,
    subscribers: Vec<(SubscriberId, SyncSender<Vec<u8>>)>,
    next_subscriber: u64,
    total: u64,
    first_line_at: Option<Instant>,
}

/// Names one subscriber, to unsubscribe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberId(u64);

/// Serial output fan-out.
pub struct Console {
    inner: Mutex<Inner>,
}

impl Console {
    /// A console; `stdout` mirrors output to fd 1 as it arrives. What `log`
    /// already holds counts against [`LOG_FILE_CAP`].
    pub fn new(log: Option<File>, stdout: bool) -> Self {
        let log_written = log
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Console {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                log,
                log_written,
                stdout,
                subscribers: Vec::new(),
                next_subscriber: 0,
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
            // Room for the data, always keeping room for the note.
            let room = LOG_FILE_CAP
                .saturating_sub(CAP_NOTE.len() as u64)
                .saturating_sub(g.log_written);
            let fits = (data.len() as u64).min(room) as usize;
            if f.write_all(&data[..fits]).is_ok() {
                g.log_written += fits as u64;
                if fits == data.len() {
                    g.log = Some(f);
                } else {
                    // The file is full: say so and stop writing to it.
                    let _ = f.write_all(CAP_NOTE);
                }
            }
        }
        g.subscribers
            .retain(|(_, s)| match s.try_send(data.to_vec()) {
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

    /// A live stream of output from now on, plus what the ring holds. The
    /// stream ends when the subscriber falls too far behind or is
    /// [`unsubscribe`](Self::unsubscribe)d.
    pub fn subscribe(&self) -> (Vec<u8>, Receiver<Vec<u8>>, SubscriberId) {
        let (tx, rx) = sync_channel(SUBSCRIBER_BACKLOG);
        let mut g = lock(&self.inner);
        let id = SubscriberId(g.next_subscriber);
        g.next_subscriber += 1;
        g.subscribers.push((id, tx));
        (g.ring.iter().copied().collect(), rx, id)
    }

    /// Ends a subscriber's stream now: its receiver sees the end at once,
    /// not at the next output (a quiet guest may print nothing for days).
    pub fn unsubscribe(&self, id: SubscriberId) {
        lock(&self.inner).subscribers.retain(|(s, _)| *s != id);
    }
}

/// The rotated copy of the log at `path`: `<path>.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".1");
    PathBuf::from(name)
}

/// Opens the console log at `path` for appending (creating it), first
/// rotating it to `<path>.1` when it holds [`ROTATE_AT`] or more: the
/// current file and the one rotated copy stay under [`LOG_CAP`] together
/// however many times the VM starts. A file larger than [`LOG_FILE_CAP`]
/// (left by an older version) keeps only its tail in the copy. A symbolic
/// link in the place of the log is replaced, never followed.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => std::fs::remove_file(path)?,
        Ok(meta) if meta.len() >= ROTATE_AT => rotate(path, meta.len())?,
        _ => {}
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn rotate(path: &Path, len: u64) -> std::io::Result<()> {
    let rotated = rotated_path(path);
    if len <= LOG_FILE_CAP {
        // rename(2) replaces the old copy and never follows a link.
        return std::fs::rename(path, &rotated);
    }
    let mut old = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    old.seek(SeekFrom::Start(len - LOG_FILE_CAP))?;
    let mut partial = rotated.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let mut copy = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)?;
    std::io::copy(&mut Read::take(&mut old, LOG_FILE_CAP), &mut copy)?;
    std::fs::rename(&partial, &rotated)?;
    std::fs::remove_file(path)
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
        let (old, rx, _) = c.subscribe();
        assert!(old.is_empty());
        c.output(b"hello\n");
        assert_eq!(rx.try_recv().expect("chunk"), b"hello\n");
        let big = vec![b'x'; RING_CAPACITY + 10];
        c.output(&big);
        assert_eq!(c.recent().len(), RING_CAPACITY);
        assert_eq!(c.total(), 6 + RING_CAPACITY as u64 + 10);
        assert!(c.first_line_at().is_some());
    }

    #[test]
    fn unsubscribing_ends_the_stream_at_once() {
        let c = Console::new(None, false);
        let (_, rx, id) = c.subscribe();
        let (_, other, _) = c.subscribe();
        c.unsubscribe(id);
        assert!(rx.recv().is_err(), "the stream ends without further output");
        c.output(b"x");
        assert_eq!(other.try_recv().expect("chunk"), b"x");
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "yunhe-console-{}-{name}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn the_log_stays_under_its_cap_across_starts() {
        let dir = scratch("cap");
        let path = dir.join("console.log");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..5 {
            let c = Console::new(Some(open_log(&path).expect("open")), false);
            for _ in 0..12 {
                c.output(&chunk);
            }
            let now = std::fs::metadata(&path).map_or(0, |m| m.len());
            let old = std::fs::metadata(rotated_path(&path)).map_or(0, |m| m.len());
            assert!(now <= LOG_FILE_CAP, "current file {now}");
            assert!(now + old <= LOG_CAP, "both files {now} + {old}");
        }
        let text = std::fs::read(&path).expect("log");
        assert!(text.ends_with(CAP_NOTE));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_oversized_old_log_keeps_only_its_tail_and_links_are_not_followed() {
        let dir = scratch("old");
        let path = dir.join("console.log");
        let mut big = vec![b'a'; (LOG_FILE_CAP + 10) as usize];
        big.extend_from_slice(b"tail");
        std::fs::write(&path, &big).expect("write");
        let c = Console::new(Some(open_log(&path).expect("open")), false);
        c.output(b"new boot\n");
        let rotated = std::fs::read(rotated_path(&path)).expect("rotated");
        assert_eq!(rotated.len() as u64, LOG_FILE_CAP);
        assert!(rotated.ends_with(b"tail"));
        assert_eq!(std::fs::read(&path).expect("log"), b"new boot\n");

        let target = dir.join("elsewhere");
        std::fs::write(&target, b"keep").expect("target");
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let c = Console::new(Some(open_log(&path).expect("open")), false);
        c.output(b"guest");
        assert_eq!(std::fs::read(&target).expect("target"), b"keep");
        assert_eq!(std::fs::read(&path).expect("log"), b"guest");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
