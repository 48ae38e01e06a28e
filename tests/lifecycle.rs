//! Daemon lifecycle: daemonizing only once the mount is live (and leaving the caller's
//! directory), unmount on SIGTERM/SIGINT and on `fusermount3 -u`, clear one-line errors for bad
//! command lines, the fstype the mount shows.

mod common;

use common::*;
use rustix::process::Signal;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BODY_SECS: u64 = 30;
const WAIT: Duration = Duration::from_secs(10);

/// Two small lowers and a mountpoint; returns (guard, root).
fn two_lowers() -> (tempfile::TempDir, PathBuf) {
    let (t, root) = scratch(&["l1", "l2", "m"]);
    write_file(&root.join("l1/top"), "top\n");
    write_file(&root.join("l2/bottom"), "bottom\n");
    write_file(&root.join("l2/d/inner"), "inner\n");
    (t, root)
}

fn lowers(root: &Path) -> Ovlfs {
    Ovlfs::new([root.join("l1"), root.join("l2")])
}

fn using_default_binary() -> bool {
    std::env::var_os("OVLFS_TEST_BIN").is_none_or(|v| v.is_empty())
}

/// Read through the mount under a watchdog (proves the mount serves requests).
fn assert_serves(m: &OvlfsMount) {
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(
            fs::read_to_string(p.join("top")).expect("read top"),
            "top\n"
        );
        assert_eq!(
            fs::read_to_string(p.join("d/inner")).expect("read d/inner"),
            "inner\n"
        );
    });
}

/// Kill any process still running the binary on `mnt` (used after commands expected to fail).
fn reap_strays(mnt: &Path) -> Vec<u32> {
    let strays = find_daemon_pids(&ovlfs_bin(), mnt);
    for pid in &strays {
        if let Some(p) = rustix::process::Pid::from_raw(*pid as i32) {
            let _ = rustix::process::kill_process(p, Signal::KILL);
        }
    }
    strays
}

/// Without `-f` (argv exactly `[prog, "-o", opts, merged]`) the command exits 0 and the mount is
/// already live when it returns; the daemon keeps serving after the launcher is gone.
#[test]
fn daemon_mode_exits_zero_with_mount_live() {
    let (_t, root) = two_lowers();
    let launch = lowers(&root).launch_daemon(&root.join("m"));
    let m = launch.mount;
    assert!(
        launch.status.is_some(),
        "launcher did not exit within {MOUNT_TIMEOUT:?}; stderr:\n{}",
        launch.stderr
    );
    assert!(
        launch.status.is_some_and(|s| s.success()),
        "launcher exited with {:?}; stderr:\n{}",
        launch.status,
        launch.stderr
    );
    assert!(
        launch.mounted_at_exit,
        "launcher exited 0 before {} appeared in /proc/self/mountinfo",
        m.path().display()
    );
    let info = find_fuse_mount(m.path()).expect("mountinfo entry");
    if using_default_binary() {
        // Also as root, where the kernel is called directly (fuse-overlayfs: fuse.fuse-overlayfs).
        assert_eq!(info.fstype, "fuse.ovlfs");
    }
    assert!(
        m.pid().is_some(),
        "no daemon process found serving {}",
        m.path().display()
    );
    assert_serves(&m);
}

/// SIGTERM to the daemon unmounts and the daemon exits.
#[test]
fn daemon_sigterm_unmounts_and_exits() {
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount_daemon(&root.join("m"));
    assert_serves(&m);
    let pid = m.pid().expect("daemon pid");
    m.signal(Signal::TERM).expect("send SIGTERM");
    assert!(
        m.wait_unmounted(WAIT),
        "still mounted {WAIT:?} after SIGTERM to daemon {pid}"
    );
    assert!(
        m.wait_exit(WAIT).is_some(),
        "daemon {pid} still running {WAIT:?} after SIGTERM"
    );
}

/// SIGINT to the daemon unmounts and the daemon exits.
#[test]
fn daemon_sigint_unmounts_and_exits() {
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount_daemon(&root.join("m"));
    let pid = m.pid().expect("daemon pid");
    m.signal(Signal::INT).expect("send SIGINT");
    assert!(
        m.wait_unmounted(WAIT),
        "still mounted {WAIT:?} after SIGINT to {pid}"
    );
    assert!(
        m.wait_exit(WAIT).is_some(),
        "daemon {pid} still running after SIGINT"
    );
}

