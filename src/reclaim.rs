//! Keeping the fds held by nodes under the open-file limit.
//!
//! Directories and upper objects hold an `O_PATH` fd for as long as the kernel keeps their
//! inode (passthrough_hp's design). The kernel forgets inodes only under memory pressure, so a
//! long workload that leaves many names behind reaches `RLIMIT_NOFILE` long before that. When
//! the held fds pass half the limit, a reclaim thread asks the kernel to prune the least
//! recently looked-up nodes (`FUSE_NOTIFY_PRUNE`, kernel ≥ 6.18): the kernel drops only
//! *unused* dentries of those inodes — never one in use, open, a cwd or a mountpoint — and
//! sends FORGET for each inode it evicts, which closes the fds.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crate::overlay::Overlay;
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

/// Starts the reclaim thread for `ov`, sending prune notifications on `dev` (the session's
/// /dev/fuse fd). `fd_limit` is the process's soft `RLIMIT_NOFILE`.
pub fn start(ov: Arc<Overlay>, dev: OwnedFd, fd_limit: u64) {
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    let high = (limit / 2).max(64);
    HIGH_WATER.store(high, Ordering::Relaxed);
    let target = limit / 4;
    // A weak reference: the thread ends with the mount's state (in-process mounts).
    let ov = Arc::downgrade(&ov);
    let spawned = std::thread::Builder::new()
        .name("ovlfs-reclaim".into())
        .spawn(move || reclaim_loop(&ov, dev.as_fd(), high, target));
    if let Err(e) = spawned {
        log::warn!("no reclaim thread ({e}): node fds are bounded only by the kernel's forgets");
    }
}

fn reclaim_loop(ov: &Weak<Overlay>, dev: BorrowedFd<'_>, high: usize, target: usize) {
    let mut supported = true;
    while supported {
        {
            let (flag, cv) = &WAKE;
            let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
            let (mut woken, _) = cv
                .wait_timeout_while(guard, Duration::from_secs(1), |w| !*w)
                .unwrap_or_else(|e| e.into_inner());
            *woken = false;
        }
        // Marks crossed from now on wake the thread again.
        PENDING.store(false, Ordering::Release);
        EPOCH.fetch_add(1, Ordering::Relaxed);
        let Some(ov) = ov.upgrade() else { return };
        // Directories are pruned only once their children are gone: a few passes.
        for _ in 0..4 {
            if held_fds() < high {
                break;
            }
            let victims = pick_victims(&ov, held_fds().saturating_sub(target));
            if victims.is_empty() {
                break;
            }
            log::debug!(
                "{} fds held: asking the kernel to prune {} nodes",
                held_fds(),
                victims.len()
            );
            if let Err(e) = sys::notify_prune(dev, &victims) {
                log::warn!(
                    "the kernel refused FUSE_NOTIFY_PRUNE ({e}); node fds can reach the \
                     open-file limit"
                );
                supported = false;
                break;
            }
            // FORGETs arrive asynchronously.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Node ids to prune: the least recently looked-up nodes holding about `want` fds, plus every
/// cached node below a chosen directory (a directory's dentry stays in use while children
/// are cached), deepest first, so that one notification prunes whole subtrees bottom-up.
fn pick_victims(ov: &Overlay, want: usize) -> Vec<u64> {
    struct Candidate {
        id: u64,
        last_used: u32,
        fds: usize,
        /// Ids of the parent chain, nearest first.
        ancestors: Vec<u64>,
    }
    let mut candidates: Vec<Candidate> = ov
        .inodes
        .snapshot()
        .into_iter()
        .filter(|node| node.id != crate::inode::ROOT_ID)
        .map(|node| {
            let mut ancestors = Vec::new();
            let mut parent = node.read().parent.clone();
            while let Some(p) = parent {
                ancestors.push(p.id);
                parent = p.read().parent.clone();
            }
            Candidate {
                id: node.id,
                last_used: node.last_used(),
                fds: node.held_fd_count(),
                ancestors,
            }
        })
        .collect();
    candidates.sort_unstable_by_key(|c| c.last_used);
    let mut chosen = std::collections::HashSet::new();
    let mut freed = 0;
    for c in &candidates {
        if freed >= want {
            break;
        }
        if c.fds > 0 {
            freed += c.fds;
            chosen.insert(c.id);
        }
    }
    let mut victims: Vec<(usize, u64)> = candidates
        .iter()
        .filter(|c| chosen.contains(&c.id) || c.ancestors.iter().any(|a| chosen.contains(a)))
        .map(|c| (c.ancestors.len(), c.id))
        .collect();
    victims.sort_unstable_by(|a, b| b.cmp(a));
    victims.into_iter().map(|(_, id)| id).collect()
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
