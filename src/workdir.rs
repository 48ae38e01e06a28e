//! The workdir: one mount at a time, and clearing what a crash left in `WORKDIR/work`.
//!
//! A mount takes `flock(LOCK_EX | LOCK_NB)` on an fd of the workdir directory itself (not on a
//! lock file: nothing is created, and no stale lock file can outlive a crash). The lock
//! belongs to the open file description, so it lasts as long as the process serving the
//! mount: the kernel drops it when that process exits, however it exits. It is taken in that
//! process (after the daemon's fork), so `/proc/locks` names the daemon and a second mount
//! can say which process holds the workdir.
//!
//! Nothing on disk changes before the mount succeeded: `WorkdirLock::acquire` only opens and
//! locks; `work` is created and emptied by `WorkdirLock::prepare`, which runs once the FUSE
//! mount is live and before any request is served.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::OFlags;

use crate::sys::{self, Errno, RenameFlags, Stat, SysResult};

/// `WORKDIR/work`, prepared, with the workdir lock that keeps other mounts out of it.
#[derive(Debug)]
pub struct Work {
    dir: OwnedFd,
    _lock: OwnedFd,
}

impl Work {
    /// The `O_PATH` fd of `WORKDIR/work`, where temp objects are built.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// In `WORKDIR/work`: objects a supervised mount keeps while the kernel holds their node after
/// their last name is gone (see `Overlay::keep_while_held`). Kept across worker restarts,
/// emptied at mount time like the rest of `work`.
pub const ORPHANS: &str = "#ovlfs.orphans";

/// How long a mount waits for the workdir before calling it busy: a daemon whose mount was
/// just unmounted (`fusermount3 -u`) holds it until it has exited, a moment later, and
/// callers remount right away.
const HANDOVER: Duration = Duration::from_secs(2);

/// The locked workdir, before `work` is prepared.
#[derive(Debug)]
pub(crate) struct WorkdirLock {
    root: OwnedFd,
    path: PathBuf,
}

impl WorkdirLock {
    /// Locks `workdir` for this process. Changes nothing on disk. Fails (with the holder's pid
    /// when it can be found) when another mount still holds it after [`HANDOVER`]. A
    /// filesystem that cannot lock at all only gets a warning: refusing to mount there would
    /// be worse.
    pub(crate) fn acquire(workdir: &Path) -> io::Result<WorkdirLock> {
        let shown = format!("{:?}", workdir.display().to_string());
        let root = sys::open_dir(workdir).map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("workdir {shown}: {e}"))
        })?;
        let start = Instant::now();
        let mut locked = sys::try_lock_exclusive(root.as_fd());
        while locked == Err(Errno::WOULDBLOCK) && start.elapsed() < HANDOVER {
            std::thread::sleep(Duration::from_millis(10));
            locked = sys::try_lock_exclusive(root.as_fd());
        }
        match locked {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let holder = match holder_pid(workdir) {
                    Some(pid) => format!(" (pid {pid})"),
                    None => String::new(),
                };
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!("workdir {shown} is in use by another mount{holder}"),
                ));
            }
            Err(e) => log::warn!(
                "cannot lock workdir {shown} ({e}): a second mount on it would not be refused"
            ),
        }
        Ok(WorkdirLock {
            root,
            path: workdir.to_owned(),
        })
    }

    /// The workdir of a mount whose supervisor holds the lock (a worker's view of it).
    pub(crate) fn held_by_supervisor(workdir: &Path) -> io::Result<WorkdirLock> {
        let root = sys::open_dir(workdir).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("workdir {:?}: {e}", workdir.display().to_string()),
            )
        })?;
        Ok(WorkdirLock {
            root,
            path: workdir.to_owned(),
        })
    }

    /// [`WorkdirLock::prepare`] for a worker taking over from a dead one: its temp objects
    /// go, the orphans the kernel may still hold stay.
    pub(crate) fn prepare_keeping_orphans(self) -> io::Result<Work> {
        self.prepare_keeping(Some(OsStr::new(ORPHANS)))
    }

    /// Opens `WORKDIR/work` (creating it as the kernel does) and removes the temp objects a
    /// crashed mount left there; no other mount can be using them, this one holds the lock.
    pub(crate) fn prepare(self) -> io::Result<Work> {
        self.prepare_keeping(None)
    }

    fn prepare_keeping(self, keep: Option<&OsStr>) -> io::Result<Work> {
        let fail = |e: Errno| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "workdir {:?}: {e}",
                    self.path.join("work").display().to_string()
                ),
            )
        };
        let work = OsStr::new("work");
        match sys::mkdir_at(self.root.as_fd(), work, 0o700) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(fail(e)),
        }
        let dir = sys::open_path_at(self.root.as_fd(), work).map_err(fail)?;
        match keep {
            None => sys::remove_tree_contents(dir.as_fd()).map_err(fail)?,
            Some(keep) => {
                for entry in sys::read_dir(dir.as_fd()).map_err(fail)? {
                    if entry.name != keep {
                        remove_any(dir.as_fd(), &entry.name).map_err(fail)?;
                    }
                }
            }
        }
        Ok(Work {
            dir,
            _lock: self.root,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Staging: build in `WORKDIR/work`, then publish with one rename
// ---------------------------------------------------------------------------------------------

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name for a temp object in the workdir.
pub fn temp_name() -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!("#ovlfs.{}.{n}", std::process::id()))
}

