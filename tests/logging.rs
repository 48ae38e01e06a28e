//! Where the daemon's log records go: to syslog once it has detached (a test socket stands in
//! for /dev/log through `OVLFS_SYSLOG_SOCKET`), each line tagged `ovlfs[PID]:` and naming the
//! mount point; to stderr in the foreground. And what `-d` shows of the FUSE protocol.

mod common;

use common::*;
use rustix::process::Signal;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BODY_SECS: u64 = 30;

/// A datagram socket standing in for /dev/log; collects what arrives on a thread.
struct SyslogSink {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl SyslogSink {
    fn bind(path: PathBuf) -> SyslogSink {
        let socket = UnixDatagram::bind(&path).expect("bind the test syslog socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                    l.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            }
        });
        SyslogSink { path, lines, stop }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (bounded) for a line `pred` accepts.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `env OVLFS_SYSLOG_SOCKET=PATH`, to run the daemon under (env execs it: same PID).
    fn env_wrapper(&self) -> Vec<String> {
        vec![
            "env".into(),
            format!("OVLFS_SYSLOG_SOCKET={}", self.path.display()),
        ]
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lowers(root: &Path) -> Ovlfs {
    write_file(&root.join("l/file"), "lower\n");
    Ovlfs::new([root.join("l")])
}

fn using_default_binary() -> bool {
    std::env::var_os("OVLFS_TEST_BIN").is_none_or(|v| v.is_empty())
}

/// A detached daemon logs to syslog: `--debug` records of requests, and the warning of a
/// SIGTERM that finds the mount busy, each line `<PRI>TIMESTAMP ovlfs[PID]: MOUNTPOINT: ...`
/// with facility daemon.
#[test]
fn detached_daemon_logs_to_syslog_naming_the_mountpoint() {
    if !using_default_binary() {
        return;
    }
    let (_t, root) = scratch(&["l", "m"]);
    let sink = SyslogSink::bind(root.join("log.sock"));
    let mut m = lowers(&root)
        .wrapped(sink.env_wrapper())
        .arg("--debug")
        .mount_daemon(&root.join("m"));
    let pid = m.pid().expect("daemon pid");
    let tag = format!("ovlfs[{pid}]: {}: ", m.path().display());
    // Requests are served by the supervisor's worker (docs/design.md, "The supervisor").
    let children =
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let request_tag = match children.split_whitespace().next() {
        Some(worker) => format!("ovlfs[{worker}]: {}: ", m.path().display()),
        None => tag.clone(),
    };
    let p = m.path().to_path_buf();
    let held = with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(fs::read_to_string(p.join("file")).expect("read"), "lower\n");
        fs::File::open(p.join("file")).expect("open file")
    });
    // Debug records (severity 7, facility daemon 3: PRI 31) of the requests just made.
    let debug = sink.wait_for(Duration::from_secs(5), |l| {
        l.starts_with("<31>") && l.contains(&request_tag)
    });
    assert!(
        debug.is_some(),
        "no debug line tagged {request_tag:?} reached the syslog socket; got {:?}",
        sink.lines().iter().take(5).collect::<Vec<_>>()
    );
    // SIGTERM while a file is open: the unmount fails busy, which is logged as a warning.
    m.signal(Signal::TERM).expect("SIGTERM");
    let warning = sink.wait_for(Duration::from_secs(5), |l| {
        l.starts_with("<28>") && l.contains(&tag) && l.contains("unmount failed")
    });
    drop(held);
    assert!(m.wait_unmounted(Duration::from_secs(10)), "still mounted");
    let warning = warning.unwrap_or_else(|| {
        panic!(
            "no warning tagged {tag:?} about the busy unmount; last lines {:?}",
            sink.lines().iter().rev().take(5).collect::<Vec<_>>()
        )
    });
    // RFC 3164: "<PRI>Mmm dd hh:mm:ss TAG[PID]: ..."
    let stamp = &warning[4..19];
    assert_eq!(stamp.as_bytes()[3], b' ', "{warning}");
    assert_eq!(&stamp[9..10], ":", "{warning}");
    assert_eq!(&warning[19..20], " ", "{warning}");
    for line in sink.lines() {
        assert!(!line.contains('\n'), "one record per line: {line:?}");
    }
}

/// In the foreground (`-f`) records stay on stderr, even with a syslog socket configured.
#[test]
fn foreground_logs_to_stderr() {
    if !using_default_binary() {
        return;
    }
    let (_t, root) = scratch(&["l", "m"]);
    let sink = SyslogSink::bind(root.join("log.sock"));
    let m = lowers(&root)
        .wrapped(sink.env_wrapper())
        .opt("fast_ino")
        .mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        fs::read_to_string(p.join("file")).expect("read");
    });
    assert!(m.fusermount_u(), "fusermount3 -u");
    let stderr = m.stderr();
    assert!(
        stderr.contains("\"fast_ino\" is not supported and is ignored"),
        "the warning should be on stderr: {stderr:?}"
    );
    thread::sleep(Duration::from_millis(200));
    assert!(sink.lines().is_empty(), "syslog got {:?}", sink.lines());
}

/// `-d` logs the FUSE protocol version offered in the INIT reply: the one `--version` names.
#[test]
fn debug_log_shows_the_protocol_version_names() {
    if !using_default_binary() {
        return;
    }
    let mut c = std::process::Command::new(ovlfs_bin());
    c.arg("--version");
    let out = run_cmd(&mut c, MOUNT_TIMEOUT).expect("ovlfs --version");
    let protocol = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("FUSE kernel interface version "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("--version names no FUSE protocol: {:?}", out.stdout))
        .to_owned();
    let (_t, root) = scratch(&["l", "m"]);
    let m = lowers(&root).arg("-d").mount(&root.join("m"));
    assert!(m.fusermount_u(), "fusermount3 -u");
    let stderr = m.stderr();
    assert!(
        stderr.contains(&format!("INIT response: ABI {protocol},")),
        "-d output does not show ABI {protocol}:\n{}",
        stderr.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}
