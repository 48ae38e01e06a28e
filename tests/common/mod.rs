//! Shared harness for the integration tests: mount guards for ovlfs and the kernel's overlayfs,
//! a watchdog that aborts a hung FUSE connection, tree snapshots with a readable diff, and
//! fixture builders for every on-disk whiteout / opaque format of DESIGN.md §3.
//!
//! Every test file uses it with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

pub mod rng;
pub mod scratch;

#[allow(unused_imports)] // each test binary uses a different subset
pub use scratch::{MountGuard, daemons_gone, kill_pid, sorted_names, work_leftovers};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a mount may take to appear, and how long any child may take to exit.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for a daemon to exit after it was unmounted / signalled before SIGKILL.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/// The binary under test. `OVLFS_TEST_BIN` overrides it (e.g. to run the suite against
/// fuse-overlayfs as a peer).
pub fn ovlfs_bin() -> PathBuf {
    match std::env::var_os("OVLFS_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_ovlfs")),
    }
}

/// True when running under CI (`CI=true`): missing prerequisites fail instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Write a line to the real stderr, bypassing libtest's output capture, so skips are visible.
pub fn visible(msg: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{msg}");
}

fn skip_or_fail(test: &str, why: &str) {
    let msg = format!("SKIPPED: {test}: {why}");
    if in_ci() {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    visible(&msg);
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Returns false (after printing a visible SKIPPED line) when not running as root; panics under CI.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip_or_fail(test, "needs root");
    false
}

fn overlay_in_proc_filesystems() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

/// Whether the kernel's overlayfs can be used (tries `modprobe overlay` first).
pub fn kernel_overlay_available() -> bool {
    if overlay_in_proc_filesystems() {
        return true;
    }
    let _ = run_cmd(Command::new("modprobe").arg("overlay"), MOUNT_TIMEOUT);
    overlay_in_proc_filesystems()
}

/// Returns false (after printing `SKIPPED: kernel overlayfs not available`) when the kernel's
/// overlayfs (or root, which mounting it needs) is missing; panics instead under CI=true.
pub fn require_kernel_overlay(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if kernel_overlay_available() {
        return true;
    }
    skip_or_fail(test, "kernel overlayfs not available");
    false
}

// ---------------------------------------------------------------------------------------------
// Child processes with timeouts
// ---------------------------------------------------------------------------------------------

/// Collects everything a pipe produces on a background thread. The thread is never joined, so a
/// daemon that keeps the pipe open cannot block us.
#[derive(Clone, Default)]
pub struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    eof: Arc<Mutex<bool>>,
}

impl Capture {
    pub fn spawn<R: Read + Send + 'static>(mut r: R) -> Capture {
        let c = Capture::default();
        let c2 = c.clone();
        let _ = thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Ok(mut b) = c2.buf.lock() {
                                b.extend_from_slice(&chunk[..n]);
                            }
                        }
                    }
                }
                if let Ok(mut e) = c2.eof.lock() {
                    *e = true;
                }
            });
        c
    }

    /// What was captured so far, after waiting up to `grace` for end-of-file.
    pub fn text(&self, grace: Duration) -> String {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.eof.lock().map(|e| *e).unwrap_or(true) {
            thread::sleep(Duration::from_millis(10));
        }
        let b = self.buf.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// Keeps unmounts from racing with process creation in this (multi-threaded) test process.
///
/// Between fork and exec a child holds a copy of every descriptor of this process, O_CLOEXEC
/// or not. If another test thread has (or just had) a file open inside some mount at that
/// moment, that mount is transiently busy and an unmount of it (fusermount3 -u, or the daemon's
/// own unmount on SIGTERM) fails with EBUSY. So every spawn holds this lock for reading, and
/// operations that unmount (`quiesced`) hold it for writing: no child is between fork and exec
/// while they run.
static SPAWN_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    static IN_QUIESCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `cmd.spawn()` under the spawn gate (see `SPAWN_GATE`).
pub fn spawn_gated(cmd: &mut Command) -> io::Result<Child> {
    if IN_QUIESCED.with(|q| q.get()) {
        // This thread holds the gate for writing: spawning is safe (and must not block).
        return cmd.spawn();
    }
    let _g = SPAWN_GATE.read().unwrap_or_else(|p| p.into_inner());
    cmd.spawn()
}

/// Run `f` while no other thread of this process is creating a process (see `SPAWN_GATE`).
/// Commands run through `run_cmd` inside `f` are fine. Keep `f` short: it blocks every spawn.
pub fn quiesced<R>(f: impl FnOnce() -> R) -> R {
    if IN_QUIESCED.with(|q| q.get()) {
        return f();
    }
    let _g = SPAWN_GATE.write().unwrap_or_else(|p| p.into_inner());
    // posix_spawn returns in the parent once the child's exec has replaced its memory, which is
    // just before the child closes its O_CLOEXEC descriptors: give such children a moment.
    thread::sleep(Duration::from_millis(20));
    IN_QUIESCED.with(|q| q.set(true));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_QUIESCED.with(|q| q.set(false));
        }
    }
    let _reset = Reset;
    f()
}