/// How a staged object takes its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Only where nothing is (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swapped with what is there (`RENAME_EXCHANGE`), which is then removed from the workdir.
    Exchange,
}

/// What publishing does to the target directory's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirTimes {
    /// The rename updates them, as any new name does.
    Update,
    /// They are put back: the change is invisible in that directory (a copy-up).
    Keep,
}

/// An object being built in `WORKDIR/work` under a fresh temp name, before it appears in the
/// upper in one rename: a crash or an error leaves nothing half-made where users look. Dropped
/// without being published, it is removed; what a crash leaves, the next mount clears.
#[derive(Debug)]
pub struct Staged<'w> {
    work: BorrowedFd<'w>,
    name: OsString,
    published: bool,
}

impl<'w> Staged<'w> {
    /// A fresh temp name in `work`; nothing is created yet.
    pub fn new(work: BorrowedFd<'w>) -> Staged<'w> {
        Staged {
            work,
            name: temp_name(),
            published: false,
        }
    }

    /// `WORKDIR/work`, where the object is built.
    pub fn work(&self) -> BorrowedFd<'w> {
        self.work
    }

    /// The temp name the object is built under.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// Moves the object to `dir/name`. On failure it stays staged (and is removed on drop).
    pub fn publish(
        mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        how: Publish,
        times: DirTimes,
    ) -> SysResult<()> {
        let before = match times {
            DirTimes::Keep => Some(sys::stat_fd(dir)?),
            DirTimes::Update => None,
        };
        let flags = match how {
            Publish::NoReplace => RenameFlags::NOREPLACE,
            Publish::Exchange => RenameFlags::EXCHANGE,
        };
        sys::rename_at(self.work, &self.name, dir, name, flags)?;
        self.published = how == Publish::NoReplace;
        // After an exchange the replaced object sits under the temp name: drop removes it.
        if let Some(st) = before {
            restore_times(dir, &st);
        }
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.published
            && let Err(e) = remove_any(self.work, &self.name)
            && e != Errno::NOENT
        {
            log::debug!("cannot remove temp object {:?}: {e}", self.name);
        }
    }
}

/// Puts back the atime/mtime of a directory (from an earlier stat).
pub fn restore_times(dir: BorrowedFd<'_>, st: &Stat) {
    let atime = Some(Some((st.st_atime, st.st_atime_nsec as i64)));
    let mtime = Some(Some((st.st_mtime, st.st_mtime_nsec as i64)));
    if let Err(e) = sys::utimens_fd(dir, atime, mtime) {
        log::debug!("cannot restore directory times: {e}");
    }
}

