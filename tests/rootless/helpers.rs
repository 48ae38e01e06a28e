//! Helpers of the rootless tests: bounded children, the cleanup guard, fixtures.

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers: bounded children, cleanup guard, fixtures
// ---------------------------------------------------------------------------------------------

/// The prerequisites of the unprivileged scenarios (root to switch uid, setpriv, unshare,
/// fusermount3). Prints `SKIPPED` (or panics under CI=true) when one is missing.
pub(crate) fn require_unpriv_tools(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    for tool in ["setpriv", "unshare", "fusermount3"] {
        if !have(tool) {
            let msg = format!("SKIPPED: {test}: {tool} not installed");
            assert!(!in_ci(), "{msg} (CI=true: failing instead of skipping)");
            visible(&msg);
            return false;
        }
    }
    dev_fuse_usable();
    true
}

/// `setpriv --reuid=U --regid=G --clear-groups`, ready for the program and its arguments.
pub(crate) fn as_user(uid: u32, gid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups");
    c
}

/// Spawn `cmd` in its own process group, let `hook` talk to it, wait at most `timeout`; on
/// timeout the whole group (only processes this test started) is SIGKILLed.
pub(crate) fn run_bounded_with(
    cmd: &mut Command,
    timeout: Duration,
    stdin_piped: bool,
    hook: impl FnOnce(&mut Child),
) -> CmdOutput {
    cmd.process_group(0)
        .env("LC_ALL", "C")
        .stdin(if stdin_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = Capture::spawn(child.stdout.take().expect("piped stdout"));
    let err = Capture::spawn(child.stderr.take().expect("piped stderr"));
    hook(&mut child);
    drop(child.stdin.take());
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        if let Some(pgid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = wait_child(&mut child, EXIT_TIMEOUT);
    }
    CmdOutput {
        status,
        stdout: out.text(Duration::from_millis(300)),
        stderr: err.text(Duration::from_millis(300)),
    }
}

pub(crate) fn run_bounded(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    run_bounded_with(cmd, timeout, false, |_| {})
}

pub(crate) fn describe(what: &str, o: &CmdOutput) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        match o.status {
            Some(s) => format!("exited with {s}"),
            None => format!("TIMED OUT after {STEP:?} (process group killed)"),
        },
        o.stdout.trim_end(),
        o.stderr.trim_end()
    )
}

/// On drop: unmount the mountpoint if it is mounted in our namespace, then end (by PID) any
/// ovlfs daemon still serving it, wherever its mount namespace is.
pub(crate) struct Cleanup {
    pub(crate) mnt: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |prog: &str, args: &[&std::ffi::OsStr]| {
            let mut c = Command::new(prog);
            c.args(args);
            let _ = run_cmd(&mut c, MOUNT_TIMEOUT);
        };
        if is_fuse_mounted(&self.mnt) {
            quiet("fusermount3", &["-u".as_ref(), self.mnt.as_os_str()]);
        }
        if is_fuse_mounted(&self.mnt) {
            quiet("umount", &["-l".as_ref(), self.mnt.as_os_str()]);
        }
        let pids = find_daemon_pids(&ovlfs_bin(), &self.mnt);
        if !pids.is_empty() {
            for &p in &pids {
                kill_pid(p, rustix::process::Signal::TERM);
            }
            if !daemons_gone(&self.mnt, Duration::from_secs(2)) {
                for p in find_daemon_pids(&ovlfs_bin(), &self.mnt) {
                    visible(&format!(
                        "cleanup: daemon {p} on {} still running; SIGKILL",
                        self.mnt.display()
                    ));
                    kill_pid(p, rustix::process::Signal::KILL);
                }
                let _ = daemons_gone(&self.mnt, EXIT_TIMEOUT);
            }
        }
        if is_fuse_mounted(&self.mnt) {
            visible(&format!(
                "cleanup: WARNING: {} is still mounted",
                self.mnt.display()
            ));
        }
    }
}

/// lchown every entry under `root` (root included).
pub(crate) fn chown_tree(root: &Path, uid: u32, gid: u32) {
    chown(root, uid, gid);
    let md = fs::symlink_metadata(root).expect("lstat");
    if md.is_dir() {
        for e in fs::read_dir(root).expect("read_dir") {
            chown_tree(&e.expect("dir entry").path(), uid, gid);
        }
    }
}

/// Every path under `root` (root included), depth first, not following symlinks.
pub(crate) fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        let mut kids: Vec<PathBuf> = fs::read_dir(root)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        kids.sort();
        for k in kids {
            out.extend(walk(&k));
        }
    }
    out
}

/// A test tree: `root` (0755) with `l1` (top lower), `l2`, `upper`, `work`, `mnt`.
pub(crate) struct Fixture {
    pub(crate) _t: tempfile::TempDir,
    pub(crate) root: PathBuf,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let (t, root) = scratch(&["l1", "l2", "upper", "work", "mnt"]);
        // Every ancestor must be searchable by the unprivileged user.
        chmod(&root, 0o755);
        for a in root.ancestors().skip(1) {
            let mode = fs::metadata(a).map(|m| m.permissions().mode()).unwrap_or(0);
            assert!(
                mode & 0o001 != 0,
                "{} (an ancestor of the test dir) is not searchable by others (mode {mode:o}); \
                 set TMPDIR to a world-searchable directory",
                a.display()
            );
        }
        Fixture { _t: t, root }
    }

    pub(crate) fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub(crate) fn mnt(&self) -> PathBuf {
        self.p("mnt")
    }

    pub(crate) fn opts(&self, extra: &str) -> String {
        let mut o = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            self.p("l1").display(),
            self.p("l2").display(),
            self.p("upper").display(),
            self.p("work").display()
        );
        if !extra.is_empty() {
            o.push(',');
            o.push_str(extra);
        }
        o
    }
}