/// `run_cmd` inside `quiesced` (for commands that unmount).
pub fn run_cmd_quiesced(cmd: &mut Command, timeout: Duration) -> io::Result<CmdOutput> {
    quiesced(|| run_cmd(cmd, timeout))
}

/// Wait for a child for at most `timeout`; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug)]
pub struct CmdOutput {
    /// `None` when the command timed out (it was then killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Run a command with stdin closed and both outputs captured; kill it after `timeout`.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> io::Result<CmdOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_gated(cmd)?;
    let out = Capture::spawn(child.stdout.take().expect("piped stdout"));
    let err = Capture::spawn(child.stderr.take().expect("piped stderr"));
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = wait_child(&mut child, EXIT_TIMEOUT);
    }
    Ok(CmdOutput {
        status,
        stdout: out.text(Duration::from_millis(500)),
        stderr: err.text(Duration::from_millis(500)),
    })
}

fn run_quiet(program: &str, args: &[&OsStr]) -> bool {
    let mut c = Command::new(program);
    c.args(args);
    matches!(run_cmd(&mut c, MOUNT_TIMEOUT), Ok(o) if o.success())
}

fn send_signal(pid: u32, sig: rustix::process::Signal) -> io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    rustix::process::kill_process(pid, sig).map_err(io::Error::from)
}

/// Whether a process (not necessarily our child) still exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // The state follows the last ')' (the command name may contain spaces and parens).
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// PIDs of processes running `bin` with `mountpoint` as one of their arguments (other than us).
pub fn find_daemon_pids(bin: &Path, mountpoint: &Path) -> Vec<u32> {
    let me = std::process::id();
    let bin_canon = fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.iter().any(|a| *a == mountpoint.as_os_str().as_bytes()) {
            continue;
        }
        let exe_matches = match fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(exe) => {
                let exe = exe.as_os_str().as_bytes();
                let exe = exe.strip_suffix(b" (deleted)").unwrap_or(exe);
                exe == bin_canon.as_os_str().as_bytes() || exe == bin.as_os_str().as_bytes()
            }
            Err(_) => args
                .first()
                .is_some_and(|a| *a == bin.as_os_str().as_bytes()),
        };
        if exe_matches && process_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

// ---------------------------------------------------------------------------------------------
// /proc/self/mountinfo
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct MountInfo {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

pub fn mountinfo() -> Vec<MountInfo> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 10 {
            continue;
        }
        let Some(sep) = f.iter().skip(6).position(|x| *x == "-").map(|p| p + 6) else {
            continue;
        };
        if sep + 2 >= f.len() {
            continue;
        }
        let (major, minor) = match f[2].split_once(':') {
            Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
            None => (0, 0),
        };
        v.push(MountInfo {
            major,
            minor,
            mount_point: unescape_mountinfo(f[4]),
            fstype: f[sep + 1].to_string(),
            source: f[sep + 2].to_string(),
            options: f[5].to_string(),
        });
    }
    v
}

