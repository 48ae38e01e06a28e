//! Clearing setgid the way ext4 and the kernel overlay do when a caller outside the file's
//! group writes to or truncates a setgid file without group-execute. (The kernel's FUSE side
//! clears setuid, and setgid with group-execute, itself; this case it leaves to the server.)

use crate::request::Caller;
use crate::sys::{self, Stat};

/// Whether a write or truncate by `caller` must clear the setgid bit of a file with `st`.
pub fn must_clear_sgid(caller: Caller, st: &Stat) -> bool {
    let setgid_no_gx = st.st_mode & libc::S_IFMT == libc::S_IFREG
        && st.st_mode & libc::S_ISGID != 0
        && st.st_mode & libc::S_IXGRP == 0;
    setgid_no_gx && caller.uid != 0 && !in_group(caller, st.st_gid)
}

/// Group membership of the calling process (primary or supplementary). When the caller's
/// groups cannot be read, it counts as a member: the bit is kept rather than wrongly dropped.
fn in_group(caller: Caller, gid: u32) -> bool {
    if caller.gid == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", caller.pid)) else {
        return true;
    };
    match status.lines().find_map(|l| l.strip_prefix("Groups:")) {
        Some(groups) => groups.split_whitespace().any(|g| g.parse() == Ok(gid)),
        None => true,
    }
}

/// Drops setgid from the object behind `fd` (an upper object).
pub fn clear_sgid(fd: std::os::fd::BorrowedFd<'_>) -> sys::SysResult<()> {
    let st = sys::stat_fd(fd)?;
    sys::chmod_fd(fd, st.st_mode & !libc::S_ISGID)
}
