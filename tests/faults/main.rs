//! Faults of the upper filesystem and the integrity of the lower layers:
//!
//! - `enospc_*`: the upper lives on an 8 MiB tmpfs. A copy-up larger than the free space, a tree
//!   copy-up (directory rename) that runs out of space half-way, and writes into a full upper
//!   fail with ENOSPC to the caller; the daemon keeps serving (reads, stats, listings, deletions);
//!   nothing partial becomes visible (the merged files still show the lower content, no temp
//!   object stays in `WORKDIR/work`); once space is freed everything works, and a remount shows
//!   the same tree.
//! - `no_xattr_no_mknod_upper_*`: an upper where mknod is refused and setxattr is not supported
//!   (the conditions of a vfat upper; this kernel has no vfat driver, so a seccomp filter on the
//!   daemon produces them): with `whiteout=auto` deletions fall back to AUFS `.wh.NAME` entries,
//!   stay deleted across a remount, and names (files and directories) can be re-created over
//!   their whiteouts.
//! - `lowers_never_modified_*`: snapshot two lower layers (content, mode, owner, nlink, inode,
//!   mtime, ctime, every xattr including `trusted.*`), run a random multi-threaded workload
//!   through the mount (writes through fds opened before copy-up, fchmod/fchown/fsetxattr/
//!   futimens through such fds, hard links, renames, chmod/chown, setxattr, truncates, O_TRUNC,
//!   copy_file_range, fallocate, shared mmap writes, deletions), unmount and compare: 0 changes.
//!
//! The tests live in submodules of `tests/faults/`, one per concern: `enospc`, `no_xattr_upper`
//! and `lowers`; the shared helpers stay here.
//!
//! CI: `cargo test --test faults`.
//! Long: `OVLFS_LOWER_SECS=300 OVLFS_LOWER_SEED=7 cargo test --test faults -- --nocapture`
//! (`OVLFS_LOWER_SECS`: workload duration per variant, default 6; `OVLFS_LOWER_THREADS`, default 3).

#[path = "../common/mod.rs"]
mod common;
mod enospc;
mod lowers;
mod no_xattr_upper;

use common::*;
use std::fs;
use std::io;
use std::path::Path;
use std::thread;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Utilities
// ---------------------------------------------------------------------------------------------

pub(crate) fn same_content(a: &Path, b: &Path) -> Result<(), String> {
    let x = fs::read(a).map_err(|e| format!("read {}: {e}", a.display()))?;
    let y = fs::read(b).map_err(|e| format!("read {}: {e}", b.display()))?;
    if x == y {
        Ok(())
    } else {
        Err(format!(
            "{} ({} bytes) differs from {} ({} bytes)",
            a.display(),
            x.len(),
            b.display(),
            y.len()
        ))
    }
}

pub(crate) fn errno_of(e: &io::Error) -> String {
    errno_name(e.raw_os_error())
}

/// Waits until the filesystem of `path` has `want` bytes free; Ok(elapsed) or Err(free bytes).
pub(crate) fn wait_free_space(path: &Path, want: u64, timeout: Duration) -> Result<Duration, u64> {
    let start = std::time::Instant::now();
    loop {
        let st = rustix::fs::statvfs(path).expect("statvfs");
        let free = st.f_bavail * st.f_frsize;
        if free >= want {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(free);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn assert_alive(m: &OvlfsMount, what: &str) {
    m.assert_serving(what);
    assert!(m.is_mounted(), "{what}: the mount disappeared");
}