/// Removes a temp object of any type (a directory with its contents).
pub fn remove_any(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    match sys::unlink_at(dir, name) {
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            let sub = sys::open_at(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
            sys::remove_tree_contents(sub.as_fd())?;
            sys::rmdir_at(dir, name)
        }
        other => other,
    }
}

/// The pid holding a `flock` on `path`, from `/proc/locks` (`N: FLOCK ADVISORY WRITE PID
/// MAJ:MIN:INO ...`, device numbers in hex).
fn holder_pid(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, sys::major_minor(meta.dev()), meta.ino())
}

fn holder_in(locks: &str, (major, minor): (u32, u32), ino: u64) -> Option<u32> {
    let mut same_ino = Vec::new();
    for line in locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Waiters are listed as `N: -> FLOCK ...`; we never wait, but others may.
        if f.len() < 6 || f[1] != "FLOCK" || f[3] != "WRITE" {
            continue;
        }
        let Some(pid) = f[4].parse::<u32>().ok().filter(|&p| p > 0) else {
            continue;
        };
        let mut id = f[5].split(':');
        let (Some(maj), Some(min), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        if i.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let dev = (
            u32::from_str_radix(maj, 16).ok(),
            u32::from_str_radix(min, 16).ok(),
        );
        if dev == (Some(major), Some(minor)) {
            return Some(pid);
        }
        same_ino.push(pid);
    }
    // Some filesystems (btrfs subvolumes) report another device in stat than in /proc/locks.
    match same_ino.as_slice() {
        [pid] => Some(*pid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_from_proc_locks() {
        let locks = "\
1: POSIX  ADVISORY  WRITE 300 00:2a:77 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:77 0 EOF
2: -> FLOCK  ADVISORY  WRITE 999 fd:01:77 0 EOF
3: FLOCK  ADVISORY  READ 555 00:2a:88 0 EOF
4: FLOCK  ADVISORY  WRITE 4321 00:2a:77 0 EOF
";
        assert_eq!(holder_in(locks, (0, 0x2a), 77), Some(4321));
        assert_eq!(holder_in(locks, (0xfd, 1), 77), Some(1234));
        // Only a shared lock on that inode, or nothing: unknown.
        assert_eq!(holder_in(locks, (0, 0x2a), 88), None);
        assert_eq!(holder_in(locks, (0, 0x2a), 5), None);
        // Device mismatch (btrfs): one writer on that inode number is taken, two are not.
        assert_eq!(holder_in(locks, (0, 0x30), 77), None);
        let one = "2: FLOCK  ADVISORY  WRITE 1234 00:31:77 0 EOF\n";
        assert_eq!(holder_in(one, (0, 0x30), 77), Some(1234));
    }

    #[test]
    fn second_lock_is_refused_and_nothing_is_created() {
        let t = tempfile::tempdir().unwrap();
        let first = WorkdirLock::acquire(t.path()).unwrap();
        let e = WorkdirLock::acquire(t.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        let text = e.to_string();
        assert!(text.contains("in use by another mount"), "{text}");
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        assert!(!t.path().join("work").exists());
        let work = first.prepare().unwrap();
        assert!(t.path().join("work").is_dir());
        // Still held by `work`; released with it.
        assert!(WorkdirLock::acquire(t.path()).is_err());
        drop(work);
        WorkdirLock::acquire(t.path()).unwrap();
    }

    #[test]
    fn prepare_removes_stale_temp_objects() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("work/#ovlfs.1.2/sub")).unwrap();
        std::fs::write(t.path().join("work/#ovlfs.1.3"), b"partial").unwrap();
        let _work = WorkdirLock::acquire(t.path()).unwrap().prepare().unwrap();
        assert_eq!(std::fs::read_dir(t.path().join("work")).unwrap().count(), 0);
    }
}