/// The topmost mount at exactly `path`, if any.
pub fn find_mount(path: &Path) -> Option<MountInfo> {
    mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// The topmost FUSE mount (`fuse` or `fuse.*`) at exactly `path`, if any.
pub fn find_fuse_mount(path: &Path) -> Option<MountInfo> {
    mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path && is_fuse_fstype(&m.fstype))
}

pub fn is_fuse_fstype(t: &str) -> bool {
    t == "fuse" || t.starts_with("fuse.")
}

pub fn is_fuse_mounted(path: &Path) -> bool {
    find_fuse_mount(path).is_some()
}

/// Canonical absolute form of a directory that must exist.
pub fn canon(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// ovlfs mount guard
// ---------------------------------------------------------------------------------------------

fn escape_layer(p: &Path) -> String {
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
    pub fn command(&self, mnt: &Path, foreground: bool) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(ovlfs_bin());
                c
            }
            None => Command::new(ovlfs_bin()),
        };
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
        let mut child =
            spawn_gated(&mut cmd).map_err(|e| format!("spawn {}: {e}", ovlfs_bin().display()))?;
        let stderr = Capture::spawn(child.stderr.take().expect("piped stderr"));
        let mut guard = OvlfsMount {
            mnt: mnt.clone(),
            child: Some(child),
            daemon_pid: None,
            stderr,
            bin: ovlfs_bin(),
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if is_fuse_mounted(&mnt) {
                return Ok(guard);
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
        let bin = ovlfs_bin();
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

// ---------------------------------------------------------------------------------------------
// Kernel overlayfs guard
// ---------------------------------------------------------------------------------------------

pub struct KernelOverlay {
    mnt: PathBuf,
}

fn dmesg_tail() -> String {
    let mut c = Command::new("dmesg");
    match run_cmd(&mut c, Duration::from_secs(5)) {
        Ok(o) => {
            let lines: Vec<&str> = o.stdout.lines().filter(|l| l.contains("overlay")).collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        }
        Err(_) => String::new(),
    }
}

impl KernelOverlay {
    /// `mount -t overlay overlay -o lowerdir=..[,upperdir=..,workdir=..][,extra] MNT`.
    pub fn mount(
        lowers: &[&Path],
        upper_work: Option<(&Path, &Path)>,
        extra: &[&str],
        mnt: &Path,
    ) -> KernelOverlay {
        let mnt = canon(mnt);
        let l: Vec<String> = lowers.iter().map(|p| escape_layer(p)).collect();
        let mut opts = vec![format!("lowerdir={}", l.join(":"))];
        if let Some((u, w)) = upper_work {
            opts.push(format!("upperdir={}", u.display()));
            opts.push(format!("workdir={}", w.display()));
        }
        opts.extend(extra.iter().map(|s| s.to_string()));
        let opts = opts.join(",");
        let mut c = Command::new("mount");
        c.args(["-t", "overlay", "overlay", "-o", &opts]).arg(&mnt);
        let out = run_cmd(&mut c, MOUNT_TIMEOUT).expect("run mount");
        let guard = KernelOverlay { mnt: mnt.clone() };
        let mounted = find_mount(&mnt).is_some_and(|m| m.fstype == "overlay");
        if !out.success() || !mounted {
            panic!(
                "kernel overlay mount failed ({:?}) with -o {opts}: {}\ndmesg: {}",
                out.status,
                out.stderr.trim(),
                dmesg_tail()
            );
        }
        guard
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    fn is_mounted(&self) -> bool {
        find_mount(&self.mnt).is_some_and(|m| m.fstype == "overlay")
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        if self.is_mounted() && !quiesced(|| run_quiet("umount", &[self.mnt.as_os_str()])) {
            run_quiet("umount", &["-l".as_ref(), self.mnt.as_os_str()]);
        }
        if self.is_mounted() {
            visible(&format!(
                "kernel overlay guard: WARNING: {} is still mounted",
                self.mnt.display()
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------------------------

const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";
static FUSECTL_LOCK: Mutex<()> = Mutex::new(());

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

// ---------------------------------------------------------------------------------------------
// xattrs, readdir, errno helpers
// ---------------------------------------------------------------------------------------------

pub fn errno<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}

pub fn errno_name(e: Option<i32>) -> String {
    match e {
        None => "Ok".into(),
        Some(n) => io::Error::from_raw_os_error(n).to_string(),
    }
}

/// lgetxattr (does not follow symlinks).
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    loop {
        let n = rustix::fs::lgetxattr_query(path, name)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// llistxattr (does not follow symlinks), names in listing order.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    loop {
        let n = rustix::fs::llistxattr_query(path)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// lsetxattr, returning the error.
pub fn try_set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).map_err(Into::into)
}

/// lsetxattr, panicking on failure (fixtures).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    try_set_xattr(path, name, value)
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
    Unknown,
}

impl Kind {
    pub fn of(ft: fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else {
            Kind::Unknown
        }
    }

    fn of_dtype(ft: rustix::fs::FileType) -> Kind {
        use rustix::fs::FileType as T;
        match ft {
            T::RegularFile => Kind::File,
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Fifo => Kind::Fifo,
            T::Socket => Kind::Socket,
            T::CharacterDevice => Kind::CharDev,
            T::BlockDevice => Kind::BlockDev,
            _ => Kind::Unknown,
        }
    }
}

/// One raw readdir entry (including `.` and `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEnt {
    pub name: OsString,
    pub ino: u64,
    /// `Kind::Unknown` for DT_UNKNOWN.
    pub d_type: Kind,
}

/// The raw getdents listing of a directory, `.` and `..` included, in the order returned.
pub fn read_dir_raw(dir: &Path) -> io::Result<Vec<DirEnt>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = rustix::fs::Dir::new(fd)?;
    let mut v = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        v.push(DirEnt {
            name: OsString::from_vec(e.file_name().to_bytes().to_vec()),
            ino: e.ino(),
            d_type: Kind::of_dtype(e.file_type()),
        });
    }
    Ok(v)
}

/// Names in a directory (without `.`/`..`), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// For every directory under `root` (root included, relative path "" for it), its raw readdir
/// listing. Does not follow symlinks.
pub fn readdir_tree(root: &Path) -> BTreeMap<PathBuf, Vec<DirEnt>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let ents = read_dir_raw(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
        for e in &ents {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let child = rel.join(&e.name);
            let md = fs::symlink_metadata(root.join(&child))
                .unwrap_or_else(|err| panic!("lstat {}: {err}", root.join(&child).display()));
            if md.is_dir() {
                stack.push(child);
            }
        }
        out.insert(rel, ents);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tree snapshots
// ---------------------------------------------------------------------------------------------

pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySnapshot {
    pub kind: Kind,
    /// d_type from the parent's readdir (`None` for the root).
    pub d_type: Option<Kind>,
    /// Permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: Option<u64>,
    /// FNV-64 of the content, regular files only (or the read error).
    pub content: Option<Result<u64, String>>,
    pub symlink_target: Option<PathBuf>,
    /// Device files only.
    pub rdev: Option<u64>,
    /// Sorted `user.*` xattrs (name, value), or an error description as the sole entry.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Non-directories only.
    pub nlink: Option<u64>,
    /// st_mtime (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

#[derive(Debug, Clone, Default)]
pub struct TreeSnapshot {
    pub entries: BTreeMap<PathBuf, EntrySnapshot>,
    /// Sets (size ≥ 2) of non-directory paths sharing one (st_dev, st_ino).
    pub link_groups: BTreeSet<Vec<PathBuf>>,
}

fn user_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    match list_xattrs(path) {
        Ok(names) => {
            let mut v: Vec<(String, Vec<u8>)> = names
                .into_iter()
                .filter(|n| n.starts_with("user."))
                .map(|n| {
                    let val = get_xattr(path, &n)
                        .unwrap_or_else(|e| format!("<getxattr error: {e}>").into_bytes());
                    (n, val)
                })
                .collect();
            v.sort();
            v
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) => vec![("<listxattr error>".into(), e.to_string().into_bytes())],
    }
}

fn snapshot_entry(path: &Path, md: &fs::Metadata, d_type: Option<Kind>) -> EntrySnapshot {
    let kind = Kind::of(md.file_type());
    let is_file = kind == Kind::File;
    EntrySnapshot {
        kind,
        d_type,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: is_file.then(|| md.size()),
        content: is_file.then(|| fs::read(path).map(|b| fnv64(&b)).map_err(|e| e.to_string())),
        symlink_target: (kind == Kind::Symlink).then(|| {
            fs::read_link(path).unwrap_or_else(|e| PathBuf::from(format!("<readlink error: {e}>")))
        }),
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| md.rdev()),
        xattrs: user_xattrs(path),
        nlink: (kind != Kind::Dir).then(|| md.nlink()),
        mtime: (md.mtime(), md.mtime_nsec()),
    }
}

/// Walk `root` without following symlinks. Relative path "" is the root itself.
pub fn snapshot_tree(root: &Path) -> TreeSnapshot {
    let mut snap = TreeSnapshot::default();
    let mut inos: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let root_md =
        fs::symlink_metadata(root).unwrap_or_else(|e| panic!("lstat {}: {e}", root.display()));
    snap.entries
        .insert(PathBuf::new(), snapshot_entry(root, &root_md, None));
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let ents = read_dir_raw(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
        for e in ents {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let crel = rel.join(&e.name);
            let cabs = root.join(&crel);
            let md = match fs::symlink_metadata(&cabs) {
                Ok(md) => md,
                Err(err) => {
                    // Listed but not stat-able: record it so the diff shows it.
                    snap.entries.insert(
                        crel,
                        EntrySnapshot {
                            kind: Kind::Unknown,
                            d_type: Some(e.d_type),
                            mode: 0,
                            uid: 0,
                            gid: 0,
                            size: None,
                            content: Some(Err(format!("lstat failed: {err}"))),
                            symlink_target: None,
                            rdev: None,
                            xattrs: Vec::new(),
                            nlink: None,
                            mtime: (0, 0),
                        },
                    );
                    continue;
                }
            };
            if md.is_dir() {
                stack.push(crel.clone());
            } else {
                inos.entry((md.dev(), md.ino()))
                    .or_default()
                    .push(crel.clone());
            }
            snap.entries
                .insert(crel, snapshot_entry(&cabs, &md, Some(e.d_type)));
        }
    }
    for (_, mut v) in inos {
        if v.len() > 1 {
            v.sort();
            snap.link_groups.insert(v);
        }
    }
    snap
}

fn show_path(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        "/".into()
    } else {
        format!("/{}", p.display())
    }
}

/// Human-readable differences between two snapshots (empty when equal).
pub fn diff_trees(a_label: &str, a: &TreeSnapshot, b_label: &str, b: &TreeSnapshot) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&PathBuf> = a.entries.keys().chain(b.entries.keys()).collect();
    for k in keys {
        match (a.entries.get(k), b.entries.get(k)) {
            (Some(x), None) => out.push(format!(
                "only in {a_label}: {} ({:?})",
                show_path(k),
                x.kind
            )),
            (None, Some(y)) => out.push(format!(
                "only in {b_label}: {} ({:?})",
                show_path(k),
                y.kind
            )),
            (Some(x), Some(y)) if x != y => {
                let mut s = format!("differs: {}", show_path(k));
                macro_rules! field {
                    ($f:ident, $fmt:literal) => {
                        if x.$f != y.$f {
                            let _ = write!(
                                s,
                                concat!("\n      {}: {} = ", $fmt, "  vs  {} = ", $fmt),
                                stringify!($f),
                                a_label,
                                x.$f,
                                b_label,
                                y.$f
                            );
                        }
                    };
                }
                field!(kind, "{:?}");
                field!(d_type, "{:?}");
                field!(mode, "{:#o}");
                field!(uid, "{}");
                field!(gid, "{}");
                field!(size, "{:?}");
                field!(content, "{:?}");
                field!(symlink_target, "{:?}");
                field!(rdev, "{:?}");
                if x.xattrs != y.xattrs {
                    let fmt = |v: &Vec<(String, Vec<u8>)>| {
                        v.iter()
                            .map(|(n, val)| format!("{n}={:?}", String::from_utf8_lossy(val)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let _ = write!(
                        s,
                        "\n      xattrs: {a_label} = [{}]  vs  {b_label} = [{}]",
                        fmt(&x.xattrs),
                        fmt(&y.xattrs)
                    );
                }
                field!(nlink, "{:?}");
                field!(mtime, "{:?}");
                out.push(s);
            }
            _ => {}
        }
    }
    for g in a.link_groups.difference(&b.link_groups) {
        out.push(format!("hard-link group only in {a_label}: {g:?}"));
    }
    for g in b.link_groups.difference(&a.link_groups) {
        out.push(format!("hard-link group only in {b_label}: {g:?}"));
    }
    out
}

/// Panics with a readable diff when the snapshots differ.
pub fn assert_trees_equal(a_label: &str, a: &TreeSnapshot, b_label: &str, b: &TreeSnapshot) {
    let d = diff_trees(a_label, a, b_label, b);
    if !d.is_empty() {
        panic!(
            "merged trees differ ({} difference(s), {} vs {} entries):\n  {}",
            d.len(),
            a.entries.len(),
            b.entries.len(),
            d.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture builders (parents are created as needed; failures panic with the path)
// ---------------------------------------------------------------------------------------------

fn parent_dirs(p: &Path) {
    if let Some(parent) = p.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create_dir_all {}: {e}", parent.display()));
    }
}

pub fn mkdirs(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("create_dir_all {}: {e}", p.display()));
}

/// A directory with an exact mode (created if missing).
pub fn dir_mode(p: &Path, mode: u32) {
    mkdirs(p);
    chmod(p, mode);
}

pub fn write_file(p: &Path, content: impl AsRef<[u8]>) {
    parent_dirs(p);
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// A regular file with owner and exact mode (mode applied after chown so setuid survives).
pub fn file_full(p: &Path, content: impl AsRef<[u8]>, mode: u32, uid: u32, gid: u32) {
    write_file(p, content);
    chown(p, uid, gid);
    chmod(p, mode);
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, p.display()));
}

/// lchown.
pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

pub fn symlink(target: impl AsRef<Path>, p: &Path) {
    parent_dirs(p);
    std::os::unix::fs::symlink(target.as_ref(), p)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
}

pub fn hardlink(existing: &Path, new: &Path) {
    parent_dirs(new);
    fs::hard_link(existing, new)
        .unwrap_or_else(|e| panic!("link {} -> {}: {e}", existing.display(), new.display()));
}

fn mknod(p: &Path, ft: rustix::fs::FileType, mode: u32, major: u32, minor: u32) {
    parent_dirs(p);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        ft,
        rustix::fs::Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
    // mknod honours the umask; make the mode exact.
    chmod(p, mode);
}

pub fn fifo(p: &Path) {
    mknod(p, rustix::fs::FileType::Fifo, 0o644, 0, 0);
}

pub fn chardev(p: &Path, major: u32, minor: u32) {
    mknod(
        p,
        rustix::fs::FileType::CharacterDevice,
        0o644,
        major,
        minor,
    );
}

/// A Unix socket file (bound, then the listener is closed; the inode stays).
pub fn socket(p: &Path) {
    parent_dirs(p);
    let l = std::os::unix::net::UnixListener::bind(p)
        .unwrap_or_else(|e| panic!("bind {}: {e}", p.display()));
    drop(l);
}

/// The xattr namespaces of overlay metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    Trusted,
    User,
}

impl Ns {
    /// `trusted.overlay.` / `user.overlay.`
    pub fn prefix(self) -> &'static str {
        match self {
            Ns::Trusted => "trusted.overlay.",
            Ns::User => "user.overlay.",
        }
    }

    pub fn xattr(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// `NS.overlay.opaque=y` in this namespace.
    pub fn opaque_y(self) -> Opaque {
        match self {
            Ns::Trusted => Opaque::TrustedY,
            Ns::User => Opaque::UserY,
        }
    }

    /// `NS.overlay.opaque=x` ("may hold xattr whiteouts") in this namespace.
    pub fn opaque_x(self) -> Opaque {
        match self {
            Ns::Trusted => Opaque::TrustedX,
            Ns::User => Opaque::UserX,
        }
    }
}

/// A 0/0 character device whiteout.
pub fn whiteout_chardev(p: &Path) {
    mknod(p, rustix::fs::FileType::CharacterDevice, 0o600, 0, 0);
}

/// A zero-size regular file carrying `NS.overlay.whiteout` (value `y`).
pub fn whiteout_xattr(p: &Path, ns: Ns) {
    whiteout_xattr_value(p, ns, b"y");
}

pub fn whiteout_xattr_value(p: &Path, ns: Ns, value: &[u8]) {
    write_file(p, b"");
    set_xattr(p, &ns.xattr("whiteout"), value);
}

/// An AUFS whiteout `.wh.NAME` in `dir`.
pub fn whiteout_aufs(dir: &Path, name: &str) {
    write_file(&dir.join(format!(".wh.{name}")), b"");
}

/// The ways to mark a directory opaque (or, for the `*X` variants, "may hold xattr whiteouts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opaque {
    /// `trusted.overlay.opaque=y`
    TrustedY,
    /// `user.overlay.opaque=y`
    UserY,
    /// `user.fuseoverlayfs.opaque=y`
    FuseOverlayfsY,
    /// a `.wh..wh..opq` entry inside
    WhOpq,
    /// `trusted.overlay.opaque=x` (not opaque)
    TrustedX,
    /// `user.overlay.opaque=x` (not opaque)
    UserX,
}

/// Mark (and create if needed) a directory.
pub fn opaque(dir: &Path, how: Opaque) {
    mkdirs(dir);
    match how {
        Opaque::TrustedY => set_xattr(dir, "trusted.overlay.opaque", b"y"),
        Opaque::UserY => set_xattr(dir, "user.overlay.opaque", b"y"),
        Opaque::FuseOverlayfsY => set_xattr(dir, "user.fuseoverlayfs.opaque", b"y"),
        Opaque::WhOpq => write_file(&dir.join(".wh..wh..opq"), b""),
        Opaque::TrustedX => set_xattr(dir, "trusted.overlay.opaque", b"x"),
        Opaque::UserX => set_xattr(dir, "user.overlay.opaque", b"x"),
    }
}

/// Set atime and mtime of `root` and everything below it (symlinks themselves, not followed)
/// to fixed values derived from `base` (so two independently built copies compare equal).
pub fn fix_times(root: &Path, base: i64) {
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display())) {
                stack.push(e.expect("dir entry").path());
            }
        }
        all.push(p);
    }
    for p in &all {
        let rel = p.strip_prefix(root).unwrap_or(p);
        let h = fnv64(rel.as_os_str().as_bytes());
        let t = |s: i64| rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: (h % 1_000_000_000) as i64,
        };
        let ts = rustix::fs::Timestamps {
            last_access: t(base + 1_000_000),
            last_modification: t(base + (h % 100_000) as i64),
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &ts,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
    }
}

/// A temp dir with the named subdirectories created; returns (guard, canonical root).
pub fn scratch(subdirs: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("ovlfs-test-")
        .tempdir()
        .expect("tempdir");
    let root = canon(t.path());
    for s in subdirs {
        mkdirs(&root.join(s));
    }
    (t, root)
}
