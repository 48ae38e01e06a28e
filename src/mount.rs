//! Mounting and the daemon's life: fork so the caller returns only once the mount is live,
//! unmount on SIGTERM/SIGINT/SIGHUP, exit when the kernel ends the session.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use fuser::{MountOption, SessionACL};

use crate::config::Config;
use crate::fs::OverlayFs;
use crate::overlay::Overlay;
use crate::supervisor::{Supervisor, WorkerFds};
use crate::sys::{self, ForkResult};
use crate::workdir::WorkdirLock;

/// The fuser session configuration for a validated config.
pub fn session_config(config: &Config) -> fuser::Config {
    let root = sys::geteuid() == 0;
    // The subtype goes as mount data, which both the kernel (direct mount as root) and
    // fusermount3 take: fuser's own Subtype option never reaches a direct mount, whose
    // fstype would then be plain `fuse`.
    let subtype = config
        .fuse_options
        .iter()
        .rev()
        .find_map(|o| o.strip_prefix("subtype="))
        .unwrap_or("ovlfs");
    let mut opts = vec![
        MountOption::FSName(config.source.clone().unwrap_or_else(|| "ovlfs".into())),
        MountOption::CUSTOM(format!("subtype={subtype}")),
        MountOption::DefaultPermissions,
    ];
    let has = |name: &str| config.fuse_options.iter().any(|o| o == name);
    let mut acl = if root {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    for opt in &config.fuse_options {
        let mapped = match opt.as_str() {
            "allow_other" => {
                acl = SessionACL::All;
                None
            }
            "allow_root" => {
                acl = SessionACL::RootAndOwner;
                None
            }
            "ro" => Some(MountOption::RO),
            "rw" => Some(MountOption::RW),
            "dev" => Some(MountOption::Dev),
            "nodev" => Some(MountOption::NoDev),
            "suid" => Some(MountOption::Suid),
            "nosuid" => Some(MountOption::NoSuid),
            "exec" => Some(MountOption::Exec),
            "noexec" => Some(MountOption::NoExec),
            "atime" => Some(MountOption::Atime),
            "noatime" => Some(MountOption::NoAtime),
            "sync" => Some(MountOption::Sync),
            "async" => Some(MountOption::Async),
            "dirsync" => Some(MountOption::DirSync),
            "auto_unmount" => Some(MountOption::AutoUnmount),
            o if o.starts_with("max_read=") => Some(MountOption::CUSTOM(o.to_owned())),
            o if o.starts_with("fsname=") => {
                opts[0] = MountOption::FSName(o["fsname=".len()..].to_owned());
                None
            }
            // default_permissions is always on, subtype= is above; the rest are VFS flags
            // fuse ignores.
            _ => None,
        };
        if let Some(m) = mapped
            && !opts.contains(&m)
        {
            opts.push(m);
        }
    }
    // As root, behave like a kernel overlay mount: setuid binaries and devices work.
    if root && !has("nosuid") && !has("suid") {
        opts.push(MountOption::Suid);
    }
    if root && !has("nodev") && !has("dev") {
        opts.push(MountOption::Dev);
    }
    if config.upperdir.is_none() && !has("ro") {
        opts.push(MountOption::RO);
    }
    let mut session = fuser::Config::default();
    session.mount_options = opts;
    session.acl = acl;
    session.n_threads = Some(config.threads.unwrap_or_else(default_threads));
    session.clone_fd = true;
    session
}

/// `fusermount3 -u [-z] -- PATH`, quietly; whether it succeeded.
fn fusermount_u(mountpoint: &Path, lazy: bool) -> bool {
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    cmd.arg("--")
        .arg(mountpoint)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    matches!(cmd.status(), Ok(s) if s.success())
}

/// `umount`: with privileges directly, else through `fusermount3 -u`.
fn unmount(mountpoint: &Path) -> io::Result<()> {
    match sys::unmount(mountpoint) {
        Ok(()) => Ok(()),
        Err(sys::Errno::PERM) if fusermount_u(mountpoint, false) => Ok(()),
        Err(sys::Errno::PERM) => Err(io::Error::other("fusermount3 -u failed")),
        Err(e) => Err(e.into()),
    }
}

/// `umount -l`: with privileges directly, else through `fusermount3 -u -z`.
fn lazy_unmount(mountpoint: &Path) {
    if sys::lazy_unmount(mountpoint).is_ok() || fusermount_u(mountpoint, true) {
        return;
    }
    log::error!(
        "cannot detach {}: run fusermount3 -u -z {}",
        mountpoint.display(),
        mountpoint.display()
    );
}

/// Starts the thread that keeps node fds under the open-file limit (see [`crate::reclaim`]).
fn start_reclaim(overlay: &Arc<Overlay>, session: &fuser::Session<OverlayFs>, fd_limit: u64) {
    use std::os::fd::AsFd;
    if let Ok(dev) = session.as_fd().try_clone_to_owned() {
        let _ = overlay.notifier.set(dev);
    }
    match session.as_fd().try_clone_to_owned() {
        Ok(dev) => crate::reclaim::start(overlay.clone(), dev, fd_limit),
        Err(e) => log::warn!("no reclaim thread: cannot duplicate the FUSE fd ({e})"),
    }
}

/// Two workers per CPU (at least 4, at most 16): READ and RELEASE arrive in the background
/// while the caller's next LOOKUP/OPEN waits, so one worker per CPU leaves requests queued
/// (measured in docs/design.md, Daemon life).
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).clamp(4, 16))
}

