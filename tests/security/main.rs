//! Security: the daemon never follows a symlink stored in a layer (docs/design.md, "Nodes and
//! the inode table"), never widens permissions, and survives hostile requests:
//!
//! - `symlinks_in_layers_*`: lowers and the upper hold symlinks pointing outside the layers
//!   (absolute, `../../..` chains, relative ones, a symlinked parent directory, a symlink in an
//!   upper layer shadowing a lower directory). The "outside" directory as the daemon would see it
//!   (targets resolved relative to the layer directories) is a tmpfs mounted `strictatime`,
//!   whose every entry is snapshotted with atime, mtime, ctime, mode, owner, content and
//!   xattrs: reads, listings, writes, creations, chmod/chown/xattr changes made by a daemon
//!   that followed a layer symlink all show there. Relative symlinks resolve to a different
//!   directory in the caller's view (the mount sits deeper), so operations through the mount may
//!   follow them legitimately, and their results must come from the caller-side directory.
//! - `*_swap_race`: a thread swaps (RENAME_EXCHANGE, directly in the layers) upper and lower
//!   directories and files with symlinks to the outside directory, and plants symlinks where
//!   the daemon is about to copy up parent directories, while several threads operate through
//!   the mount. The outside directory must stay untouched.
//! - `permissions_*`: with the daemon as root (`allow_other`, `default_permissions`), uid 1000
//!   cannot read or change uid 1001's 0600 file, cannot delete or rename in another's sticky
//!   directory, and copy-ups it triggers keep every mode and owner (never wider).
//! - `setuid_setgid_*`: setuid/setgid clearing on write, truncate, O_TRUNC, chown and chmod by
//!   a non-member, compared with the same operations on a plain directory of the host's
//!   filesystem (ext4 here) and, where available, on the kernel's overlayfs.
//! - `no_panic_*`: a storm of racing and malformed requests (concurrent rename/exchange/unlink/
//!   readdir/open on the same names, rm -r during readdir, 255/256/1024/1025-byte names, names
//!   with odd bytes and overlay-reserved names, 64 KiB xattr values, tiny xattr buffers, deleted
//!   open files, RENAME_WHITEOUT from a caller, 0/0 device nodes, huge offsets, fallocate
//!   modes, locks, O_TMPFILE): the daemon stays alive, logs no panic, answers no EIO, keeps
//!   serving, and exits 0 when unmounted.
//!
//! The tests live in submodules of `tests/security/`, one per concern: `symlinks`, `swap_race`,
//! `permissions`, `setuid` and `no_panic`; the shared helpers (the outside directory, daemon
//! health checks) stay here.
//!
//! CI: `cargo test --test security`.
//! Long: `OVLFS_RACE_SECS=120 OVLFS_STORM_SECS=300 cargo test --test security -- --nocapture`.

#[path = "../common/mod.rs"]
mod common;
mod no_panic;
mod permissions;
mod setuid;
mod swap_race;
mod symlinks;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Utilities
// ---------------------------------------------------------------------------------------------

pub(crate) fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

/// The daemon-side "outside" directory: a strictatime tmpfs with a sentinel tree.
pub(crate) struct Outside {
    path: PathBuf,
    _guard: MountGuard,
    /// Everything observable about its entries, atimes included (on a strictatime mount every
    /// read and listing updates them), taken without listing or reading anything.
    before: TreeSnapshot,
}

/// Every entry of the outside directory.
const OUTSIDE_ENTRIES: &[&str] = &["", "secret", "dir", "dir/inner", "empty"];

const DAEMON_SIDE: &[u8] = b"DAEMON-SIDE SECRET: never readable through the overlay\n";
pub(crate) const CALLER_SIDE: &[u8] = b"caller-side file\n";

impl Outside {
    pub(crate) fn new(path: &Path) -> Outside {
        mkdirs(path);
        let guard = MountGuard::mount(
            &["-t", "tmpfs", "-o", "size=4m,mode=755,strictatime", "tmpfs"],
            path,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        file_full(&path.join("secret"), DAEMON_SIDE, 0o640, 0, 0);
        write_file(&path.join("dir/inner"), DAEMON_SIDE);
        mkdirs(&path.join("empty"));
        set_xattr(&path.join("secret"), "user.sentinel", b"1");
        fix_times(path, 1_000_000_000);
        Outside {
            path: path.to_path_buf(),
            _guard: guard,
            before: snapshot_entries(path, OUTSIDE_ENTRIES, Fields::UNREAD),
        }
    }

    /// Panics with every trace the daemon left in the outside directory.
    pub(crate) fn assert_untouched(&self, what: &str) {
        let now = snapshot_entries(&self.path, OUTSIDE_ENTRIES, Fields::UNREAD);
        let mut d = diff_trees("before", &self.before, "now", &now);
        // Listing (after the comparison, it changes atimes): nothing was created.
        for (dir, want) in [
            ("", &["dir", "empty", "secret"][..]),
            ("dir", &["inner"]),
            ("empty", &[]),
        ] {
            let have: Vec<String> = names(&self.path.join(dir)).into_iter().collect();
            if have != want {
                d.push(format!("/{dir} now holds {have:?} instead of {want:?}"));
            }
        }
        assert!(
            d.is_empty(),
            "{what}: the directory outside the layers was touched ({} change(s); a changed atime \
             means read or listed, mtime written, ctime changed):\n  {}",
            d.len(),
            d.join("\n  ")
        );
        // Content (read last: it changes the atimes we no longer compare).
        assert_eq!(
            fs::read(self.path.join("secret")).expect("read secret"),
            DAEMON_SIDE,
            "{what}: outside/secret content changed"
        );
    }
}

/// The caller-side twin of the outside directory (where relative symlinks lead in the
/// caller's view).
pub(crate) fn caller_side(path: &Path) {
    write_file(&path.join("secret"), CALLER_SIDE);
    write_file(&path.join("dir/inner"), CALLER_SIDE);
    write_file(&path.join("caller_marker"), b"");
    mkdirs(&path.join("empty"));
}

/// Removes a tree through the mount without following symlinks (like rm -rf).
pub(crate) fn rm_rf(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if md.is_dir() {
        for e in fs::read_dir(p)? {
            rm_rf(&e?.path())?;
        }
        fs::remove_dir(p)
    } else {
        fs::remove_file(p)
    }
}

pub(crate) fn assert_daemon_healthy(m: &OvlfsMount, what: &str) {
    m.assert_serving(what);
    fs::read_dir(m.path()).unwrap_or_else(|e| panic!("{what}: readdir of the mount root: {e}"));
    m.assert_no_panic_logged(what);
}

pub(crate) fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
