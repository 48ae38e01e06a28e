//! Shared harness for the integration tests: mount guards for ovlfs and the kernel's overlayfs,
//! a watchdog that aborts a hung FUSE connection, tree snapshots with a readable diff, a
//! collector of EIO-like failures, and fixture builders for every on-disk whiteout / opaque
//! format ovlfs reads (docs/format.md).
//!
//! Every test binary uses it: `mod common;` in a single-file test (`tests/NAME.rs`),
//! `#[path = "../common/mod.rs"] mod common;` in a test directory (`tests/NAME/main.rs`); not
//! every binary uses every helper. Split by concern (`process`, `mountinfo`, `ovlfs`, `kernel`,
//! `watchdog`, `fsutil`, `snapshot`, `eio`, `fixtures`, `scratch`, `shell`, `rng`); everything
//! is re-exported here.
#![allow(dead_code)]

mod eio;
mod fixtures;
mod fsutil;
mod kernel;
mod mountinfo;
mod ovlfs;
mod process;
pub mod rng;
pub mod scratch;
mod shell;
mod snapshot;
mod watchdog;

#[allow(unused_imports)]
pub use eio::*;
#[allow(unused_imports)]
pub use fixtures::*;
#[allow(unused_imports)]
pub use fsutil::*;
#[allow(unused_imports)]
pub use kernel::*;
#[allow(unused_imports)]
pub use mountinfo::*;
#[allow(unused_imports)]
pub use ovlfs::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)] // each test binary uses a different subset
pub use scratch::{MountGuard, daemons_gone, kill_pid, sorted_names, work_leftovers};
#[allow(unused_imports)]
pub use shell::*;
#[allow(unused_imports)]
pub use snapshot::*;
#[allow(unused_imports)]
pub use watchdog::*;

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

/// Whether `program` is an executable file in a `PATH` directory.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Prints `SKIPPED: test: why` (visibly); under CI=true panics instead.
pub fn skip_or_fail(test: &str, why: &str) {
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

/// Make `/dev/fuse` usable by every user, as distributions ship it (root only).
pub fn dev_fuse_usable() {
    if !is_root() {
        return;
    }
    if let Ok(md) = fs::metadata("/dev/fuse")
        && md.permissions().mode() & 0o006 != 0o006
    {
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666));
    }
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
