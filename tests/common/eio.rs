//! Collecting the failures that mean a broken daemon rather than a lost race or a refused
//! request, from workloads where most errors are expected.

use super::*;
use std::fmt::Display;

/// EIO (also what the daemon answers for a request whose handler panicked), and ENOTCONN /
/// ECONNABORTED (the FUSE connection is gone: the daemon died or was aborted).
pub const DAEMON_FAILURE_ERRNOS: [i32; 3] = [libc::EIO, libc::ENOTCONN, libc::ECONNABORTED];

/// A record, shared between threads (clones share it), of the operations that failed with one
/// of [`DAEMON_FAILURE_ERRNOS`].
#[derive(Clone, Default)]
pub struct EioLog(Arc<Mutex<Vec<(i32, String)>>>);

impl EioLog {
    pub fn new() -> EioLog {
        EioLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(i32, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `what: error` when `r` failed with one of [`DAEMON_FAILURE_ERRNOS`]; returns
    /// whether it did.
    pub fn check<T>(&self, what: impl Display, r: &io::Result<T>) -> bool {
        match r {
            Err(e) => match e.raw_os_error() {
                Some(n) if DAEMON_FAILURE_ERRNOS.contains(&n) => {
                    self.lock().push((n, format!("{what}: {e}")));
                    true
                }
                _ => false,
            },
            Ok(_) => false,
        }
    }

    /// Every recorded failure, in order.
    pub fn all(&self) -> Vec<String> {
        self.lock().iter().map(|(_, s)| s.clone()).collect()
    }

    /// The recorded failures other than EIO: the connection was lost.
    pub fn disconnects(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(n, _)| *n != libc::EIO)
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Panics, showing the first `max` failures and the daemon's stderr, when any was recorded.
    pub fn assert_none(&self, what: &str, max: usize, daemon_stderr: &str) {
        let all = self.all();
        assert!(
            all.is_empty(),
            "{what}: {} operations failed with EIO/ENOTCONN/ECONNABORTED (a caught panic answers \
             EIO; first {}: {:?}); daemon stderr:\n{daemon_stderr}",
            all.len(),
            max.min(all.len()),
            &all[..all.len().min(max)]
        );
    }
}
