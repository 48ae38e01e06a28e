//! ovlfs patch: READ replies spliced from a file to the FUSE device.
//!
//! A copied reply reads the file into a buffer (one copy) and writes the buffer to the device
//! (a second copy). A spliced reply moves page references into a pipe and lets the device copy
//! them once. The reply header must come first in the pipe and carry the final length, which
//! is only known once the file has been read (it may be short at end of file): the data is
//! spliced into one pipe, then the header is written into a second one and the data moved
//! behind it (pipe to pipe moves references, not bytes), and the second pipe is spliced to the
//! device in one call, as the device takes a reply only whole. Each thread has its own pair.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The reply header (`struct fuse_out_header`).
const HEADER_LEN: usize = 16;

struct Pipes {
    data: (OwnedFd, OwnedFd),
    msg: (OwnedFd, OwnedFd),
    capacity: usize,
}

thread_local! {
    static PIPES: RefCell<Option<Pipes>> = const { RefCell::new(None) };
}

/// What became of a spliced reply.
pub(crate) enum Spliced {
    /// The reply was sent (or sending it failed, as a copied reply can).
    Sent(io::Result<()>),
    /// Nothing was sent: the reply must be copied (no pipe large enough, or the file cannot
    /// be spliced from).
    NotPossible,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_capacity(fd: &OwnedFd, bytes: usize) -> io::Result<usize> {
    // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl Pipes {
    fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            data: pipe()?,
            msg: pipe()?,
            capacity: 16 * 4096,
        })
    }

    /// Makes both pipes hold `bytes` plus the header, as far as the pipe size limit allows.
    fn fit(&mut self, bytes: usize) -> bool {
        // A pipe holds page-sized buffers: data at an unaligned offset spans one page more,
        // and the header takes one of its own.
        let needed = bytes.div_ceil(4096) * 4096 + 2 * 4096;
        if needed <= self.capacity {
            return true;
        }
        let wanted = needed.next_power_of_two();
        match (set_capacity(&self.data.1, wanted), set_capacity(&self.msg.1, wanted)) {
            (Ok(a), Ok(b)) => {
                self.capacity = a.min(b);
                needed <= self.capacity
            }
            _ => false,
        }
    }
}

fn splice(from: BorrowedFd<'_>, offset: Option<&mut i64>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    let off = offset.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    // SAFETY: both fds are open for the call; `off` is null or points to a live i64.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            off,
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Empties a pipe after a failed step, so the next reply starts clean.
fn drain(read_end: &OwnedFd) {
    let mut buf = [0u8; 16384];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// Sends the reply to request `unique`: up to `len` bytes of `file` from `offset`.
pub(crate) fn send(
    device: BorrowedFd<'_>,
    unique: u64,
    file: BorrowedFd<'_>,
    offset: u64,
    len: usize,
) -> Spliced {
    PIPES.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            match Pipes::new() {
                Ok(p) => *slot = Some(p),
                Err(_) => return Spliced::NotPossible,
            }
        }
        let pipes = slot.as_mut().expect("just set");
        if !pipes.fit(len) {
            return Spliced::NotPossible;
        }
        // 1. The file's pages into the data pipe, until `len` or end of file.
        let mut pos = offset as i64;
        let mut got = 0;
        while got < len {
            match splice(file, Some(&mut pos), pipes.data.1.as_fd(), len - got) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) => {
                    drain(&pipes.data.0);
                    return Spliced::NotPossible;
                }
            }
        }
        // 2. The header, then the data moved behind it.
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&((HEADER_LEN + got) as u32).to_ne_bytes());
        header[8..16].copy_from_slice(&unique.to_ne_bytes());
        // SAFETY: `header` is valid for reads of its length.
        let w = unsafe { libc::write(pipes.msg.1.as_raw_fd(), header.as_ptr().cast(), HEADER_LEN) };
        if w != HEADER_LEN as isize {
            drain(&pipes.data.0);
            drain(&pipes.msg.0);
            return Spliced::NotPossible;
        }
        let mut moved = 0;
        while moved < got {
            match splice(pipes.data.0.as_fd(), None, pipes.msg.1.as_fd(), got - moved) {
                Ok(0) | Err(_) => {
                    drain(&pipes.data.0);
                    drain(&pipes.msg.0);
                    return Spliced::NotPossible;
                }
                Ok(n) => moved += n,
            }
        }
        // 3. The whole reply to the device in one call.
        let total = HEADER_LEN + got;
        let sent = match splice(pipes.msg.0.as_fd(), None, device, total) {
            Ok(n) if n == total => Ok(()),
            Ok(n) => Err(io::Error::other(format!("spliced {n} of {total} reply bytes"))),
            Err(e) => Err(e),
        };
        if sent.is_err() {
            drain(&pipes.msg.0);
        }
        Spliced::Sent(sent)
    })
}
