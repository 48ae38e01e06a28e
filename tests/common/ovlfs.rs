//! The ovlfs mount guard: argument builder, foreground and daemon mounts, signals, cleanup.

use super::*;

// ---------------------------------------------------------------------------------------------
// ovlfs mount guard
// ---------------------------------------------------------------------------------------------

pub fn escape_layer(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

/// Argument builder for an ovlfs mount.
#[derive(Clone, Debug, Default)]
pub struct Ovlfs {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<(PathBuf, PathBuf)>,
    pub options: Vec<String>,
    pub extra_args: Vec<OsString>,
    /// A command the daemon runs under (e.g. `prlimit --nofile=N:N`); it must exec its
    /// argument so the daemon keeps the child's PID.
    pub wrapper: Vec<OsString>,
    /// The program to run instead of [`ovlfs_bin`] (e.g. fuse-overlayfs, to compare).
    pub bin: Option<PathBuf>,
    /// The directory ovlfs starts in (relative layer paths are relative to it).
    pub cwd: Option<PathBuf>,
}

/// Result of starting ovlfs without `-f`.
pub struct DaemonLaunch {
    /// Exit status of the launching process (`None` if it did not exit within the timeout).
    pub status: Option<ExitStatus>,
    /// Whether the mount was present in /proc/self/mountinfo right after the launcher exited.
    pub mounted_at_exit: bool,
    pub stderr: String,
    /// Cleanup guard (owns the daemon if one was found).
    pub mount: OvlfsMount,
}

impl Ovlfs {
    pub fn new<I, P>(lowers: I) -> Ovlfs
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        Ovlfs {
            lowers: lowers
                .into_iter()
                .map(|p| p.as_ref().to_path_buf())
                .collect(),
            ..Ovlfs::default()
        }
    }

    pub fn upper(mut self, upper: impl AsRef<Path>, work: impl AsRef<Path>) -> Ovlfs {
        self.upper = Some((upper.as_ref().to_path_buf(), work.as_ref().to_path_buf()));
        self
    }

    /// Run `bin` instead of the binary under test (same command line).
    pub fn binary(mut self, bin: impl AsRef<Path>) -> Ovlfs {
        self.bin = Some(bin.as_ref().to_path_buf());
        self
    }

    /// The program this builder runs.
    pub fn program(&self) -> PathBuf {
        self.bin.clone().unwrap_or_else(ovlfs_bin)
    }

    /// Add one `-o` option (e.g. `"userxattr"`, `"whiteout=xattr"`).
    pub fn opt(mut self, o: &str) -> Ovlfs {
        self.options.push(o.to_string());
        self
    }

    /// Add a raw argument placed before the mountpoint (e.g. `"-d"`).
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Ovlfs {
        self.extra_args.push(a.as_ref().to_os_string());
        self
    }

    /// Run the daemon under `wrapper` (a program and its arguments, before ovlfs's own).
    pub fn wrapped<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, wrapper: I) -> Ovlfs {
        self.wrapper = wrapper
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        self
    }

    /// Start ovlfs in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Ovlfs {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The comma-separated `-o` string.
    pub fn opts_string(&self) -> String {
        let mut parts = Vec::new();
        if !self.lowers.is_empty() {
            let l: Vec<String> = self.lowers.iter().map(|p| escape_layer(p)).collect();
            parts.push(format!("lowerdir={}", l.join(":")));
        }
        if let Some((u, w)) = &self.upper {
            parts.push(format!("upperdir={}", u.display()));
            parts.push(format!("workdir={}", w.display()));
        }
        parts.extend(self.options.iter().cloned());
        parts.join(",")
    }

    /// `ovlfs [-f] [extra] -o OPTS MNT`.
    ///
    /// A foreground daemon gets SIGTERM (which unmounts) when the test process dies without
    /// running its guards (killed, or a closed output pipe), so no mount outlives the test.
    pub fn command(&self, mnt: &Path, foreground: bool) -> Command {
        let mut argv: Vec<OsString> = Vec::new();
        if foreground && have("setpriv") {
            argv.extend(["setpriv", "--pdeathsig", "TERM"].map(OsString::from));
        }
        argv.extend(self.wrapper.iter().cloned());
        argv.push(self.program().into_os_string());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        if foreground {
            c.arg("-f");
        }
        c.args(&self.extra_args);
        c.arg("-o").arg(self.opts_string()).arg(mnt);
        c
    }

    /// Start in the foreground (`-f`) and wait until mounted; panics with the daemon's stderr
    /// on failure.
    pub fn mount(&self, mnt: &Path) -> OvlfsMount {
        match self.try_mount(mnt) {
            Ok(m) => m,
            Err(e) => panic!("ovlfs mount failed: {e}"),
        }
    }

    pub fn try_mount(&self, mnt: &Path) -> Result<OvlfsMount, String> {
        let mnt = canon(mnt);
        let mut cmd = self.command(&mnt, true);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_gated(&mut cmd)
            .map_err(|e| format!("spawn {}: {e}", self.program().display()))?;
        let stderr = Capture::spawn(child.stderr.take().expect("piped stderr"));
        let mut guard = OvlfsMount {
            mnt: mnt.clone(),
            child: Some(child),
            daemon_pid: None,
            stderr,
            bin: self.program(),
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            // The mount shows before the daemon serves (it clears the workdir in between):
            // wait for an answer through it too.
            if is_fuse_mounted(&mnt) {
                if !answers(&mnt, deadline) {
                    let err = guard.stderr.text(Duration::ZERO);
                    drop(guard);
                    return Err(format!(
                        "{} mounted but did not answer within {MOUNT_TIMEOUT:?}; args {:?}; \
                         stderr:\n{err}",
                        mnt.display(),
                        self.opts_string()
                    ));
                }
                if is_fuse_mounted(&mnt) {
                    return Ok(guard);
                }
            }
            if let Some(ch) = guard.child.as_mut()
                && let Ok(Some(st)) = ch.try_wait()
            {
                let err = guard.stderr.text(Duration::from_millis(500));
                return Err(format!(
                    "ovlfs exited ({st}) before {} was mounted; args {:?}; stderr:\n{err}",
                    mnt.display(),
                    self.opts_string()
                ));
            }
            if Instant::now() >= deadline {
                let err = guard.stderr.text(Duration::ZERO);
                drop(guard);
                return Err(format!(
                    "{} not mounted within {MOUNT_TIMEOUT:?}; args {:?}; stderr:\n{err}",
                    mnt.display(),
                    self.opts_string()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Start without `-f`, exactly as containers/storage does (`[prog, "-o", opts, merged]`
    /// plus any extra args), wait (bounded) for the launcher to exit, record whether the mount
    /// was live at that moment, and find the daemon's PID.
    pub fn launch_daemon(&self, mnt: &Path) -> DaemonLaunch {
        let mnt = canon(mnt);
        let bin = self.program();
        let mut cmd = self.command(&mnt, false);
        // The daemon inherits the pipe; the capture thread never blocks us.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = spawn_gated(&mut cmd);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => panic!("spawn {}: {e}", bin.display()),
        };
        let stderr = Capture::spawn(child.stderr.take().expect("piped stderr"));
        let status = wait_child(&mut child, MOUNT_TIMEOUT);
        let mounted_at_exit = is_fuse_mounted(&mnt);
        if status.is_none() {
            let _ = child.kill();
            let _ = wait_child(&mut child, EXIT_TIMEOUT);
        }
        let launcher = child.id();
        let daemon_pid = find_daemon_pids(&bin, &mnt)
            .into_iter()
            .find(|p| *p != launcher);
        let err_text = stderr.text(Duration::from_millis(200));
        DaemonLaunch {
            status,
            mounted_at_exit,
            stderr: err_text,
            mount: OvlfsMount {
                mnt,
                child: None,
                daemon_pid,
                stderr,
                bin,
            },
        }
    }

    /// `launch_daemon`, asserting success (exit 0 with the mount live).
    pub fn mount_daemon(&self, mnt: &Path) -> OvlfsMount {
        let l = self.launch_daemon(mnt);
        if !(l.status.is_some_and(|s| s.success()) && l.mounted_at_exit) {
            let msg = format!(
                "ovlfs daemon launch failed: status {:?}, mounted at exit: {}, stderr:\n{}",
                l.status, l.mounted_at_exit, l.stderr
            );
            drop(l.mount);
            panic!("{msg}");
        }
        l.mount
    }
}

/// Whether a stat of the mount's root returns before `deadline` (whatever it returns). On
/// timeout the connection is aborted so the stat, left on its thread, ends too.
fn answers(mnt: &Path, deadline: Instant) -> bool {
    let (tx, rx) = mpsc::channel();
    let p = mnt.to_path_buf();
    let _ = thread::Builder::new()
        .name("mount-probe".into())
        .spawn(move || {
            let _ = tx.send(fs::symlink_metadata(&p).is_ok());
        });
    let answered = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok();
    if !answered {
        let _ = abort_fuse_mount(mnt);
    }
    answered
}

/// A running ovlfs mount. Dropping it unmounts (fusermount3 -u, else umount -l), waits for the
/// daemon (bounded) and SIGKILLs it if needed. Never panics in Drop.
pub struct OvlfsMount {
    mnt: PathBuf,
    /// The `-f` child, when started in the foreground.
    child: Option<Child>,
    /// The daemon's PID, when started without `-f` (not our child).
    daemon_pid: Option<u32>,
    stderr: Capture,
    bin: PathBuf,
}

impl OvlfsMount {
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// PID of the process serving the mount (the `-f` child, or the daemon found in /proc).
    pub fn pid(&self) -> Option<u32> {
        match &self.child {
            Some(c) => Some(c.id()),
            None => self.daemon_pid,
        }
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text(Duration::ZERO)
    }

    pub fn is_mounted(&self) -> bool {
        is_fuse_mounted(&self.mnt)
    }

    /// Panics (`what` says when) unless the serving process is alive and the mount root can
    /// be stat'ed; the daemon's stderr goes in the message.
    pub fn assert_serving(&self, what: &str) {
        let pid = self.pid().expect("daemon pid");
        assert!(
            process_alive(pid),
            "{what}: the daemon died; stderr:\n{}",
            self.stderr()
        );
        fs::metadata(&self.mnt).unwrap_or_else(|e| panic!("{what}: stat of the mount root: {e}"));
    }

    /// Panics when the daemon's stderr shows a panic (each request's handler catches its own,
    /// answers EIO and logs it).
    pub fn assert_no_panic_logged(&self, what: &str) {
        let err = self.stderr();
        assert!(
            !err.contains("panicked"),
            "{what}: the daemon logged a panic:\n{err}"
        );
    }

    /// A path inside the mount.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Send `sig` to the serving process. For SIGTERM/SIGINT/SIGHUP this runs `quiesced` and
    /// waits (up to 3 s) for the unmount or the exit, so the daemon's own unmount cannot be
    /// made to fail by a child of this process that is between fork and exec.
    pub fn signal(&mut self, sig: rustix::process::Signal) -> io::Result<()> {
        use rustix::process::Signal;
        let Some(pid) = self.pid() else {
            return Err(io::Error::other("no daemon pid known"));
        };
        if ![Signal::TERM, Signal::INT, Signal::HUP].contains(&sig) {
            return send_signal(pid, sig);
        }
        quiesced(|| {
            send_signal(pid, sig)?;
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.is_mounted() && Instant::now() < deadline {
                if let Some(c) = self.child.as_mut()
                    && matches!(c.try_wait(), Ok(Some(_)))
                {
                    break;
                }
                if self.child.is_none() && !process_alive(pid) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    }

    /// Run `fusermount3 -u MNT` (bounded); true on success. A failure while the mount is still
    /// present is retried for up to 3 s: another test thread's fork→exec window can hold a
    /// transient reference to a file in this mount and make the unmount fail with EBUSY.
    pub fn fusermount_u(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if quiesced(|| run_quiet("fusermount3", &["-u".as_ref(), self.mnt.as_os_str()])) {
                return true;
            }
            if !self.is_mounted() || Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (bounded) for the serving process to exit. For a `-f` child returns its status;
    /// for a daemon returns `Some(None)` when it is gone. `None`: still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<ExitStatus>> {
        if let Some(c) = self.child.as_mut() {
            return wait_child(c, timeout).map(Some);
        }
        match self.daemon_pid {
            Some(p) => wait_pid_gone(p, timeout).then_some(None),
            None => Some(None),
        }
    }

    /// Wait (bounded) until the mount is gone from mountinfo.
    pub fn wait_unmounted(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_mounted() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Abort the FUSE connection of this mount (see `abort_fuse_mount`).
    pub fn abort_connection(&self) -> io::Result<()> {
        abort_fuse_mount(&self.mnt)
    }

    fn cleanup(&mut self) {
        if self.is_mounted() && !self.fusermount_u() {
            visible(&format!(
                "ovlfs guard: fusermount3 -u {} failed; trying umount -l",
                self.mnt.display()
            ));
            quiesced(|| run_quiet("umount", &["-l".as_ref(), self.mnt.as_os_str()]));
        }
        if self.wait_exit(EXIT_TIMEOUT).is_none() {
            if let Some(pid) = self.pid() {
                visible(&format!(
                    "ovlfs guard: daemon {pid} for {} did not exit; sending SIGKILL",
                    self.mnt.display()
                ));
                let _ = send_signal(pid, rustix::process::Signal::KILL);
            }
            let _ = self.wait_exit(EXIT_TIMEOUT);
        }
        if self.is_mounted() {
            run_quiet("umount", &["-l".as_ref(), self.mnt.as_os_str()]);
        }
        if self.is_mounted() {
            visible(&format!(
                "ovlfs guard: WARNING: {} is still mounted",
                self.mnt.display()
            ));
        }
    }
}

impl Drop for OvlfsMount {
    fn drop(&mut self) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cleanup()));
        if r.is_err() {
            visible(&format!(
                "ovlfs guard: cleanup of {} panicked",
                self.mnt.display()
            ));
        }
    }
}