/// The one-line message of a failed mount.
fn mount_error(config: &Config, e: &io::Error) -> String {
    // fusermount3's message comes with its newline.
    let text = e.to_string();
    let hint = if e.raw_os_error() == Some(libc::ENOTCONN) {
        format!(
            " (a dead FUSE mount is in the way: run fusermount3 -u {})",
            config.mountpoint.display()
        )
    } else {
        String::new()
    };
    format!(
        "ovlfs: cannot mount on {}: {}{hint}",
        config.mountpoint.display(),
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Locks the workdir, mounts (with the FUSE INIT handshake), then prepares the workdir: a
/// mount that fails has changed nothing on disk. Errors are one line starting `ovlfs: `.
fn mount(config: &Config, overlay: &Arc<Overlay>) -> Result<fuser::Session<OverlayFs>, String> {
    let lock = match &config.workdir {
        Some(dir) => Some(WorkdirLock::acquire(dir).map_err(|e| format!("ovlfs: {e}"))?),
        None => None,
    };
    let fs = OverlayFs {
        ov: overlay.clone(),
    };
    let session = fuser::Session::new(fs, &config.mountpoint, &session_config(config))
        .map_err(|e| mount_error(config, &e))?;
    // Mounted: now the workdir may change. On error the session drops, which unmounts.
    if let Some(lock) = lock {
        let work = lock.prepare().map_err(|e| format!("ovlfs: {e}"))?;
        let _ = overlay.work.set(work);
    }
    Ok(session)
}

/// Mounts in a background thread of the calling process (for embedding, the demo, benches).
pub fn spawn_background(config: &Config) -> io::Result<fuser::BackgroundSession> {
    sys::set_umask(0);
    let fd_limit = sys::raise_fd_limit();
    let overlay = Arc::new(Overlay::new(config)?);
    let session = mount(config, &overlay).map_err(io::Error::other)?;
    start_reclaim(&overlay, &session, fd_limit);
    session.spawn()
}

/// The program's main path after option parsing; `args` is the command line it was parsed
/// from (workers parse it again). Returns the process exit code.
pub fn run(config: &Config, args: &[std::ffi::OsString]) -> i32 {
    for ignored in &config.ignored_options {
        log::warn!("option {ignored:?} is not supported and is ignored");
    }
    // New objects get exactly the mode the caller's request carries (its umask applied).
    sys::set_umask(0);
    let fd_limit = sys::raise_fd_limit();
    log::debug!("open-file limit: {fd_limit}");
    // Open the layers before forking so every error reaches the caller's terminal.
    let overlay = match open_layers(config) {
        Ok(o) => Arc::new(o),
        Err(message) => {
            eprintln!("{message}");
            return 1;
        }
    };
    // Under a supervisor, workers open the layers themselves: this process only keeps the
    // connection.
    let overlay = Some(overlay).filter(|_| !config.supervisor.unwrap_or(!config.foreground));
    let serve = move |ready: Option<std::os::fd::OwnedFd>| match overlay {
        Some(overlay) => serve(config, overlay, ready, fd_limit),
        None => serve_supervised(config, args, ready),
    };
    if config.foreground {
        return serve(None);
    }
    let (read_end, write_end) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ovlfs: pipe: {e}");
            return 1;
        }
    };
    match sys::fork() {
        Err(e) => {
            eprintln!("ovlfs: fork: {e}");
            1
        }
        Ok(ForkResult::Parent) => {
            drop(write_end);
            let message = sys::read_to_end(read_end.as_fd()).unwrap_or_default();
            match message.strip_prefix(b"ok") {
                Some(_) => 0,
                None if message.is_empty() => {
                    eprintln!("ovlfs: the daemon exited before the mount was live");
                    1
                }
                None => {
                    eprintln!("{}", String::from_utf8_lossy(&message).trim_end());
                    1
                }
            }
        }
        Ok(ForkResult::Child) => {
            drop(read_end);
            serve(Some(write_end))
        }
    }
}

