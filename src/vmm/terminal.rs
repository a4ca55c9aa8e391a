//! The terminal side of `yunhe vm run`: raw mode on a tty, and one stdin
//! reader thread that feeds whichever VM currently runs (a reboot builds a new
//! one). Ctrl-A x quits, as in QEMU.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};

use super::bus::lock;
use super::vm::RunningVm;

/// Restores the terminal's settings when dropped.
pub struct RawTerminal {
    saved: Option<Termios>,
}

impl RawTerminal {
    /// Puts stdin in raw mode if it is a tty.
    pub fn enter() -> Self {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Keep output post-processing so "\n" still returns the carriage.
        raw.output_flags |= termios::OutputFlags::OPOST | termios::OutputFlags::ONLCR;
        if termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &saved);
        }
    }
}

static TARGET: Mutex<Option<Weak<RunningVm>>> = Mutex::new(None);
static STARTED: std::sync::Once = std::sync::Once::new();

/// Sends stdin to `vm` from now on (starting the reader thread the first time).
pub fn forward_stdin_to(vm: &Arc<RunningVm>) {
    *lock(&TARGET) = Some(Arc::downgrade(vm));
    STARTED.call_once(|| {
        let _ = super::vm::thread("yunhe-stdin").spawn(stdin_loop);
    });
}

fn stdin_loop() {
    let mut buf = [0u8; 256];
    let mut ctrl_a = false;
    loop {
        // SAFETY: reads into a live local buffer of the given length.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let mut data = &buf[..n as usize];
        for &b in data {
            if ctrl_a && b == b'x' {
                if let Some(vm) = lock(&TARGET).as_ref().and_then(|w| w.upgrade()) {
                    let _ = vm
                        .event_sender()
                        .send(super::devices::legacy::VmEvent::PowerOff);
                }
                return;
            }
            ctrl_a = b == 0x01;
        }
        while !data.is_empty() {
            let Some(vm) = lock(&TARGET).as_ref().and_then(|w| w.upgrade()) else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let took = vm.serial_input(data);
            data = &data[took..];
            if !data.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}