/// `fusermount3 -u` makes the daemon exit.
#[test]
fn daemon_exits_after_fusermount_u() {
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount_daemon(&root.join("m"));
    assert_serves(&m);
    let pid = m.pid().expect("daemon pid");
    assert!(m.fusermount_u(), "fusermount3 -u failed");
    assert!(!m.is_mounted(), "still mounted after fusermount3 -u");
    assert!(
        m.wait_exit(WAIT).is_some(),
        "daemon {pid} still running {WAIT:?} after fusermount3 -u"
    );
}

/// `umount` (not fusermount3) also makes the daemon exit.
#[test]
fn daemon_exits_after_umount() {
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount_daemon(&root.join("m"));
    let pid = m.pid().expect("daemon pid");
    let out = run_cmd_quiesced(Command::new("umount").arg(m.path()), WAIT).expect("run umount");
    assert!(out.success(), "umount failed: {}", out.stderr);
    assert!(
        m.wait_exit(WAIT).is_some(),
        "daemon {pid} still running after umount"
    );
}

/// With `-f`, SIGINT unmounts cleanly: the process exits 0 and the mount is gone.
#[test]
fn foreground_sigint_unmounts_cleanly() {
    foreground_signal(Signal::INT);
}

/// With `-f`, SIGTERM unmounts cleanly: the process exits 0 and the mount is gone.
#[test]
fn foreground_sigterm_unmounts_cleanly() {
    foreground_signal(Signal::TERM);
}

fn foreground_signal(sig: Signal) {
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount(&root.join("m"));
    assert_serves(&m);
    m.signal(sig).expect("send signal");
    let st = m.wait_exit(WAIT);
    let unmounted = m.wait_unmounted(Duration::from_secs(1));
    assert!(
        st.is_some(),
        "ovlfs -f still running {WAIT:?} after {sig:?} (mounted: {}); stderr:\n{}",
        m.is_mounted(),
        m.stderr()
    );
    assert!(
        unmounted,
        "mount still present after ovlfs -f exited on {sig:?}; stderr:\n{}",
        m.stderr()
    );
    let st = st.flatten().expect("child status");
    assert!(
        st.success(),
        "ovlfs -f exited with {st} after {sig:?} (want 0); stderr:\n{}",
        m.stderr()
    );
}

/// With `-f`, `fusermount3 -u` makes the process exit 0.
#[test]
fn foreground_exits_zero_after_fusermount_u() {
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount(&root.join("m"));
    assert!(m.fusermount_u(), "fusermount3 -u failed");
    let st = m.wait_exit(WAIT);
    assert!(
        st.is_some(),
        "ovlfs -f still running {WAIT:?} after fusermount3 -u"
    );
    let st = st.flatten().expect("child status");
    assert!(
        st.success(),
        "ovlfs -f exited with {st}; stderr:\n{}",
        m.stderr()
    );
}

/// SIGTERM unmounts (at least lazily) and exits even while a file inside is held open.
#[test]
fn daemon_sigterm_while_busy() {
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount_daemon(&root.join("m"));
    let pid = m.pid().expect("daemon pid");
    let p = m.path().to_path_buf();
    let held = with_watchdog(BODY_SECS, m.path(), move || {
        fs::File::open(p.join("top")).expect("open top")
    });
    m.signal(Signal::TERM).expect("send SIGTERM");
    let unmounted = m.wait_unmounted(WAIT);
    let exit_wait = if unmounted {
        WAIT
    } else {
        Duration::from_millis(200)
    };
    let exited = m.wait_exit(exit_wait).is_some();
    drop(held);
    assert!(
        unmounted,
        "mount still present {WAIT:?} after SIGTERM with a busy file"
    );
    assert!(
        exited,
        "daemon {pid} still running {WAIT:?} after SIGTERM with a busy file"
    );
}

