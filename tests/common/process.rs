//! Child processes with timeouts: spawning, capturing output and waiting.

use super::*;

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
pub static SPAWN_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

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

pub fn run_quiet(program: &str, args: &[&OsStr]) -> bool {
    let mut c = Command::new(program);
    c.args(args);
    matches!(run_cmd(&mut c, MOUNT_TIMEOUT), Ok(o) if o.success())
}

pub fn send_signal(pid: u32, sig: rustix::process::Signal) -> io::Result<()> {
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

pub fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
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
