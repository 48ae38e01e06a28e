//! One mount per workdir: a second mount on the workdir of a live one is refused with one line
//! naming the pid that holds it, and changes nothing (the first mount's in-progress temp
//! objects in `WORKDIR/work` survive, the first mount keeps working). The lock goes with the
//! daemon, however it ends; stale temp objects are cleared by the next mount that goes ahead.

mod common;

use common::*;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

const BODY_SECS: u64 = 60;
const WAIT: Duration = Duration::from_secs(10);
/// What an in-progress copy-up looks like in `WORKDIR/work` (the daemon's own temp names).
const IN_PROGRESS: &str = "#ovlfs.4242.7";

struct Fixture {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    /// A lower with a small file and a 64 MiB one, an empty upper and workdir, two mountpoints.
    fn new() -> Fixture {
        let (t, root) = scratch(&["lower", "upper", "work", "a", "b"]);
        write_file(&root.join("lower/small"), "small\n");
        write_random_file(&root.join("lower/big"), 64 << 20, &mut rng::Rng::new(7));
        Fixture { _t: t, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn ovlfs(&self) -> Ovlfs {
        Ovlfs::new([self.p("lower")]).upper(self.p("upper"), self.p("work"))
    }
}

/// Ends (by PID) any daemon left serving `mnt`, and unmounts it; returns what was found.
fn reap(mnt: &Path) -> (bool, Vec<u32>) {
    let mounted = is_fuse_mounted(mnt);
    if mounted {
        let _ = run_cmd_quiesced(
            std::process::Command::new("umount").arg("-l").arg(mnt),
            WAIT,
        );
    }
    let strays = find_daemon_pids(&ovlfs_bin(), mnt);
    for &pid in &strays {
        kill_pid(pid, rustix::process::Signal::KILL);
    }
    (mounted, strays)
}

fn one_line(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn second_mount_on_a_busy_workdir_is_refused() {
    let fx = Fixture::new();
    let a = fx.ovlfs().mount_daemon(&fx.p("a"));
    let a_pid = a.pid().expect("daemon pid of mount A");
    let work = fx.p("work/work");
    // A stand-in for a copy-up A has in progress.
    write_file(&work.join(IN_PROGRESS), "half a copy");
    // And a real one, running while B tries: appending to a big lower file copies it up.
    let big = a.join("big");
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().append(true).open(&big)?;
        f.write_all(b"tail")
    });

    // B refused, as a daemon and in the foreground; with the copy-up running, then without
    // (when A is idle, not a byte of upper and workdir may change).
    let try_b = |foreground: bool, idle: bool| {
        let what = format!(
            "B {} (A {})",
            if foreground { "with -f" } else { "as a daemon" },
            if idle { "idle" } else { "copying up" }
        );
        let upper_before = snapshot_tree(&fx.p("upper"));
        let work_before = snapshot_tree(&fx.p("work"));
        let mut cmd = fx.ovlfs().command(&canon(&fx.p("b")), foreground);
        let out = run_cmd(&mut cmd, WAIT).expect("run mount B");
        let (mounted, strays) = reap(&canon(&fx.p("b")));
        assert!(
            !mounted,
            "{what}: mounted on a busy workdir; stderr:\n{}",
            out.stderr
        );
        assert!(strays.is_empty(), "{what}: left processes {strays:?}");
        assert!(out.status.is_some(), "{what}: did not exit within {WAIT:?}");
        assert!(!out.success(), "{what}: exited 0; stderr:\n{}", out.stderr);
        let lines = one_line(&out.stderr);
        assert_eq!(
            lines.len(),
            1,
            "{what}: want one line, got:\n{}",
            out.stderr
        );
        for needle in ["workdir", "in use", &format!("pid {a_pid}")] {
            assert!(
                lines[0].contains(needle),
                "{what}: {:?} lacks {needle:?}",
                lines[0]
            );
        }
        assert!(
            work.join(IN_PROGRESS).exists(),
            "{what}: A's temp object is gone"
        );
        if idle {
            assert_tree_unchanged("upper (B)", &upper_before, &fx.p("upper"));
            assert_tree_unchanged("workdir (B)", &work_before, &fx.p("work"));
        }
    };
    try_b(false, false);
    try_b(true, false);

    // A keeps working: its copy-up completed, new files go to its upper.
    let p = a.path().to_path_buf();
    let lower_big = fx.p("lower/big");
    with_watchdog(BODY_SECS, a.path(), move || {
        writer
            .join()
            .expect("writer thread")
            .expect("append through A");
        let got = fs::read(p.join("big")).expect("read big through A");
        let mut want = fs::read(&lower_big).expect("read lower big");
        want.extend_from_slice(b"tail");
        assert!(got == want, "big through A after the copy-up differs");
        fs::write(p.join("new"), "new\n").expect("create through A");
        assert_eq!(fs::read_to_string(p.join("small")).unwrap(), "small\n");
    });
    try_b(false, true);
    try_b(true, true);
    assert_eq!(fs::read_to_string(fx.p("upper/new")).unwrap(), "new\n");
    assert!(work.join(IN_PROGRESS).exists(), "A's temp object is gone");
    drop(a);
}

#[test]
fn workdir_is_free_again_when_the_daemon_ends() {
    let fx = Fixture::new();
    let work = fx.p("work/work");

    // Unmounted normally: the daemon exits and takes the lock with it.
    let mut a = fx.ovlfs().mount_daemon(&fx.p("a"));
    assert!(a.fusermount_u(), "fusermount3 -u of A failed");
    assert!(a.wait_exit(WAIT).is_some(), "daemon A still running");
    drop(a);

    // Killed: the lock is gone with the process, no lock file is left to trip over.
    let mut a = fx.ovlfs().mount(&fx.p("a"));
    write_file(&work.join(IN_PROGRESS), "left by a crash");
    a.signal(rustix::process::Signal::KILL).expect("SIGKILL A");
    assert!(a.wait_exit(WAIT).is_some(), "A did not die on SIGKILL");
    drop(a);

    // The next mount goes ahead on the same workdir, and clears what the crash left.
    let b = fx.ovlfs().mount(&fx.p("b"));
    assert_eq!(
        work_leftovers(&work),
        Vec::<String>::new(),
        "stale temp objects after a mount"
    );
    let p = b.path().to_path_buf();
    with_watchdog(BODY_SECS, b.path(), move || {
        fs::write(p.join("small"), "changed\n").expect("copy-up through B");
    });
    drop(b);
    assert_eq!(
        fs::read_to_string(fx.p("upper/small")).unwrap(),
        "changed\n"
    );
    // Nothing but `work` in the workdir: the lock is on the directory itself.
    assert_eq!(sorted_names(&fx.p("work")), ["work"]);
}

/// A remount right after `fusermount3 -u` (as containers/storage does, without waiting for
/// the old daemon to exit) waits for the old daemon to let go of the workdir.
#[test]
fn remount_right_after_an_unmount_waits_for_the_old_daemon() {
    let fx = Fixture::new();
    let mut a = fx.ovlfs().mount_daemon(&fx.p("a"));
    let a_pid = a.pid().expect("daemon pid of A");
    // Stopped, A cannot exit (and release the workdir) before it is continued.
    a.signal(rustix::process::Signal::STOP).expect("SIGSTOP A");
    assert!(
        a.fusermount_u(),
        "fusermount3 -u of a stopped daemon's mount"
    );
    let resume = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        kill_pid(a_pid, rustix::process::Signal::CONT);
    });
    let b = fx.ovlfs().launch_daemon(&fx.p("b"));
    resume.join().expect("resume thread");
    assert!(
        b.status.is_some_and(|s| s.success()) && b.mounted_at_exit,
        "B did not wait for A to exit: status {:?}; stderr:\n{}",
        b.status,
        b.stderr
    );
    assert!(a.wait_exit(WAIT).is_some(), "A still running");
    let p = b.mount.path().to_path_buf();
    with_watchdog(BODY_SECS, b.mount.path(), move || {
        fs::write(p.join("small"), "b\n").expect("copy-up through B");
    });
    drop(b);
    drop(a);
}