/// With an upper layer, data written before SIGTERM is in the upper after the daemon exits.
#[test]
fn sigterm_keeps_written_data() {
    let (_t, root) = two_lowers();
    mkdirs(&root.join("u"));
    mkdirs(&root.join("w"));
    let mut m = lowers(&root)
        .upper(root.join("u"), root.join("w"))
        .mount_daemon(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        fs::write(p.join("written"), "persisted\n").expect("write through the mount");
    });
    m.signal(Signal::TERM).expect("send SIGTERM");
    assert!(m.wait_unmounted(WAIT), "still mounted after SIGTERM");
    assert!(
        m.wait_exit(WAIT).is_some(),
        "daemon still running after SIGTERM"
    );
    assert_eq!(
        fs::read_to_string(root.join("u/written")).expect("upper has the file"),
        "persisted\n"
    );
}

fn assert_one_line_failure(what: &str, out: &CmdOutput, must_mention: &str) {
    assert!(
        out.status.is_some(),
        "{what}: did not exit within the timeout"
    );
    assert!(!out.success(), "{what}: exited 0; stderr:\n{}", out.stderr);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: want exactly one line on stderr, got:\n{}",
        out.stderr
    );
    assert!(
        lines[0].contains(must_mention),
        "{what}: the error should name {must_mention:?}: {:?}",
        lines[0]
    );
}

/// Mounting over a missing mountpoint fails with one line on stderr and a non-zero exit, in
/// both foreground and daemon mode, and leaves no process or mount behind.
#[test]
fn missing_mountpoint_fails_with_one_line() {
    let (_t, root) = two_lowers();
    let missing = root.join("no-such-mountpoint");
    for fg in [true, false] {
        let what = if fg { "-f" } else { "daemon mode" };
        let out = run_cmd(&mut lowers(&root).command(&missing, fg), WAIT).expect("spawn");
        let strays = reap_strays(&missing);
        assert!(
            find_mount(&missing).is_none(),
            "{what}: something got mounted"
        );
        assert!(
            strays.is_empty(),
            "{what}: left processes behind: {strays:?}"
        );
        assert_one_line_failure(what, &out, "no-such-mountpoint");
    }
}

/// A missing lower layer fails with one line naming it, exits non-zero, mounts nothing.
#[test]
fn missing_lowerdir_fails_with_one_line() {
    let (_t, root) = two_lowers();
    let mnt = root.join("m");
    for fg in [true, false] {
        let what = if fg { "-f" } else { "daemon mode" };
        let ov = Ovlfs::new([root.join("l1"), root.join("no-such-lower")]);
        let out = run_cmd(&mut ov.command(&mnt, fg), WAIT).expect("spawn");
        let mounted = is_fuse_mounted(&mnt);
        if mounted {
            let _ = run_cmd(Command::new("umount").arg("-l").arg(&mnt), WAIT);
        }
        let strays = reap_strays(&mnt);
        assert!(!mounted, "{what}: mounted despite a missing lower");
        assert!(
            strays.is_empty(),
            "{what}: left processes behind: {strays:?}"
        );
        assert_one_line_failure(what, &out, "no-such-lower");
    }
}

