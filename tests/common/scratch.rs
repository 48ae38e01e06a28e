//! Small helpers several test files share: a guard for the tests' own scratch mounts
//! (tmpfs uppers and the like), signalling and waiting for daemons, sorted listings.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{MOUNT_TIMEOUT, find_daemon_pids, find_mount, ovlfs_bin, run_cmd, run_cmd_quiesced};

/// A mount of the test's own (not ovlfs), unmounted on drop (lazily if busy).
pub struct MountGuard {
    path: PathBuf,
}

impl MountGuard {
    /// `mount ARGS... PATH`.
    pub fn mount(args: &[&str], path: &Path) -> Result<MountGuard, String> {
        let mut c = Command::new("mount");
        c.args(args).arg(path);
        let out = run_cmd(&mut c, MOUNT_TIMEOUT).map_err(|e| format!("mount: {e}"))?;
        let guard = MountGuard {
            path: path.to_path_buf(),
        };
        if !out.success() || find_mount(path).is_none() {
            return Err(format!(
                "mount {args:?} {}: {}",
                path.display(),
                out.stderr.trim()
            ));
        }
        Ok(guard)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if find_mount(&self.path).is_some() {
            let mut c = Command::new("umount");
            c.arg(&self.path);
            if !run_cmd_quiesced(&mut c, MOUNT_TIMEOUT).is_ok_and(|o| o.success()) {
                let mut c = Command::new("umount");
                c.arg("-l").arg(&self.path);
                let _ = run_cmd(&mut c, MOUNT_TIMEOUT);
            }
        }
    }
}

/// Sends `sig` to a process this test started.
pub fn kill_pid(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Waits (bounded) until no ovlfs daemon serves `mnt` any more.
pub fn daemons_gone(mnt: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if find_daemon_pids(&ovlfs_bin(), mnt).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The names in a directory, sorted; a listing error becomes one descriptive entry.
/// What a crash or a failed operation left in `WORKDIR/work`: its names, sorted, except the
/// shared whiteout inode ovlfs keeps there on purpose (see `whiteout.rs`).
pub fn work_leftovers(work: &Path) -> Vec<String> {
    let mut names = sorted_names(work);
    names.retain(|n| n != "#ovlfs.whiteout");
    names
}

pub fn sorted_names(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(e) => vec![format!("<read_dir {}: {e}>", dir.display())],
    }
}
