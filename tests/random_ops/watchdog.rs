//! The per-operation watchdog.

use super::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Per-operation watchdog: aborts the FUSE connection of a mount when one operation hangs
// ---------------------------------------------------------------------------------------------

pub(crate) struct Watch {
    inner: Arc<WatchInner>,
    thread: Option<thread::JoinHandle<()>>,
}

struct WatchInner {
    armed: Mutex<Option<(Instant, String)>>,
    mounts: Mutex<Vec<PathBuf>>,
    fired: Mutex<Option<String>>,
    stop: AtomicBool,
    limit: Duration,
}

impl Watch {
    pub(crate) fn new(limit: Duration) -> Watch {
        let inner = Arc::new(WatchInner {
            armed: Mutex::new(None),
            mounts: Mutex::new(Vec::new()),
            fired: Mutex::new(None),
            stop: AtomicBool::new(false),
            limit,
        });
        let i2 = inner.clone();
        let thread = thread::Builder::new()
            .name("op-watchdog".into())
            .spawn(move || {
                while !i2.stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                    let mut armed = i2.armed.lock().unwrap_or_else(|p| p.into_inner());
                    let Some((t, label)) = armed.as_ref() else {
                        continue;
                    };
                    if t.elapsed() < i2.limit {
                        continue;
                    }
                    let label = label.clone();
                    *armed = None;
                    drop(armed);
                    let mut notes = Vec::new();
                    for m in i2.mounts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                        match abort_fuse_mount(m) {
                            Ok(()) => notes
                                .push(format!("aborted the FUSE connection of {}", m.display())),
                            Err(e) => notes.push(format!("abort {}: {e}", m.display())),
                        }
                    }
                    *i2.fired.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                        "WATCHDOG: {label} did not finish within {:?}; {}",
                        i2.limit,
                        notes.join("; ")
                    ));
                }
            })
            .expect("spawn watchdog");
        Watch {
            inner,
            thread: Some(thread),
        }
    }

    pub(crate) fn set_mounts(&self, m: &[&Path]) {
        *self.inner.mounts.lock().unwrap_or_else(|p| p.into_inner()) =
            m.iter().map(|p| p.to_path_buf()).collect();
    }

    pub(crate) fn arm(&self, label: String) {
        *self.inner.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), label));
    }

    /// Disarm; the watchdog's message if it fired.
    pub(crate) fn disarm(&self) -> Option<String> {
        *self.inner.armed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.inner
            .fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
