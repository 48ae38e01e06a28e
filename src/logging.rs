//! Where log records go: stderr while the program runs in the foreground (as `env_logger`
//! formats them, `RUST_LOG` refining the level), syslog once the daemon has detached (its
//! stderr is /dev/null then). Syslog lines are RFC 3164 datagrams to `/dev/log`, facility
//! daemon, tagged `ovlfs[PID]:`, each naming the mount point so one host's mounts can be told
//! apart. `OVLFS_SYSLOG_SOCKET` names another socket (for tests, or a syslog daemon listening
//! elsewhere).
//!
//! Errors a serving daemon may meet again and again (a panicking request, a failing layer, a
//! full upper) go through [`log_limited`]: at most [`BURST`] lines per minute for each kind,
//! with a count of those left out.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, Log, Metadata, Record};

/// The syslog socket unless `OVLFS_SYSLOG_SOCKET` names another.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Environment variable naming the syslog socket to use instead of `/dev/log`.
pub const SYSLOG_SOCKET_ENV: &str = "OVLFS_SYSLOG_SOCKET";

/// Lines longer than this are cut (rsyslog's default message limit is 8 KiB).
const MAX_LINE: usize = 4096;

/// syslog facility `daemon` (3), shifted as in the PRI field.
const FACILITY_DAEMON: u8 = 3 << 3;

struct Logger {
    /// Filter (from the level and `RUST_LOG`) and the stderr format.
    stderr: env_logger::Logger,
    /// Set once the daemon has detached.
    syslog: Mutex<Option<Syslog>>,
}

struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
    /// `ovlfs[PID]: MOUNTPOINT: `, what starts every message.
    prefix: String,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger: `warn` and above, or everything down to `debug` with `debug` set;
/// `RUST_LOG` overrides either. Records go to stderr until [`to_syslog`] is called.
pub fn init(debug: bool) {
    let level = if debug { "debug" } else { "warn" };
    let stderr =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).build();
    let max = stderr.filter();
    let logger = LOGGER.get_or_init(|| Logger {
        stderr,
        syslog: Mutex::new(None),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
}

/// From now on, records go to syslog, each line naming `mountpoint`. Called by the daemon
/// once it has detached from the terminal.
pub fn to_syslog(mountpoint: &Path) {
    let Some(logger) = LOGGER.get() else { return };
    let path = std::env::var_os(SYSLOG_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(SYSLOG_SOCKET), PathBuf::from);
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    // A syslog daemon that stops reading must not stall the requests that log.
    let _ = socket.set_nonblocking(true);
    let prefix = format!(
        "ovlfs[{}]: {}: ",
        std::process::id(),
        mountpoint.to_string_lossy()
    );
    if let Ok(mut s) = logger.syslog.lock() {
        *s = Some(Syslog {
            socket,
            path,
            prefix,
        });
    }
}

/// Whether records go to syslog (the daemon has detached).
pub fn detached() -> bool {
    // try_lock: called from the panic hook, which may run while a record is being sent.
    LOGGER
        .get()
        .and_then(|l| l.syslog.try_lock().ok().map(|s| s.is_some()))
        .unwrap_or(false)
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.stderr.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.stderr.matches(record) {
            return;
        }
        let syslog = self.syslog.lock();
        match syslog.as_deref() {
            Ok(Some(s)) => s.send(record),
            _ => self.stderr.log(record),
        }
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

impl Syslog {
    fn send(&self, record: &Record<'_>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let stamp = timestamp(now);
        let text = record.args().to_string();
        // Other crates' records (fuser's) say where they come from.
        let origin = match record.target() {
            t if t == "ovlfs" || t.starts_with("ovlfs::") => String::new(),
            t => format!("{t}: "),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let msg = format_line(record.level(), &stamp, &self.prefix, &origin, line);
            // Dropped if the socket is missing or full: there is nowhere else to report it.
            let _ = self.socket.send_to(msg.as_bytes(), &self.path);
        }
    }
}

/// syslog severity of a log level (RFC 3164 numbers).
fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `Mmm dd hh:mm:ss` in local time, as RFC 3164 wants it (day padded with a space).
fn timestamp(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (mon, day, h, m, s) = crate::sys::local_time(secs).unwrap_or((0, 1, 0, 0, 0));
    let month = MONTHS.get(mon as usize).unwrap_or(&"Jan");
    format!("{month} {day:>2} {h:02}:{m:02}:{s:02}")
}

/// One syslog datagram: `<PRI>TIMESTAMP ovlfs[PID]: MOUNTPOINT: [target: ]text`, control
/// characters replaced so one record stays one line.
fn format_line(level: Level, stamp: &str, prefix: &str, origin: &str, line: &str) -> String {
    let pri = FACILITY_DAEMON | severity(level);
    let mut msg = format!("<{pri}>{stamp} {prefix}{origin}");
    for c in line.chars() {
        if msg.len() >= MAX_LINE {
            break;
        }
        msg.push(if c.is_control() { ' ' } else { c });
    }
    msg
}

// ---- rate limiting --------------------------------------------------------------------------

/// Lines let through per kind of message and [`WINDOW`].
pub const BURST: u32 = 5;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Window {
    start: Instant,
    sent: u32,
    suppressed: u64,
}

/// Counts messages per key: the first [`BURST`] of each [`WINDOW`] pass, the rest are
/// counted and reported with the first message of a later window.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl RateLimiter {
    /// `Some(n)`: log this message, noting `n` left out before it; `None`: leave it out.
    pub(crate) fn admit(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry(key).or_insert(Window {
            start: now,
            sent: 0,
            suppressed: 0,
        });
        let mut carried = 0;
        if now.saturating_duration_since(w.start) >= WINDOW {
            carried = w.suppressed;
            *w = Window {
                start: now,
                sent: 0,
                suppressed: 0,
            };
        }
        if w.sent < BURST {
            w.sent += 1;
            Some(carried)
        } else {
            w.suppressed += 1;
            None
        }
    }
}

fn limiter() -> &'static RateLimiter {
    static LIMITER: OnceLock<RateLimiter> = OnceLock::new();
    LIMITER.get_or_init(RateLimiter::default)
}

