//! The watchdog: aborts a hung FUSE connection so a stuck request fails a test instead of hanging CI.

use super::*;

// ---------------------------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------------------------

pub const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";
pub static FUSECTL_LOCK: Mutex<()> = Mutex::new(());

/// The fusectl connection number of the FUSE mount at `path`, from /proc/self/mountinfo
/// (no filesystem call on the possibly-hung mount).
pub fn fuse_connection_id(path: &Path) -> Option<u64> {
    find_fuse_mount(path).map(|m| ((m.major as u64) << 20) | m.minor as u64)
}

/// Write `1` to /sys/fs/fuse/connections/N/abort for connection `conn`, mounting fusectl for
/// the duration if it is not mounted.
pub fn abort_fuse_connection(conn: u64) -> io::Result<()> {
    let _lock = FUSECTL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(FUSECTL_DIR);
    let mounted = mountinfo()
        .iter()
        .any(|m| m.mount_point == dir && m.fstype == "fusectl");
    let mut we_mounted = false;
    if !mounted {
        if !run_quiet(
            "mount",
            &[
                "-t".as_ref(),
                "fusectl".as_ref(),
                "none".as_ref(),
                dir.as_os_str(),
            ],
        ) {
            return Err(io::Error::other("could not mount fusectl"));
        }
        we_mounted = true;
    }
    let r = fs::write(dir.join(conn.to_string()).join("abort"), b"1");
    if we_mounted {
        run_quiet("umount", &[dir.as_os_str()]);
    }
    r
}

pub fn abort_fuse_mount(path: &Path) -> io::Result<()> {
    match fuse_connection_id(path) {
        Some(c) => abort_fuse_connection(c),
        None => Err(io::Error::other(format!(
            "{} is not a FUSE mount",
            path.display()
        ))),
    }
}

/// Run `f` on its own thread; if it has not finished after `secs` seconds, abort the FUSE
/// connection of `mount` (so blocked syscalls return) and panic. Panics of `f` propagate.
pub fn with_watchdog<F, R>(secs: u64, mount: &Path, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    with_watchdog_mounts(secs, &[mount], f)
}

/// `with_watchdog` for several mounts (non-FUSE mounts in the list are ignored).
pub fn with_watchdog_mounts<F, R>(secs: u64, mounts: &[&Path], f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let conns: Vec<(PathBuf, u64)> = mounts
        .iter()
        .filter_map(|m| fuse_connection_id(m).map(|c| (m.to_path_buf(), c)))
        .collect();
    let (tx, rx) = mpsc::channel::<()>();
    let handle = thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let r = f();
            let _ = tx.send(());
            r
        })
        .expect("spawn test body thread");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let mut notes = Vec::new();
            for (m, c) in &conns {
                match abort_fuse_connection(*c) {
                    Ok(()) => notes.push(format!("aborted FUSE connection {c} ({})", m.display())),
                    Err(e) => notes.push(format!("abort of connection {c} failed: {e}")),
                }
            }
            let unstuck = rx.recv_timeout(Duration::from_secs(5)).is_ok();
            panic!(
                "WATCHDOG: test body did not finish within {secs} s (hung filesystem operation?); \
                 {}; body {} after the abort",
                if notes.is_empty() {
                    "no FUSE connection to abort".to_string()
                } else {
                    notes.join("; ")
                },
                if unstuck {
                    "returned"
                } else {
                    "was still stuck"
                }
            );
        }
    }
}
