//! The merged read-only view: differential tests against the kernel's overlayfs, and focused
//! tests (ovlfs only) for the on-disk formats the kernel does not read
//! (docs/format.md, "Read, in every layer").
//!
//! Submodules (in `tests/read_view/`): `fixture` (the differential fixture's layers),
//! `differential` (ovlfs against the kernel), and the focused tests: `whiteouts` (whiteout and
//! opaque-directory forms), `xattrs` (overlay-private xattrs), `inodes` (inode numbers and
//! readdir) and `reads` (contents, symlinks, statfs, read-only mounts, permissions, concurrency).

#[path = "../common/mod.rs"]
mod common;
mod differential;
mod fixture;
mod inodes;
mod reads;
mod whiteouts;
mod xattrs;

use common::*;
use std::fs;
use std::path::Path;

/// Seconds any single test body may take before the watchdog aborts the FUSE connection.
pub(crate) const BODY_SECS: u64 = 90;

pub(crate) fn lstat_errno(p: &Path) -> Option<i32> {
    errno(&fs::symlink_metadata(p))
}

pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 32) as u8
                ^ seed
        })
        .collect()
}

pub(crate) fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
