//! `/dev/fuse` beyond fuser: notifications (messages whose `error` field carries the notify
//! code, with no `unique`) and whether the connection has ended.

use std::os::fd::BorrowedFd;

use super::{Errno, SysResult};

/// Writes one notification (`code`, then `body`) to /dev/fuse. `ENOENT` (the kernel no longer
/// holds a node named in it) is no error.
fn notify(dev: BorrowedFd<'_>, code: i32, body: &[&[u8]]) -> SysResult<()> {
    let len = 16 + body.iter().map(|b| b.len()).sum::<usize>();
    let mut msg = Vec::with_capacity(len);
    // struct fuse_out_header { len, error (the notify code), unique (0) }
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&code.to_ne_bytes());
    msg.extend_from_slice(&0u64.to_ne_bytes());
    body.iter().for_each(|b| msg.extend_from_slice(b));
    loop {
        match rustix::io::write(dev, &msg) {
            Ok(n) if n == len => return Ok(()),
            Ok(_) => return Err(Errno::IO),
            Err(Errno::INTR) => continue,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// `FUSE_NOTIFY_PRUNE` (protocol 7.45): asks the kernel to drop the unused dentries of these
/// nodes, so that the inodes are evicted and forgotten.
pub fn notify_prune(dev: BorrowedFd<'_>, nodeids: &[u64]) -> SysResult<()> {
    const FUSE_NOTIFY_PRUNE: i32 = 9;
    for batch in nodeids.chunks(512) {
        // struct fuse_notify_prune_out { count, padding, spare }, then the node ids.
        let mut body = Vec::with_capacity(16 + 8 * batch.len());
        body.extend_from_slice(&(batch.len() as u32).to_ne_bytes());
        body.extend_from_slice(&[0u8; 12]);
        for id in batch {
            body.extend_from_slice(&id.to_ne_bytes());
        }
        notify(dev, FUSE_NOTIFY_PRUNE, &[&body])?;
    }
    Ok(())
}

/// `FUSE_NOTIFY_INVAL_INODE` for the attributes only (offset -1: the page cache stays): the
/// kernel asks for them again at the next stat.
pub fn notify_inval_attrs(dev: BorrowedFd<'_>, nodeid: u64) -> SysResult<()> {
    const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
    // struct fuse_notify_inval_inode_out { ino, off, len }
    let (ino, off, len) = (nodeid.to_ne_bytes(), (-1i64).to_ne_bytes(), [0u8; 8]);
    notify(dev, FUSE_NOTIFY_INVAL_INODE, &[&ino, &off, &len])
}

/// `FUSE_NOTIFY_RESEND` (protocol 7.40, Linux 6.9): the kernel queues again every request a
/// process read from this connection and did not answer (a worker that died), marking their
/// `unique` with the top bit. `Err(INVAL)` from older kernels.
pub fn notify_resend(dev: BorrowedFd<'_>) -> SysResult<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&16u32.to_ne_bytes());
    msg.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    msg.extend_from_slice(&0u64.to_ne_bytes());
    loop {
        match rustix::io::write(dev, &msg) {
            Ok(16) => return Ok(()),
            Ok(_) => return Err(Errno::IO),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether the kernel has ended the FUSE connection behind `dev` (unmounted or aborted):
/// `/dev/fuse` then polls as `POLLERR`.
pub fn fuse_connection_ended(dev: BorrowedFd<'_>) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(&dev, PollFlags::empty())];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut fds, Some(&zero)) {
            Ok(_) => return fds[0].revents().contains(PollFlags::ERR),
            Err(Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}