/// Mounts, reports readiness (to the parent, if daemonized), and serves until unmounted.
fn serve(
    config: &Config,
    overlay: Arc<Overlay>,
    ready: Option<std::os::fd::OwnedFd>,
    fd_limit: u64,
) -> i32 {
    sys::block_termination_signals();
    let session = match mount(config, &overlay) {
        Ok(m) => m,
        Err(message) => {
            match ready {
                Some(pipe) => {
                    let _ = sys::write_all(pipe.as_fd(), message.as_bytes());
                }
                None => eprintln!("{message}"),
            }
            return 1;
        }
    };
    if let Some(pipe) = ready {
        let _ = sys::write_all(pipe.as_fd(), b"ok");
        drop(pipe);
        sys::detach_stdio_and_session();
        crate::logging::to_syslog(&config.mountpoint);
    }
    start_reclaim(&overlay, &session, fd_limit);
    let dev = session.as_fd().try_clone_to_owned();
    // The session runs on fuser's own thread, which owns no unmount handle: fuser's would
    // unmount the mountpoint again after the kernel has ended the session (its check for
    // "already unmounted" misreads the device), which warned "Failed to umount filesystem:
    // Invalid argument" on every `fusermount3 -u` and, as root, unmounted whatever the
    // mount had covered.
    let background = match session.spawn() {
        Ok(b) => b,
        Err(e) => {
            // fuser has unmounted already (dropping its handle on this error does).
            log::error!("cannot start the session: {e}");
            return 1;
        }
    };
    handle_termination_signals(&config.mountpoint);
    match join_session(background) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("session ended with an error: {e}");
            // The mount may still be there with nobody serving it: detach it.
            if let Ok(dev) = dev
                && !sys::fuse_connection_ended(dev.as_fd())
            {
                lazy_unmount(&config.mountpoint);
            }
            1
        }
    }
}

