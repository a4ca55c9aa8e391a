//! Descriptors over the control socket (SCM_RIGHTS): a hot-added disk's image or NIC's tap
//! travels with its request line, since a jailed VMM cannot open either by itself.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Descriptors one connection may have waiting at once; more are closed on arrival.
pub const MAX_QUEUED_FDS: usize = 4;

/// Sends `line` with `fd` attached to its first byte.
pub fn send_with_fd(stream: &UnixStream, line: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let raw: RawFd = fd.as_raw_fd();
    let fd_len = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: line.as_ptr() as *mut libc::c_void,
        iov_len: line.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `control` has room for one cmsghdr with one descriptor (CMSG_SPACE above);
    // CMSG_FIRSTHDR returns a pointer into it, and CMSG_DATA a pointer to its data.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), raw);
    }
    // SAFETY: `msg` points at live buffers (line, control) for the duration of the call.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sent = sent as usize;
    // The rest (if the socket took only part), without the descriptor.
    let mut rest = line.get(sent..).unwrap_or(&[]);
    let mut s = stream;
    while !rest.is_empty() {
        let n = std::io::Write::write(&mut s, rest)?;
        rest = &rest[n..];
    }
    Ok(())
}

/// Reads request lines from a control connection, keeping the descriptors that came along.
pub struct FdReader {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl FdReader {
    /// A reader of `stream`.
    pub fn new(stream: UnixStream) -> Self {
        FdReader {
            stream,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// The socket.
    pub fn get_ref(&self) -> &UnixStream {
        &self.stream
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let fd_len = (std::mem::size_of::<RawFd>() * MAX_QUEUED_FDS) as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = loop {
            // SAFETY: `msg` points at live buffers (chunk, control) for the call.
            let n =
                unsafe { libc::recvmsg(self.stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut received = Vec::new();
        // SAFETY: the kernel filled `control` with msg_controllen bytes of cmsghdrs; the
        // CMSG_* macros walk them within that length, and SCM_RIGHTS data holds descriptors.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        received.push(std::ptr::read_unaligned(data.cast::<RawFd>().add(i)));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        for fd in received {
            // SAFETY: the kernel just installed this descriptor for this process; nothing else
            // owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            if self.fds.len() < MAX_QUEUED_FDS {
                self.fds.push_back(owned);
            }
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one line (with its newline) into `line`; 0 at the end of the stream. A line
    /// longer than `max` bytes is returned cut at `max` (the caller refuses it).
    pub fn read_line(&mut self, line: &mut String, max: usize) -> std::io::Result<usize> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let taken = std::mem::replace(&mut self.buf, rest);
                line.push_str(&String::from_utf8_lossy(&taken));
                return Ok(taken.len());
            }
            if self.buf.len() > max {
                let taken = std::mem::take(&mut self.buf);
                line.push_str(&String::from_utf8_lossy(&taken));
                return Ok(taken.len());
            }
            if self.fill()? == 0 {
                let taken = std::mem::take(&mut self.buf);
                line.push_str(&String::from_utf8_lossy(&taken));
                return Ok(taken.len());
            }
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// Closes the descriptors no request took (so none pairs with a later request).
    pub fn drop_fds(&mut self) {
        self.fds.clear();
    }
}

impl Read for FdReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            self.drop_fds();
            return self.stream.read(out);
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_travels_with_its_line() {
        let (a, b) = UnixStream::pair().expect("pair");
        let file = std::fs::File::open("/proc/self/exe").expect("a file");
        send_with_fd(&a, b"{\"cmd\":\"x\"}\n{\"cmd\":", file.as_fd()).expect("send");
        std::io::Write::write_all(&mut &a, b"\"y\"}\n").expect("rest");
        let mut r = FdReader::new(b);
        let mut line = String::new();
        r.read_line(&mut line, 1024).expect("line");
        assert_eq!(line, "{\"cmd\":\"x\"}\n");
        let fd = r.take_fd().expect("the descriptor");
        let got = std::fs::File::from(fd).metadata().expect("meta");
        assert_eq!(got.len(), file.metadata().expect("meta").len());
        assert!(r.take_fd().is_none());
        line.clear();
        r.read_line(&mut line, 1024).expect("line");
        assert_eq!(line, "{\"cmd\":\"y\"}\n");
        drop(a);
        line.clear();
        assert_eq!(r.read_line(&mut line, 1024).expect("eof"), 0);
    }

    #[test]
    fn too_many_descriptors_are_closed() {
        let (a, b) = UnixStream::pair().expect("pair");
        let file = std::fs::File::open("/proc/self/exe").expect("a file");
        for _ in 0..MAX_QUEUED_FDS + 3 {
            send_with_fd(&a, b" ", file.as_fd()).expect("send");
        }
        std::io::Write::write_all(&mut &a, b"\n").expect("nl");
        let mut r = FdReader::new(b);
        let mut line = String::new();
        r.read_line(&mut line, 1024).expect("line");
        let mut n = 0;
        while r.take_fd().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_QUEUED_FDS);
    }
}
