//! Named network namespaces as iproute2 keeps them (a bind mount of the
//! namespace at `<dir>/<name>`, so `ip netns exec` sees yunhe's too), and
//! running code inside one: a short-lived thread enters it (`setns` acts on
//! the calling thread only), opens what it needs (sockets stay in the
//! namespace they were opened in) and ends.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The prefix of every namespace yunhe makes.
pub const PREFIX: &str = "yunhe-";

/// Where the named namespaces live.
pub fn dir() -> PathBuf {
    std::env::var_os("YUNHE_NETNS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/netns"))
}

/// Which namespace: the one serve started in, or a named one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ns {
    Root,
    Named(String),
}

impl Ns {
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Ns::Root => None,
            Ns::Named(n) => Some(dir().join(n)),
        }
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ns::Root => write!(f, "root"),
            Ns::Named(n) => write!(f, "{n}"),
        }
    }
}

/// The names of yunhe's namespaces that exist.
pub fn list() -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir()) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Makes the named namespace (nothing when it exists).
pub fn create(name: &str) -> io::Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    if path.exists() {
        return Ok(());
    }
    std::fs::File::create(&path)?;
    let target = cpath(&path)?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: unshare takes no pointers; it moves only this thread,
            // which ends right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let source = cpath(Path::new("/proc/thread-self/ns/net"))?;
            // SAFETY: both paths are NUL-terminated strings that outlive
            // the call; a bind mount takes no fs type or data.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            set_up_loopback()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if result.is_err() {
        let _ = remove(name);
    }
    result
}

fn set_up_loopback() -> io::Result<()> {
    let mut sock = super::netlink::Socket::open(super::netlink::NETLINK_ROUTE)?;
    if let Some(lo) = super::netlink::links(&mut sock)?
        .into_iter()
        .find(|l| l.name == "lo")
    {
        super::netlink::set_link(&mut sock, lo.index, None)?;
    }
    Ok(())
}

/// Removes the named namespace: its interfaces go with it (a veth's peer
/// elsewhere too).
pub fn remove(name: &str) -> io::Result<()> {
    let path = dir().join(name);
    let target = cpath(&path)?;
    // SAFETY: target is a NUL-terminated path that outlives the call.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An open handle of a namespace (for `IFLA_NET_NS_FD`).
pub fn open(ns: &Ns) -> io::Result<OwnedFd> {
    let path = match ns.path() {
        Some(p) => p,
        None => PathBuf::from("/proc/self/ns/net"),
    };
    Ok(std::fs::File::open(path)?.into())
}

/// Runs `f` on a thread inside `ns` and returns what it returns (for the
/// root namespace, on a fresh thread that never left it).
pub fn run_in<T: Send>(ns: &Ns, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let handle = match ns {
        Ns::Root => None,
        Ns::Named(_) => Some(open(ns)?),
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(fd) = handle {
                // SAFETY: fd is an open namespace file; setns moves only
                // this thread, which ends when f returns.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Writes a sysctl of `ns` (`/proc/sys/net/...` is per namespace).
pub fn sysctl(ns: &Ns, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    run_in(ns, move || std::fs::write(&path, &value))
}