/// Under a supervisor (see [`crate::supervisor`]): locks the workdir, mounts, starts the
/// first worker (which completes INIT and prepares the workdir), reports readiness, then
/// replaces workers as they die until the mount is unmounted.
fn serve_supervised(
    config: &Config,
    args: &[std::ffi::OsString],
    ready: Option<std::os::fd::OwnedFd>,
) -> i32 {
    sys::block_termination_signals();
    let report = |message: &str| match &ready {
        Some(pipe) => {
            let _ = sys::write_all(pipe.as_fd(), message.as_bytes());
        }
        None => eprintln!("{message}"),
    };
    // The lock lasts as long as this process, which is as long as the mount.
    let _lock = match &config.workdir {
        Some(dir) => match WorkdirLock::acquire(dir) {
            Ok(lock) => Some(lock),
            Err(e) => {
                report(&format!("ovlfs: {e}"));
                return 1;
            }
        },
        None => None,
    };
    let args = crate::supervisor::worker_args(args, &config.mountpoint);
    let dev = match fuser::mount_fd(&config.mountpoint, &worker_session_config(config)) {
        Ok(dev) => dev,
        Err(e) => {
            report(&mount_error(config, &e));
            return 1;
        }
    };
    let supervisor = crate::kernel_refs::create()
        .map_err(io::Error::from)
        .and_then(|refs| Supervisor::new(&config.mountpoint, dev, refs, args));
    let supervisor = match supervisor {
        Ok(s) => Arc::new(s),
        Err(e) => {
            report(&format!("ovlfs: cannot set up the supervisor: {e}"));
            let _ = unmount(&config.mountpoint);
            return 1;
        }
    };
    if ready.is_some() {
        // Daemonizing: workers log to syslog and never hold the caller's stderr.
        supervisor.set_detached();
    }
    let first = match supervisor.start_current() {
        Ok(child) => child,
        Err(message) => {
            report(&message);
            // Mounted, but nobody will serve it.
            if unmount(&config.mountpoint).is_err() {
                lazy_unmount(&config.mountpoint);
            }
            return 1;
        }
    };
    // Before the caller is told: an `--upgrade` right after the mount must find the socket.
    supervisor.listen_for_upgrades(&config.mountpoint);
    if let Some(pipe) = ready {
        let _ = sys::write_all(pipe.as_fd(), b"ok");
        drop(pipe);
        sys::detach_stdio_and_session();
        crate::logging::to_syslog(&config.mountpoint);
    }
    handle_termination_signals(&config.mountpoint);
    let code = supervisor.supervise(first);
    if code != 0 && !sys::fuse_connection_ended(supervisor.dev()) {
        lazy_unmount(&config.mountpoint);
    }
    code
}

/// The session config of a worker: every thread reads the supervisor's open file of
/// `/dev/fuse` (no `clone_fd`), because the kernel ends the requests read through a cloned fd
/// with `ECONNABORTED` when that fd is closed (its worker died), where requests read through
/// the supervisor's fd stay queued for `FUSE_NOTIFY_RESEND`.
///
/// Each reader thread's request buffer is touched up to the largest request the kernel sends
/// (`fs.fuse.max_pages_limit` pages, 1 MiB by default, plus the header): a request copied
/// into a page touched for the first time while the worker is being killed fails with `EIO`
/// instead of being sent again (seen as lost writeback data in `tests/supervisor`).
fn worker_session_config(config: &Config) -> fuser::Config {
    let mut session = session_config(config);
    session.clone_fd = !resend_supported();
    let max_pages = std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(256);
    session.prefault_request_buffer = (max_pages + 2) * 4096;
    session
}

/// Whether the kernel has `FUSE_NOTIFY_RESEND` (Linux 6.9). Without it, a worker reads
/// through its own cloned fds, so that the requests it held fail once it dies instead of
/// hanging. `OVLFS_NO_RESEND=1` behaves as on such a kernel (for tests).
fn resend_supported() -> bool {
    let forced_off = std::env::var_os("OVLFS_NO_RESEND").is_some_and(|v| v == "1");
    !forced_off && sys::kernel_release() >= (6, 9)
}

/// A worker (started by the supervisor with [`crate::supervisor::WORKER_ARG`]): serves the
/// supervisor's connection, completing INIT if it is the first, or taking over what an
/// earlier worker handed to the kernel. Returns the exit code.
pub fn run_worker(config: &Config) -> i32 {
    let fds = match WorkerFds::from_env() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ovlfs: {e} (--ovlfs-worker is started by ovlfs itself)");
            return 1;
        }
    };
    let config = &Config {
        mountpoint: fds.mountpoint.clone(),
        ..config.clone()
    };
    // The mount must end with its supervisor: a worker left behind would keep it alive.
    if sys::die_with_parent().ok() != Some(fds.supervisor) {
        return 1;
    }
    sys::block_termination_signals();
    // Started in the caller's directory to parse relative paths; they are absolute now.
    let _ = sys::chdir_root();
    if fds.syslog {
        crate::logging::to_syslog(&config.mountpoint);
    }
    sys::set_umask(0);
    let fd_limit = sys::raise_fd_limit();
    match start_worker(config, fds, fd_limit) {
        Ok(background) => wait_for_session(config, background),
        Err(()) => 1,
    }
}

