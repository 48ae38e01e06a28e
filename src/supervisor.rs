//! The supervisor: a small process that holds the `/dev/fuse` fd and the shared record of the
//! kernel's node ids and handles (the `kernel_refs` module), and runs the worker that serves
//! requests. The kernel keeps a FUSE connection while any process holds its fd, so a worker
//! that dies (OOM kill, SIGKILL, a bug) is replaced at once and the mount's users see nothing
//! (see docs/design.md, "The supervisor"). When the supervisor itself dies, the mount is gone
//! as without it: its workers die with it.
//!
//! A worker is this binary started again (`exec` of an fd of the binary, so a package update
//! replacing the file changes nothing until `--upgrade`), with the original command line after
//! [`WORKER_ARG`] and its fds named in [`WORKER_ENV`].

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys;

/// `argv[1]` of a worker.
pub const WORKER_ARG: &str = "--ovlfs-worker";
/// `DEV,REFS,READY,SUPERVISOR_PID,SYSLOG`: the fds a worker inherits, who started it, and
/// whether it logs to syslog.
pub const WORKER_ENV: &str = "OVLFS_WORKER";
/// The mount point (the worker's command line names `/` instead: checking the real one would
/// wait on the mount the worker is to serve).
pub const WORKER_MOUNTPOINT_ENV: &str = "OVLFS_WORKER_MOUNTPOINT";