/// Wait (bounded) until every thread of `pid` is in the stopped state.
fn all_threads_stopped(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let states: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|t| fs::read_to_string(t.path().join("stat")).ok())
                    .filter_map(|s| {
                        let i = s.rfind(')')?;
                        s[i + 1..].split_whitespace().next().map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !states.is_empty() && states.iter().all(|s| s == "T" || s == "t") {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The harness's watchdog: a request to a stopped daemon is unblocked by aborting the FUSE
/// connection, the watchdog panics with a clear message, and the guard still cleans up.
#[test]
fn watchdog_aborts_a_hung_mount() {
    if !require_root("watchdog_aborts_a_hung_mount") {
        return;
    }
    let (_t, root) = two_lowers();
    let mut m = lowers(&root).mount(&root.join("m"));
    let pid = m.pid().expect("pid");
    m.signal(Signal::STOP).expect("SIGSTOP");
    assert!(all_threads_stopped(pid), "daemon {pid} did not stop");
    let p = m.path().to_path_buf();
    let started = std::time::Instant::now();
    let r = std::panic::catch_unwind(|| {
        with_watchdog(2, m.path(), move || {
            // A name never looked up before cannot be answered from the kernel's caches.
            let _ = fs::symlink_metadata(p.join("never-looked-up-before"));
        })
    });
    let _ = m.signal(Signal::CONT);
    let elapsed = started.elapsed();
    let msg = match &r {
        Ok(()) => String::new(),
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    };
    assert!(
        r.is_err(),
        "the watchdog did not fire on a stopped daemon ({pid})"
    );
    assert!(msg.contains("WATCHDOG"), "unexpected panic message: {msg}");
    assert!(
        msg.contains("aborted FUSE connection"),
        "connection not aborted: {msg}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "watchdog took {elapsed:?}"
    );
    drop(m);
    assert!(
        !is_fuse_mounted(&root.join("m")),
        "mount left behind after abort"
    );
}

/// `subtype=NAME` makes the mount show as `fuse.NAME`.
#[test]
fn subtype_sets_the_fstype() {
    let (_t, root) = two_lowers();
    let m = lowers(&root)
        .opt("subtype=layers")
        .mount_daemon(&root.join("m"));
    let info = find_fuse_mount(m.path()).expect("mountinfo entry");
    assert_eq!(info.fstype, "fuse.layers");
    assert_serves(&m);
}

/// `--debug` (as fuse-overlayfs takes it: debug output, but unlike `-d` no foreground).
#[test]
fn long_debug_flag_still_daemonizes() {
    let (_t, root) = two_lowers();
    let launch = lowers(&root).arg("--debug").launch_daemon(&root.join("m"));
    let m = launch.mount;
    assert!(
        launch.status.is_some_and(|s| s.success()) && launch.mounted_at_exit,
        "ovlfs --debug: launcher status {:?}, mounted when it exited: {}; stderr:\n{}",
        launch.status,
        launch.mounted_at_exit,
        launch.stderr
    );
    assert!(
        launch.stderr.contains("DEBUG"),
        "no debug output: {}",
        launch.stderr
    );
    assert_serves(&m);
}

fn cwd_of(pid: u32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|e| panic!("cwd of {pid}: {e}"))
}

/// Ends what a test started by hand on `mnt`: the mount, then the daemon (by PID).
struct ByHand {
    mnt: PathBuf,
    pid: Option<u32>,
}

impl Drop for ByHand {
    fn drop(&mut self) {
        if is_fuse_mounted(&self.mnt) {
            let _ = run_cmd_quiesced(Command::new("umount").arg("-l").arg(&self.mnt), WAIT);
        }
        if let Some(pid) = self.pid
            && !wait_pid_gone(pid, Duration::from_secs(2))
        {
            kill_pid(pid, Signal::KILL);
        }
    }
}

/// The daemon works in `/` (as after libfuse's fuse_daemonize), so the caller's directory is
/// not kept busy; paths given relative to that directory were resolved before. A signal still
/// unmounts it.
#[test]
fn daemon_leaves_the_callers_directory() {
    let (_t, root) = two_lowers();
    mkdirs(&root.join("u"));
    mkdirs(&root.join("w"));
    let ov = Ovlfs::new(["l1", "l2"]).upper("u", "w").current_dir(&root);
    let mut cmd = ov.command(Path::new("m"), false);
    let mut guard = ByHand {
        mnt: root.join("m"),
        pid: None,
    };
    let out = run_cmd(&mut cmd, WAIT).expect("run ovlfs");
    assert!(out.success(), "ovlfs failed: {}", out.stderr);
    let pid = find_daemon_pids(&ovlfs_bin(), Path::new("m"))
        .into_iter()
        .next()
        .expect("no daemon serving m");
    guard.pid = Some(pid);
    assert_eq!(
        cwd_of(pid),
        Path::new("/"),
        "the daemon's working directory"
    );
    let p = root.join("m");
    with_watchdog(BODY_SECS, &p.clone(), move || {
        assert_eq!(fs::read_to_string(p.join("top")).unwrap(), "top\n");
        fs::write(p.join("new"), "new\n").expect("write through the mount");
    });
    assert_eq!(fs::read_to_string(root.join("u/new")).unwrap(), "new\n");
    quiesced(|| send_signal(pid, Signal::TERM)).expect("SIGTERM");
    assert!(
        wait_pid_gone(pid, WAIT),
        "daemon {pid} still running after SIGTERM"
    );
    assert!(
        !is_fuse_mounted(&root.join("m")),
        "still mounted after SIGTERM"
    );
}

/// With `-f` there is no daemonizing: the process stays where it was started.
#[test]
fn foreground_keeps_the_callers_directory() {
    let (_t, root) = two_lowers();
    let m = Ovlfs::new(["l1", "l2"])
        .current_dir(&root)
        .mount(&root.join("m"));
    assert_eq!(cwd_of(m.pid().expect("pid")), root);
    assert_serves(&m);
}

/// `fusermount3 -u` of a foreground mount laid over another mount: the process exits 0
/// without warnings, and the mount it covered stays (the FUSE library used to unmount the
/// mountpoint a second time once the session had ended, which, as root, took away the
/// covered mount, and otherwise warned "Failed to umount filesystem: Invalid argument").
#[test]
fn fusermount_u_keeps_the_covered_mount_and_stderr_clean() {
    if !require_root("fusermount_u_keeps_the_covered_mount_and_stderr_clean") {
        return;
    }
    let (_t, root) = two_lowers();
    let mnt = root.join("m");
    let _tmpfs = MountGuard::mount(&["-t", "tmpfs", "tmpfs"], &mnt).expect("tmpfs under m");
    for daemon in [false, true] {
        let mut m = if daemon {
            lowers(&root).mount_daemon(&mnt)
        } else {
            lowers(&root).mount(&mnt)
        };
        assert_serves(&m);
        assert!(m.fusermount_u(), "fusermount3 -u failed");
        let st = m.wait_exit(WAIT);
        assert!(st.is_some(), "ovlfs still running after fusermount3 -u");
        if let Some(Some(st)) = st {
            assert!(st.success(), "ovlfs -f exited with {st}: {}", m.stderr());
        }
        let stderr = m.stderr();
        assert!(
            !stderr.contains("umount") && !stderr.contains("Unmount"),
            "daemon {daemon}: unmount warning on stderr:\n{stderr}"
        );
        let under = find_mount(&mnt).map(|i| i.fstype);
        assert_eq!(
            under.as_deref(),
            Some("tmpfs"),
            "daemon {daemon}: the tmpfs ovlfs covered is gone"
        );
    }
}

/// A mountpoint (or a layer) on a mount whose daemon was killed fails with one line that
/// says how to clear it.
#[test]
fn dead_mountpoint_error_says_how_to_clear_it() {
    if !using_default_binary() {
        return;
    }
    let (_t, root) = two_lowers();
    let mut dead = lowers(&root).mount(&root.join("m"));
    dead.signal(Signal::KILL).expect("SIGKILL");
    assert!(dead.wait_exit(WAIT).is_some(), "killed daemon still there");
    let mnt = dead.path().to_path_buf();
    // (A plain stat of the root may still succeed: the kernel caches its attributes.)
    assert_eq!(
        fs::read_dir(&mnt).err().and_then(|e| e.raw_os_error()),
        Some(libc::ENOTCONN),
        "the mount should be dead"
    );
    let hint = format!("run fusermount3 -u {}", mnt.display());
    // Mounting over it.
    let out = run_cmd(
        lowers(&root).command(&mnt, false).stdout(Stdio::null()),
        WAIT,
    )
    .expect("run ovlfs");
    assert_one_line_failure("mount over a dead mount", &out, &hint);
    assert!(
        out.stderr.contains("Transport endpoint is not connected"),
        "{}",
        out.stderr
    );
    // A lower inside it.
    let elsewhere = root.join("elsewhere");
    mkdirs(&elsewhere);
    let out = run_cmd(
        Ovlfs::new([mnt.join("d")])
            .command(&elsewhere, false)
            .stdout(Stdio::null()),
        WAIT,
    )
    .expect("run ovlfs");
    assert_one_line_failure("a lower inside a dead mount", &out, &hint);
    reap_strays(&elsewhere);
}