/// Sets a worker up and starts its session; errors go to the supervisor (`Err(())`).
fn start_worker(
    config: &Config,
    fds: WorkerFds,
    fd_limit: u64,
) -> Result<(fuser::BackgroundSession, io::Result<std::os::fd::OwnedFd>), ()> {
    let report = |message: String| {
        let _ = sys::write_all(fds.ready.as_fd(), message.as_bytes());
    };
    let overlay = open_layers(config).map(Arc::new).map_err(report)?;
    let refs = crate::kernel_refs::KernelRefs::open(fds.refs.as_fd())
        .map(Arc::new)
        .map_err(|e| report(format!("ovlfs: the supervisor's shared state: {e}")))?;
    overlay.attach_refs(refs.clone());
    let fs = OverlayFs {
        ov: overlay.clone(),
    };
    let session_config = worker_session_config(config);
    let acl = session_config.acl;
    let resend = resend_supported();
    let dev = if resend {
        fds.dev
    } else {
        fuser::clone_dev_fd(fds.dev.as_fd())
            .map_err(|e| report(format!("ovlfs: cannot clone the FUSE fd: {e}")))?
    };
    let inherited = refs.init_record();
    let session = match inherited {
        Some(words) => {
            fuser::Session::from_initialized_fd(fs, dev, acl, session_config, init_record(words))
        }
        None => fuser::Session::from_fd(fs, dev, acl, session_config),
    };
    let session = session.map_err(|e| report(format!("ovlfs: cannot serve the mount: {e}")))?;
    if inherited.is_none()
        && let Some(record) = session.init_record()
    {
        refs.set_init_record(init_words(&record));
    }
    // Nothing of a dead worker's staging is in use any more: cleared as at mount time.
    if let Some(dir) = &config.workdir {
        let lock = WorkdirLock::held_by_supervisor(dir);
        let work = match inherited {
            Some(_) => lock.and_then(WorkdirLock::prepare_keeping_orphans),
            None => lock.and_then(WorkdirLock::prepare),
        }
        .map_err(|e| report(format!("ovlfs: {e}")))?;
        let _ = overlay.work.set(work);
    }
    if inherited.is_some() {
        let lost = overlay.take_over_handles(&refs, &|id| session.adopt_backing(id));
        if lost > 0 {
            log::warn!("{lost} open files could not be opened again after a restart");
        }
        // Requests the dead worker read but did not answer are queued again.
        if !resend {
            log::warn!("no FUSE_NOTIFY_RESEND: requests in flight when the worker died failed");
        } else if let Err(e) = sys::notify_resend(session.as_fd()) {
            log::warn!(
                "FUSE_NOTIFY_RESEND failed ({e}): requests in flight when the worker died fail"
            );
        }
    }
    start_reclaim(&overlay, &session, fd_limit);
    let dev = session.as_fd().try_clone_to_owned();
    let background = session
        .spawn()
        .map_err(|e| report(format!("ovlfs: cannot start the session: {e}")))?;
    let _ = sys::write_all(fds.ready.as_fd(), b"ok");
    Ok((background, dev))
}

/// Waits for the session thread to end; its result. The session is then forgotten, not
/// dropped: dropping it would unmount, but the kernel has ended the session already (or, under
/// a supervisor, another worker will serve the mount).
fn join_session(mut background: fuser::BackgroundSession) -> io::Result<()> {
    let thread = std::mem::replace(&mut background.guard, std::thread::spawn(|| Ok(())));
    let result = thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the session thread panicked")));
    std::mem::forget(background);
    result
}