/// The command line for workers: `args` with the mount point replaced by `/`. Must run before
/// the mount exists (afterwards looking at the mount point waits for a worker).
pub fn worker_args(args: &[OsString], mountpoint: &Path) -> Vec<OsString> {
    args.iter()
        .map(|a| {
            let positional = !a.as_encoded_bytes().starts_with(b"-");
            if positional && std::fs::canonicalize(a).is_ok_and(|p| p == mountpoint) {
                OsString::from("/")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// A worker that dies this soon after it started serving counts as dying at once.
const QUICK_DEATH: Duration = Duration::from_millis(50);
/// Workers dying at once in a row before the supervisor gives up (its mount then ends).
const QUICK_DEATHS_TO_GIVE_UP: u32 = 20;

/// How much more likely the OOM killer is to pick the worker than the supervisor.
const OOM_SCORE_STEP: i32 = 500;

/// What a worker learns from its supervisor.
#[derive(Debug)]
pub struct WorkerFds {
    pub mountpoint: PathBuf,
    pub dev: OwnedFd,
    pub refs: OwnedFd,
    pub ready: OwnedFd,
    pub supervisor: u32,
    pub syslog: bool,
}

impl WorkerFds {
    /// The fds named in [`WORKER_ENV`] (inherited from the supervisor).
    pub fn from_env() -> Result<WorkerFds, String> {
        let value = std::env::var(WORKER_ENV).map_err(|_| format!("{WORKER_ENV} is not set"))?;
        let parts: Vec<u32> = value
            .split(',')
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("bad {WORKER_ENV}: {value:?}"))
            })
            .collect::<Result<_, _>>()?;
        let [dev, refs, ready, supervisor, syslog] = parts[..] else {
            return Err(format!("bad {WORKER_ENV}: {value:?}"));
        };
        let own = |fd: u32| sys::inherited_fd(fd as i32).map_err(|e| format!("fd {fd}: {e}"));
        let mountpoint = std::env::var_os(WORKER_MOUNTPOINT_ENV)
            .ok_or_else(|| format!("{WORKER_MOUNTPOINT_ENV} is not set"))?;
        Ok(WorkerFds {
            mountpoint: mountpoint.into(),
            dev: own(dev)?,
            refs: own(refs)?,
            ready: own(ready)?,
            supervisor,
            syslog: syslog != 0,
        })
    }
}

/// A binary to start workers from, and what asked for it.
#[derive(Debug)]
struct Upgrade {
    binary: OwnedFd,
    requester: UnixStream,
}

/// Starts, watches and replaces the workers of one mount.
#[derive(Debug)]
pub struct Supervisor {
    mountpoint: PathBuf,
    dev: OwnedFd,
    refs: OwnedFd,
    args: Vec<OsString>,
    /// The caller's directory: relative paths of `args` are resolved from it.
    cwd: Option<PathBuf>,
    detached: std::sync::atomic::AtomicBool,
    binary: Mutex<OwnedFd>,
    worker: Mutex<Option<u32>>,
    upgrade: Mutex<Option<Upgrade>>,
}

impl Supervisor {
    /// `dev`: the mounted connection; `refs`: a new `kernel_refs` table; `args`: the
    /// command line (after the program name) the workers parse again (see [`worker_args`]).
    pub fn new(
        mountpoint: &Path,
        dev: OwnedFd,
        refs: OwnedFd,
        args: Vec<OsString>,
    ) -> std::io::Result<Supervisor> {
        sys::clear_cloexec(dev.as_fd())?;
        sys::clear_cloexec(refs.as_fd())?;
        let binary = std::fs::File::open("/proc/self/exe")?.into();
        Ok(Supervisor {
            mountpoint: mountpoint.to_owned(),
            dev,
            refs,
            args,
            cwd: std::env::current_dir().ok(),
            detached: Default::default(),
            binary: Mutex::new(binary),
            worker: Mutex::new(None),
            upgrade: Mutex::new(None),
        })
    }

    pub fn dev(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    /// Workers started from now on log to syslog and get no terminal.
    pub fn set_detached(&self) {
        self.detached
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts a worker from `binary` and waits until it serves the connection, or returns the
    /// one-line error it reported (or that it died first).
    pub fn start_worker(&self, binary: BorrowedFd<'_>) -> Result<Child, String> {
        let (ready_read, ready_write) = sys::pipe().map_err(|e| format!("ovlfs: pipe: {e}"))?;
        sys::clear_cloexec(ready_write.as_fd()).map_err(|e| format!("ovlfs: fcntl: {e}"))?;
        let detached = self.detached.load(std::sync::atomic::Ordering::Relaxed);
        let env = format!(
            "{},{},{},{},{}",
            self.dev.as_raw_fd(),
            self.refs.as_raw_fd(),
            ready_write.as_raw_fd(),
            sys::getpid(),
            u8::from(detached)
        );
        let mut cmd = Command::new(format!("/proc/self/fd/{}", binary.as_raw_fd()));
        cmd.arg0("ovlfs")
            .arg(WORKER_ARG)
            .args(&self.args)
            .env(WORKER_ENV, env)
            .env(WORKER_MOUNTPOINT_ENV, &self.mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if detached {
            cmd.stderr(Stdio::null());
        }
        // No check of the directory here: under the mount point it would wait for a worker.
        cmd.current_dir(self.cwd.as_deref().unwrap_or(Path::new("/")));
        let spawned = cmd.spawn().or_else(|_| cmd.current_dir("/").spawn());
        drop(ready_write);
        let mut child = spawned.map_err(|e| format!("ovlfs: cannot start the worker: {e}"))?;
        let own = sys::oom_score_adj(sys::getpid()).unwrap_or(0);
        if let Err(e) = sys::set_oom_score_adj(child.id(), (own + OOM_SCORE_STEP).min(1000)) {
            log::warn!("cannot raise the worker's oom_score_adj: {e}");
        }
        let message = sys::read_to_end(ready_read.as_fd()).unwrap_or_default();
        if message.starts_with(b"ok") {
            return Ok(child);
        }
        let _ = child.kill();
        let status = child.wait();
        let text = String::from_utf8_lossy(&message).trim_end().to_owned();
        Err(if text.is_empty() {
            format!("ovlfs: the worker exited before serving the mount ({status:?})")
        } else {
            text
        })
    }

    /// Watches `worker` and replaces it whenever it exits, until the kernel ends the
    /// connection (unmounted: returns 0) or workers keep dying as soon as they serve
    /// (returns 1: a worker that dies on a request it is sent again after every restart
    /// would loop forever). Restarts after such quick deaths back off.
    pub fn supervise(&self, mut worker: Child) -> i32 {
        let mut quick_deaths = 0u32;
        loop {
            let began = Instant::now();
            *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(worker.id());
            let status = worker.wait();
            *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if sys::fuse_connection_ended(self.dev.as_fd()) {
                return 0;
            }
            let upgrade = self
                .upgrade
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if upgrade.is_none() {
                log::warn!(
                    "worker {} exited ({status:?}); starting another",
                    worker.id()
                );
                quick_deaths = if began.elapsed() < QUICK_DEATH {
                    quick_deaths + 1
                } else {
                    0
                };
            }
            let mut next = match upgrade {
                Some(up) => self.upgrade_to(up),
                None => self.start_current(),
            };
            loop {
                if quick_deaths >= QUICK_DEATHS_TO_GIVE_UP
                    || sys::fuse_connection_ended(self.dev.as_fd())
                {
                    log::error!("giving up: workers keep dying at once");
                    return 1;
                }
                match next {
                    Ok(child) => {
                        log::info!("worker {} serves the mount", child.id());
                        worker = child;
                        break;
                    }
                    Err(message) => {
                        log::error!("{message}");
                        quick_deaths += 1;
                        std::thread::sleep(Duration::from_millis(50 << quick_deaths.min(5)));
                        next = self.start_current();
                    }
                }
            }
        }
    }

    /// Starts a worker from the binary workers are started from now.
    pub fn start_current(&self) -> Result<Child, String> {
        let binary = self.binary.lock().unwrap_or_else(|e| e.into_inner());
        self.start_worker(binary.as_fd())
    }

    /// Starts a worker from the upgrade's binary; keeps it for later restarts if it serves,
    /// else starts one from the running binary again. Tells the requester either way.
    fn upgrade_to(&self, mut up: Upgrade) -> Result<Child, String> {
        match self.start_worker(up.binary.as_fd()) {
            Ok(child) => {
                let _ = writeln!(up.requester, "ok {}", child.id());
                *self.binary.lock().unwrap_or_else(|e| e.into_inner()) = up.binary;
                Ok(child)
            }
            Err(message) => {
                let _ = writeln!(
                    up.requester,
                    "{message} (the mount stays on the running binary)"
                );
                self.start_current()
            }
        }
    }

    /// Listens for `ovlfs --upgrade MOUNTPOINT` (an abstract unix socket named after the
    /// mount's device number; root or the mount's owner only).
    pub fn listen_for_upgrades(self: &Arc<Self>, mountpoint: &Path) {
        let Some(name) = socket_name(mountpoint) else {
            log::warn!("cannot stat the mount point: --upgrade will not find this mount");
            return;
        };
        let listener = match SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| UnixListener::bind_addr(&addr))
        {
            Ok(l) => l,
            Err(e) => {
                log::warn!("cannot listen for --upgrade ({e})");
                return;
            }
        };
        let supervisor = self.clone();
        let _ = std::thread::Builder::new()
            .name("ovlfs-upgrade".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    supervisor.upgrade_request(stream);
                }
            });
    }

    fn upgrade_request(&self, mut stream: UnixStream) {
        let me = sys::geteuid();
        match sys::peer_uid(stream.as_fd()) {
            Ok(uid) if uid == 0 || uid == me => {}
            _ => {
                let _ = writeln!(stream, "ovlfs: permission denied");
                return;
            }
        }
        let mut path = Vec::new();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.read_to_end(&mut path).is_err() {
            return;
        }
        let path = PathBuf::from(std::ffi::OsString::from(
            String::from_utf8_lossy(&path).trim_end().to_owned(),
        ));
        let binary = match std::fs::File::open(&path) {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                let _ = writeln!(stream, "ovlfs: cannot open {}: {e}", path.display());
                return;
            }
        };
        log::info!(
            "upgrade requested: workers now start from {}",
            path.display()
        );
        let worker = *self.worker.lock().unwrap_or_else(|e| e.into_inner());
        *self.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some(Upgrade {
            binary,
            requester: stream,
        });
        // Requests the old worker has read but not answered are sent again to the new one.
        if let Some(pid) = worker {
            let _ = sys::kill_hard(pid);
        }
    }
}

