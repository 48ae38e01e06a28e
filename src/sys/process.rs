//! Processes of a supervised mount: starting and watching workers, passing them fds, and
//! the memfd they share.

use std::os::fd::{BorrowedFd, OwnedFd};

use super::SysResult;

/// A memfd of `len` bytes (sparse: pages are allocated when first written).
pub fn memfd(name: &std::ffi::CStr, len: u64) -> SysResult<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, len)?;
    Ok(fd)
}

/// Size of a file (of a memfd).
pub fn file_size(fd: BorrowedFd<'_>) -> SysResult<u64> {
    Ok(rustix::fs::fstat(fd)?.st_size as u64)
}

/// Lets `fd` survive `exec` (for the fds a worker inherits).
pub fn clear_cloexec(fd: BorrowedFd<'_>) -> SysResult<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
}

/// The `O_ACCMODE` and status flags an fd was opened with (`F_GETFL`).
pub fn open_flags(fd: BorrowedFd<'_>) -> SysResult<u32> {
    Ok(rustix::fs::fcntl_getfl(fd)?.bits())
}

/// `SIGKILL` when the parent dies (kept across exec); returns the parent's pid as seen
/// after setting it, so that a parent that died before is noticed.
pub fn die_with_parent() -> SysResult<u32> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    Ok(rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32))
}

pub fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// `kill(pid, SIGKILL)`.
pub fn kill_hard(pid: u32) -> SysResult<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32).ok_or(super::Errno::SRCH)?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
}

/// A process's `oom_score_adj` (-1000..=1000).
pub fn oom_score_adj(pid: u32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn set_oom_score_adj(pid: u32, value: i32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), value.to_string())
}

/// The uid of the process at the other end of a unix socket.
pub fn peer_uid(socket: BorrowedFd<'_>) -> SysResult<u32> {
    Ok(rustix::net::sockopt::socket_peercred(socket)?.uid.as_raw())
}

pub fn major_minor(dev: u64) -> (u32, u32) {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// The running kernel's (major, minor) version.
pub fn kernel_release() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = text
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