/// Joins the session thread of a worker; the exit code.
fn wait_for_session(
    config: &Config,
    (background, _dev): (fuser::BackgroundSession, io::Result<std::os::fd::OwnedFd>),
) -> i32 {
    match join_session(background) {
        Ok(()) => 0,
        Err(e) => {
            log::error!(
                "{}: session ended with an error: {e}",
                config.mountpoint.display()
            );
            1
        }
    }
}

/// The INIT record as the shared state keeps it (see [`crate::kernel_refs`]).
fn init_words(r: &fuser::InitRecord) -> [u64; 8] {
    [
        u64::from(r.kernel_major),
        u64::from(r.kernel_minor),
        r.offered,
        r.requested,
        u64::from(r.max_write),
        u64::from(r.max_readahead),
        u64::from(r.kernel_max_readahead),
        u64::from(r.max_stack_depth),
    ]
}

fn init_record(w: [u64; 8]) -> fuser::InitRecord {
    fuser::InitRecord {
        kernel_major: w[0] as u32,
        kernel_minor: w[1] as u32,
        offered: w[2],
        requested: w[3],
        max_write: w[4] as u32,
        max_readahead: w[5] as u32,
        kernel_max_readahead: w[6] as u32,
        max_stack_depth: w[7] as u32,
    }
}

/// Unmounts on SIGTERM/SIGINT/SIGHUP (blocked in every thread, received here).
fn handle_termination_signals(mountpoint: &Path) {
    let mountpoint = mountpoint.to_owned();
    let _ = std::thread::Builder::new()
        .name("ovlfs-signals".into())
        .spawn(move || {
            loop {
                // Loops so a repeated signal is still handled if an unmount attempt raced.
                let sig = sys::wait_for_termination_signal();
                log::info!("signal {sig}: unmounting");
                if let Err(e) = unmount(&mountpoint) {
                    // Busy (a file is open inside): detach it from the namespace now, give
                    // in-flight requests a moment, then end the daemon; what is still open
                    // inside gets ENOTCONN, as with fuse-overlayfs.
                    log::warn!("unmount failed ({e}); detaching lazily and exiting");
                    lazy_unmount(&mountpoint);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    std::process::exit(0);
                }
            }
        });
}

/// Opens the layers; an error names the layer that failed.
fn open_layers(config: &Config) -> Result<Overlay, String> {
    Overlay::new(config).map_err(|e| {
        // The error itself does not say which layer: find the one that fails on its own.
        let layers = config
            .upperdir
            .iter()
            .map(|p| ("upperdir", p))
            .chain(config.lowerdirs.iter().map(|p| ("lowerdir", p)))
            .chain(config.datadirs.iter().map(|p| ("datadir", p)));
        for (what, path) in layers {
            let opened = sys::open_layer_root(path).and_then(|fd| sys::stat_fd(fd.as_fd()));
            if let Err(err) = opened {
                return format!(
                    "ovlfs: cannot open the layers: {what} {:?}: {}",
                    path.to_string_lossy(),
                    errno_text(&err.into())
                );
            }
        }
        format!("ovlfs: cannot open the layers: {}", errno_text(&e))
    })
}

/// An error's text without the ` (os error N)` std appends.
fn errno_text(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Action, parse_args};

    /// A layer that cannot be opened (here: removed after the command line was checked) is
    /// named in the error.
    #[test]
    fn layer_open_error_names_the_layer() {
        let t = tempfile::tempdir().unwrap();
        for d in ["l1", "l2", "m"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        let opts = format!("lowerdir={}:{}", l1.display(), l2.display());
        let args = ["-o".into(), opts, t.path().join("m").display().to_string()];
        let Action::Mount(config) = parse_args(args.iter().map(Into::into)).unwrap() else {
            panic!("not a mount");
        };
        std::fs::remove_dir(&l2).unwrap();
        let Err(message) = open_layers(&config) else {
            panic!("opening a removed layer should fail");
        };
        assert_eq!(
            message,
            format!(
                "ovlfs: cannot open the layers: lowerdir {:?}: No such file or directory",
                l2.display().to_string()
            )
        );
    }
}