/// The abstract socket name of the supervisor of the mount at `mountpoint`.
fn socket_name(mountpoint: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mountpoint).ok()?.dev();
    let (major, minor) = sys::major_minor(dev);
    Some(format!("ovlfs-supervisor/{major}:{minor}"))
}

/// `ovlfs --upgrade MOUNTPOINT`: asks the mount's supervisor to serve it with this binary
/// from now on. Returns the exit code.
pub fn upgrade(mountpoint: &Path) -> i32 {
    let fail = |message: String| {
        eprintln!("{message}");
        1
    };
    let Some(name) = socket_name(mountpoint) else {
        return fail(format!("ovlfs: cannot stat {}", mountpoint.display()));
    };
    let binary = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail(format!("ovlfs: cannot find this binary: {e}")),
    };
    let connected = SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|addr| UnixStream::connect_addr(&addr));
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "ovlfs: no supervised ovlfs mount at {} ({e}); only a mount with supervisor=on \
                 can be upgraded",
                mountpoint.display()
            ));
        }
    };
    let sent = stream
        .write_all(binary.as_os_str().as_encoded_bytes())
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    if let Err(e) = sent {
        return fail(format!("ovlfs: --upgrade: {e}"));
    }
    let mut reply = String::new();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.read_to_string(&mut reply);
    match reply.strip_prefix("ok") {
        Some(_) => 0,
        None if reply.is_empty() => fail("ovlfs: --upgrade: the supervisor did not answer".into()),
        None => fail(reply.trim_end().to_owned()),
    }
}
