//! The fds nodes hold, counted against the open-file limit, and the waits that keep them
//! below it.
//!
//! Directories and upper objects hold an `O_PATH` fd for as long as the kernel keeps their
//! inode. Every such fd is a [`HeldFd`]; when their number passes the high-water mark, the
//! reclaim thread (the `reclaim` module, above the overlay) is woken to have the kernel
//! forget nodes. Requests that may open fds wait here while the count is too high.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::sys;

/// Fds held by nodes, in this process (the limit is per process too).
static HELD: AtomicUsize = AtomicUsize::new(0);
/// Held fds above which reclaim starts (`usize::MAX` until a reclaimer runs).
static HIGH_WATER: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Coarse clock for "least recently looked up": advanced by the reclaim thread.
static EPOCH: AtomicU32 = AtomicU32::new(1);
static WAKE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
/// Set while a wake-up is pending or a reclaim runs, so crossing the mark wakes only once.
static PENDING: AtomicBool = AtomicBool::new(false);

/// An fd a node holds for its life, counted against the open-file limit.
#[derive(Debug)]
pub struct HeldFd(OwnedFd);

impl HeldFd {
    pub fn new(fd: OwnedFd) -> HeldFd {
        let held = HELD.fetch_add(1, Ordering::Relaxed) + 1;
        if held >= HIGH_WATER.load(Ordering::Relaxed) && !PENDING.swap(true, Ordering::AcqRel) {
            wake();
        }
        HeldFd(fd)
    }
}

impl Drop for HeldFd {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsFd for HeldFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

pub fn held_fds() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Called before a request that may open fds, with no lock held: while the held fds are
/// above three quarters of the limit (lookups outpacing the reclaim), waits up to 200 ms for
/// the reclaim thread to bring them down. This keeps room for the fds of open files.
pub fn throttle() {
    let high = HIGH_WATER.load(Ordering::Relaxed);
    if high == usize::MAX {
        return; // no reclaim thread
    }
    let hard = high.saturating_add(high / 2);
    if held_fds() >= hard {
        request_and_wait_below(hard);
    }
}

/// Runs `op`; if it ran out of fds, has the reclaim thread free some (waiting up to 200 ms)
/// and runs it once more. Only for operations that can simply be repeated (lookups, opens).
pub fn retry_on_emfile<T>(mut op: impl FnMut() -> sys::SysResult<T>) -> sys::SysResult<T> {
    let high = HIGH_WATER.load(Ordering::Relaxed);
    match op() {
        Err(sys::Errno::MFILE) if high != usize::MAX => {
            request_and_wait_below(high);
            op()
        }
        other => other,
    }
}

/// Wakes the reclaim thread (unless already asked) and waits up to 200 ms for the held fds
/// to drop below `mark` — but only while they drop: entries the kernel cannot prune (in use,
/// or directories pinned by cached negative entries) must not stall every request.
fn request_and_wait_below(mark: usize) {
    if !PENDING.swap(true, Ordering::AcqRel) {
        wake();
    }
    let mut last = held_fds();
    for step in 1..=40 {
        std::thread::sleep(Duration::from_millis(5));
        let held = held_fds();
        if held < mark {
            break;
        }
        if step % 5 == 0 {
            if held >= last {
                crate::logging::warn_limited(
                    "fd-limit-stall",
                    format_args!(
                        "{held} node fds held (mark {mark}) and the kernel frees no more: \
                         requests go on without waiting"
                    ),
                );
                break; // no progress in 25 ms
            }
            last = held;
        }
    }
}

/// The current epoch, stamped on a node at each lookup.
pub fn epoch() -> u32 {
    EPOCH.load(Ordering::Relaxed)
}

fn wake() {
    let (flag, cv) = &WAKE;
    *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
    cv.notify_one();
}

/// Arms the high-water mark (the reclaim thread runs from now on).
pub(crate) fn set_high_water(high: usize) {
    HIGH_WATER.store(high, Ordering::Relaxed);
}

/// For the reclaim thread: sleeps until woken (or `timeout`), then starts a new epoch and
/// lets crossings of the mark wake it again.
pub(crate) fn wait_for_work(timeout: Duration) {
    {
        let (flag, cv) = &WAKE;
        let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
        let (mut woken, _) = cv
            .wait_timeout_while(guard, timeout, |w| !*w)
            .unwrap_or_else(|e| e.into_inner());
        *woken = false;
    }
    PENDING.store(false, Ordering::Release);
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_reclaim_thread_nothing_waits_or_retries() {
        let t = std::time::Instant::now();
        throttle();
        let mut calls = 0;
        let r: sys::SysResult<()> = retry_on_emfile(|| {
            calls += 1;
            Err(sys::Errno::MFILE)
        });
        assert_eq!(r, Err(sys::Errno::MFILE));
        assert_eq!(calls, 1, "retried without a reclaim thread");
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
