//! The reclaim thread: keeps the fds held by nodes under the open-file limit.
//!
//! The kernel forgets inodes only under memory pressure, so a long workload that leaves many
//! names behind reaches `RLIMIT_NOFILE` long before that. When the held fds (see
//! [`crate::fdbudget`]) pass half the limit, this thread asks the kernel to prune the least
//! recently looked-up nodes (`FUSE_NOTIFY_PRUNE`, kernel ≥ 6.18): the kernel drops only
//! *unused* dentries of those inodes — never one in use, open, a cwd or a mountpoint — and
//! sends FORGET for each inode it evicts, which closes the fds.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::fdbudget::{self, held_fds};
use crate::inode::ROOT_ID;
use crate::overlay::Overlay;
use crate::sys;

/// Starts the reclaim thread for `ov`, sending prune notifications on `dev` (the session's
/// /dev/fuse fd). `fd_limit` is the process's soft `RLIMIT_NOFILE`.
pub fn start(ov: Arc<Overlay>, dev: OwnedFd, fd_limit: u64) {
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    let high = (limit / 2).max(64);
    fdbudget::set_high_water(high);
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
        fdbudget::wait_for_work(Duration::from_secs(1));
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
        .filter(|node| node.id != ROOT_ID)
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
