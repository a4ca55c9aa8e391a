//! `yunhe vm ctl`: an operator's client for a VMM's control socket (the JSON
//! lines protocol of `control.rs`), for hosts and test labs that have no
//! other way to talk to a unix socket (busybox has no `nc -U`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::control::Request;

/// `yunhe vm ctl`: send one command to a running VMM.
#[derive(clap::Args, Debug)]
pub struct VmCtlArgs {
    /// The VMM's control socket (`control_socket` of its spec).
    #[arg(long)]
    pub socket: PathBuf,
    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands of `yunhe vm ctl`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq)]
pub enum CtlCommand {
    /// State, pid, uptime and the VM's configuration.
    Status,
    /// Park every vCPU.
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Press the ACPI power button (the guest decides what to do).
    Powerdown,
    /// Hard stop: the VMM exits at once.
    Stop,
    /// Hard reset: the VM is rebuilt.
    Reset,
    /// Counters (vCPU time, exits, devices, memory).
    Stats,
    /// Save the whole VM into DIR and end the VMM (restore with `restore_from`).
    Save {
        /// The state directory (created).
        dir: PathBuf,
    },
    /// Hot-add a virtio-blk disk: PATH is opened here and its descriptor passed to the VMM.
    AddDisk {
        /// The image (a raw file or block device).
        path: PathBuf,
        /// Attach read-only (the file is opened read-only).
        #[arg(long)]
        ro: bool,
        /// The device's id (default: disk<N>).
        #[arg(long)]
        id: Option<String>,
        /// The serial the guest sees (default: the id).
        #[arg(long)]
        serial: Option<String>,
    },
    /// Hot-add a virtio-net NIC on the existing tap TAP (opened here, passed to the VMM).
    AddNet {
        /// The tap's name.
        tap: String,
        /// MAC address (default: a random local one).
        #[arg(long)]
        mac: Option<String>,
        /// The device's id (default: net<N>).
        #[arg(long)]
        id: Option<String>,
    },
    /// Ask the guest to eject device ID and wait until it did.
    Remove {
        /// The device's id (as add-disk/add-net printed, or disk0, net0...).
        id: String,
        /// Seconds to wait for the guest (1 to 120; default 10).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Disk ID's image grew: the VMM re-reads its size and tells the guest (the file is the
    /// truth; a smaller file is refused).
    ResizeDisk {
        /// The disk's id (as add-disk printed, or disk0...).
        id: String,
    },
    /// Bridge the serial console to stdin/stdout (raw mode on a tty; Ctrl-A x
    /// detaches). When stdin ends, output is still copied for `--linger` seconds.
    Console {
        /// Seconds to keep copying output after stdin ends.
        #[arg(long, default_value_t = 1.0)]
        linger: f64,
    },
}

/// Errors of `yunhe vm ctl`.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Cannot connect to {0}: {1}
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The control socket failed: {0}
    #[error("the control socket failed: {0}")]
    Io(#[from] std::io::Error),
    /// The VMM closed the connection without a reply
    #[error("the VMM closed the connection without a reply")]
    NoReply,
    /// The VMM's reply is not JSON: {0}
    #[error("the VMM's reply is not JSON: {0}")]
    BadReply(String),
    /// The VMM refused: {0}
    #[error("the VMM refused: {0}")]
    Refused(String),
    /// --linger must be a number of seconds between 0 and 3600
    #[error("--linger must be a number of seconds between 0 and 3600")]
    Linger,
    /// Cannot open {0}: {1}
    #[error("cannot open {0}: {1}")]
    Open(String, String),
}

/// The descriptor a command hands over with its request (the disk image, the tap).
fn descriptor(cmd: &CtlCommand) -> Result<Option<std::os::fd::OwnedFd>, CtlError> {
    match cmd {
        CtlCommand::AddDisk { path, ro, .. } => std::fs::OpenOptions::new()
            .read(true)
            .write(!ro)
            .open(path)
            .map(|f| Some(f.into()))
            .map_err(|e| CtlError::Open(path.display().to_string(), e.to_string())),
        CtlCommand::AddNet { tap, .. } => super::devices::virtio::net::open_tap(tap)
            .map(|b| Some(b.into_fd()))
            .map_err(|e| CtlError::Open(format!("tap {tap}"), e.to_string())),
        _ => Ok(None),
    }
}

/// The request line for a command (a [`Request`] of the control protocol).
pub fn request(cmd: &CtlCommand) -> Value {
    let request = match cmd {
        CtlCommand::Status => Request::Status,
        CtlCommand::Pause => Request::Pause,
        CtlCommand::Resume => Request::Resume,
        CtlCommand::Powerdown => Request::Powerdown,
        CtlCommand::Stop => Request::Stop,
        CtlCommand::Reset => Request::Reset,
        CtlCommand::Stats => Request::Stats,
        CtlCommand::Save { dir } => Request::Save { dir: dir.clone() },
        CtlCommand::Console { .. } => Request::Console,
        CtlCommand::AddDisk {
            path,
            ro,
            id,
            serial,
        } => Request::AddDisk {
            id: id.clone(),
            path: Some(std::path::absolute(path).unwrap_or_else(|_| path.clone())),
            read_only: *ro,
            serial: serial.clone(),
        },
        CtlCommand::AddNet { tap, mac, id } => Request::AddNet {
            id: id.clone(),
            tap: Some(tap.clone()),
            mac: mac.clone(),
        },
        CtlCommand::Remove { id, timeout } => Request::RemoveDevice {
            id: id.clone(),
            timeout_s: *timeout,
        },
        CtlCommand::ResizeDisk { id } => Request::ResizeDisk { id: id.clone() },
    };
    serde_json::to_value(request).unwrap_or(Value::Null)
}

/// Checks one reply line: the parsed reply when `ok` is true.
pub fn check_reply(line: &str) -> Result<Value, CtlError> {
    let v: Value =
        serde_json::from_str(line.trim()).map_err(|_| CtlError::BadReply(line.trim().into()))?;
    match v.get("ok") {
        Some(Value::Bool(true)) => Ok(v),
        Some(Value::Bool(false)) => {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            Err(CtlError::Refused(
                match super::control::refusal_kind(line) {
                    Some(kind) => format!("{msg} [{kind}]"),
                    None => msg.to_string(),
                },
            ))
        }
        _ => Err(CtlError::BadReply(line.trim().into())),
    }
}

fn exchange(args: &VmCtlArgs) -> Result<Option<(UnixStream, BufReader<UnixStream>)>, CtlError> {
    let mut stream = UnixStream::connect(&args.socket)
        .map_err(|e| CtlError::Connect(args.socket.display().to_string(), e))?;
    let mut line = request(&args.command).to_string();
    line.push('\n');
    match descriptor(&args.command)? {
        Some(fd) => {
            use std::os::fd::AsFd;
            super::fdpass::send_with_fd(&stream, line.as_bytes(), fd.as_fd())?
        }
        None => stream.write_all(line.as_bytes())?,
    }
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut reply = String::new();
    if reader.read_line(&mut reply)? == 0 {
        return Err(CtlError::NoReply);
    }
    let v = check_reply(&reply)?;
    if matches!(args.command, CtlCommand::Console { .. }) {
        return Ok(Some((stream, reader)));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    Ok(None)
}

/// How a console session ended.
enum ConsoleEnd {
    /// The VMM closed the console (it ended, or dropped this client).
    Output,
    /// Standard input ended.
    Input,
    /// Ctrl-A x.
    Detached,
}

/// Copies the console to stdout and stdin to the console.
fn console(
    stream: UnixStream,
    mut reader: BufReader<UnixStream>,
    linger: f64,
) -> Result<(), CtlError> {
    if !(0.0..=3600.0).contains(&linger) {
        return Err(CtlError::Linger);
    }
    let _raw = super::terminal::RawTerminal::enter();
    let (tx, rx) = std::sync::mpsc::channel();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        let _ = out_tx.send(ConsoleEnd::Output);
    });
    let mut sock = stream.try_clone()?;
    // Left blocked in read(2) when the session ends first; the process exits anyway.
    std::thread::spawn(move || {
        let mut input = std::io::stdin();
        let mut buf = [0u8; 256];
        let mut ctrl_a = false;
        let end = loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break ConsoleEnd::Input,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break ConsoleEnd::Input,
            };
            let mut detach = None;
            for (i, &b) in buf[..n].iter().enumerate() {
                if ctrl_a && b == b'x' {
                    detach = Some(i.saturating_sub(1));
                    break;
                }
                ctrl_a = b == 0x01;
            }
            if let Some(upto) = detach {
                let _ = sock.write_all(&buf[..upto]);
                break ConsoleEnd::Detached;
            }
            if sock.write_all(&buf[..n]).is_err() {
                break ConsoleEnd::Output;
            }
        };
        let _ = tx.send(end);
    });
    if let Ok(ConsoleEnd::Input) = rx.recv() {
        // Let the guest answer what it was sent, unless the VMM ends first.
        let _ = rx.recv_timeout(Duration::from_secs_f64(linger));
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// `yunhe vm ctl`: exit 0 when the VMM accepted the command (its reply on
/// stdout), 1 when it refused or cannot be reached.
pub fn vm_ctl_main(args: VmCtlArgs) -> ExitCode {
    let linger = match args.command {
        CtlCommand::Console { linger } => linger,
        _ => 0.0,
    };
    let result = exchange(&args).and_then(|c| match c {
        Some((stream, reader)) => console(stream, reader, linger),
        None => Ok(()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yunhe vm ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_the_control_protocol() {
        // Every request this client sends must parse as a control::Request.
        for cmd in [
            CtlCommand::Status,
            CtlCommand::Pause,
            CtlCommand::Resume,
            CtlCommand::Powerdown,
            CtlCommand::Stop,
            CtlCommand::Reset,
            CtlCommand::Stats,
            CtlCommand::Save {
                dir: "/tmp/x".into(),
            },
            CtlCommand::Console { linger: 1.0 },
            CtlCommand::AddDisk {
                path: "/tmp/d.img".into(),
                ro: true,
                id: Some("vol1".into()),
                serial: None,
            },
            CtlCommand::AddNet {
                tap: "tap0".into(),
                mac: None,
                id: None,
            },
            CtlCommand::Remove {
                id: "vol1".into(),
                timeout: Some(5),
            },
            CtlCommand::ResizeDisk { id: "vol1".into() },
        ] {
            let line = request(&cmd).to_string();
            let parsed: Result<super::super::control::Request, _> = serde_json::from_str(&line);
            assert!(parsed.is_ok(), "{line}");
        }
    }

    #[test]
    fn replies_are_checked() {
        assert!(check_reply("{\"ok\":true,\"state\":\"paused\"}\n").is_ok());
        assert!(matches!(
            check_reply("{\"ok\":false,\"error\":\"the VM is not running\"}"),
            Err(CtlError::Refused(m)) if m == "the VM is not running"
        ));
        assert!(matches!(check_reply("garbage"), Err(CtlError::BadReply(_))));
        assert!(matches!(check_reply("{}"), Err(CtlError::BadReply(_))));
    }
}