/// Logs `args` at `level` unless more than [`BURST`] messages of the kind `key` were logged
/// in the last [`WINDOW`]; how many were left out is said with the next one let through.
pub fn log_limited(level: Level, key: &'static str, args: fmt::Arguments<'_>) {
    if !log::log_enabled!(target: "ovlfs", level) {
        return;
    }
    match limiter().admit(key, Instant::now()) {
        Some(0) => log::log!(target: "ovlfs", level, "{args}"),
        Some(n) => log::log!(
            target: "ovlfs",
            level,
            "{args} ({n} similar messages left out before this one)"
        ),
        None => {}
    }
}

/// [`log_limited`] at warn level.
pub fn warn_limited(key: &'static str, msg: impl fmt::Display) {
    log_limited(Level::Warn, key, format_args!("{msg}"));
}

/// [`log_limited`] at error level.
pub fn error_limited(key: &'static str, msg: impl fmt::Display) {
    log_limited(Level::Error, key, format_args!("{msg}"));
}

/// What to log about a request answered with `errno`, if it means trouble the user has to
/// hear about: a layer failing, the upper full, no fds left.
fn reply_error_report(errno: i32) -> Option<(Level, &'static str, &'static str)> {
    match errno {
        libc::EIO => Some((
            Level::Error,
            "reply-EIO",
            "a request failed with EIO: a layer's filesystem reports I/O errors",
        )),
        libc::ENOSPC | libc::EDQUOT => Some((
            Level::Warn,
            "reply-ENOSPC",
            "a request failed with ENOSPC/EDQUOT: the upper layer's filesystem is full or \
             over quota",
        )),
        libc::EMFILE | libc::ENFILE => Some((
            Level::Warn,
            "reply-EMFILE",
            "a request failed for lack of file descriptors (EMFILE/ENFILE): raise the \
             daemon's open-file limit",
        )),
        _ => None,
    }
}

/// Notes that a request is answered with `errno`: EIO, ENOSPC/EDQUOT and EMFILE/ENFILE are
/// logged, at most [`BURST`] a minute each; other errors are the caller's business.
pub fn reply_error(errno: i32) {
    if let Some((level, key, text)) = reply_error_report(errno) {
        log_limited(level, key, format_args!("{text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_line_format() {
        let line = format_line(
            Level::Warn,
            "Dec  7 21:30:05",
            "ovlfs[42]: /mnt/m: ",
            "",
            "unmount failed\tbusy",
        );
        assert_eq!(
            line,
            "<28>Dec  7 21:30:05 ovlfs[42]: /mnt/m: unmount failed busy"
        );
        let line = format_line(Level::Error, "Jan  1 00:00:00", "p: ", "fuser::x: ", "e");
        assert!(line.starts_with("<27>"), "{line}");
        assert!(line.ends_with("p: fuser::x: e"), "{line}");
        let long = "x".repeat(3 * MAX_LINE);
        assert!(format_line(Level::Debug, "s", "p", "", &long).len() <= MAX_LINE);
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp(0);
        assert_eq!(t.len(), 15, "{t:?}");
        assert_eq!(&t[6..7], " ");
        assert_eq!(t.as_bytes()[9], b':');
    }

    #[test]
    fn reply_errors_worth_a_line() {
        assert_eq!(
            reply_error_report(libc::EIO).map(|r| r.0),
            Some(Level::Error)
        );
        for e in [libc::ENOSPC, libc::EDQUOT, libc::EMFILE, libc::ENFILE] {
            assert_eq!(reply_error_report(e).map(|r| r.0), Some(Level::Warn), "{e}");
        }
        for e in [
            libc::ENOENT,
            libc::EACCES,
            libc::EEXIST,
            libc::EROFS,
            libc::ENODATA,
        ] {
            assert!(reply_error_report(e).is_none(), "{e}");
        }
    }

    #[test]
    fn rate_limit_per_key_and_window() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(r.admit("a", t0), Some(0));
        }
        assert_eq!(r.admit("a", t0), None);
        assert_eq!(r.admit("a", t0 + Duration::from_secs(1)), None);
        // Another kind has its own budget.
        assert_eq!(r.admit("b", t0), Some(0));
        // A new window reports what the last one left out.
        assert_eq!(r.admit("a", t0 + WINDOW), Some(2));
        assert_eq!(r.admit("a", t0 + WINDOW), Some(0));
    }
}
