//! Uppers the kernel's overlayfs and ovlfs hand to each other, in the forms only some readers
//! write: the kernel's inode index (`index=on`: hard links copied up one name at a time) and
//! directory redirects (`redirect_dir=on`).
//!
//! Submodules: `redirect` (ovlfs writing redirects with `redirect_dir=on`, read back by the
//! kernel, and the kernel's read back by ovlfs).

#[path = "../common/mod.rs"]
mod common;
mod redirect;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

const BODY_SECS: u64 = 60;

/// What both mounts are compared on: contents, modes, st_nlink, hard-link groups and st_ino.
const VIEW: Fields = Fields {
    ino: true,
    ..Fields::MERGED
};

/// A snapshot of a merged view with [`VIEW`]. The root's inode number is left out: the
/// kernel reports the upper root's, ovlfs the lower root's.
fn view(mnt: &Path) -> TreeSnapshot {
    let mut snap = snapshot_tree_with(mnt, VIEW);
    if let Some(root) = snap.entries.get_mut(Path::new("")) {
        root.ino = None;
    }
    snap
}

fn append(p: &Path, data: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(data.as_bytes()).expect("append");
}

/// A lower with two hard-linked files (three names and two) and a plain one.
fn linked_lower(lower: &Path) {
    mkdirs(&lower.join("d"));
    write_file(&lower.join("a"), "old a\n");
    hardlink(&lower.join("a"), &lower.join("b"));
    hardlink(&lower.join("a"), &lower.join("d/c"));
    write_file(&lower.join("h1"), "h\n");
    hardlink(&lower.join("h1"), &lower.join("d/h2"));
    write_file(&lower.join("single"), "single\n");
}

fn kernel_view(root: &Path, opts: &[&str]) -> TreeSnapshot {
    let k = KernelOverlay::mount(
        &[&root.join("lower")],
        Some((&root.join("upper"), &root.join("work"))),
        opts,
        &root.join("kmnt"),
    );
    view(k.path())
}

/// The kernel (`index=on`) copies up one name of each hard-linked file; ovlfs mounted on
/// that upper and workdir shows every name with the indexed copy's data, mode, link count and
/// inode number, as the kernel did. Then ovlfs deletes, renames and writes names of those
/// files, and the kernel (`index=on` again) shows what ovlfs showed.
#[test]
fn kernel_index_keeps_hard_links_joined() {
    const TEST: &str = "kernel_index_keeps_hard_links_joined";
    if !require_kernel_overlay(TEST) {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    for d in ["lower", "upper", "work", "kmnt", "mnt"] {
        mkdirs(&root.join(d));
    }
    linked_lower(&root.join("lower"));
    let kernel_before = {
        let k = KernelOverlay::mount(
            &[&root.join("lower")],
            Some((&root.join("upper"), &root.join("work"))),
            &["index=on"],
            &root.join("kmnt"),
        );
        append(&k.join("a"), "new a\n");
        chmod(&k.join("d/h2"), 0o600);
        let snap = view(k.path());
        assert_eq!(fs::metadata(k.join("b")).unwrap().nlink(), 3);
        snap
    };
    let index = sorted_names(&root.join("work/index"));
    assert_eq!(index.len(), 2, "the kernel indexed both files: {index:?}");
    assert!(
        !root.join("upper/b").exists() && !root.join("upper/h1").exists(),
        "the kernel copied up only the names it changed"
    );

    let m = Ovlfs::new([root.join("lower")])
        .upper(root.join("upper"), root.join("work"))
        .mount(&root.join("mnt"));
    let mnt = m.path().to_path_buf();
    let after_ovlfs = with_watchdog(BODY_SECS, m.path(), move || {
        let seen = view(&mnt);
        assert_trees_equal("kernel", &kernel_before, "ovlfs", &seen);
        assert_eq!(
            fs::read_to_string(mnt.join("d/c")).unwrap(),
            "old a\nnew a\n"
        );
        // Namespace changes on names the kernel left in the lower only.
        fs::remove_file(mnt.join("d/c")).expect("rm d/c");
        fs::rename(mnt.join("b"), mnt.join("x")).expect("mv b x");
        append(&mnt.join("x"), "via x\n");
        // A write through a name the kernel left in the lower only goes to the indexed copy.
        append(&mnt.join("h1"), "via h1\n");
        assert_eq!(fs::read_to_string(mnt.join("d/h2")).unwrap(), "h\nvia h1\n");
        fs::remove_file(mnt.join("h1")).expect("rm h1");
        let md = fs::metadata(mnt.join("a")).unwrap();
        assert_eq!(md.nlink(), 2, "a and x are left");
        assert_eq!(md.ino(), fs::metadata(mnt.join("x")).unwrap().ino());
        assert_eq!(fs::metadata(mnt.join("d/h2")).unwrap().nlink(), 1);
        view(&mnt)
    });
    drop(m);
    assert_eq!(sorted_names(&root.join("work/index")), index, "index kept");
    let kernel_after = kernel_view(root, &["index=on"]);
    assert_trees_equal("ovlfs", &after_ovlfs, "kernel", &kernel_after);
}

/// Without a kernel index nothing changes: an upper where ovlfs copied a hard-linked file up
/// (every name at once) reads the same through the kernel with `index=on`.
#[test]
fn ovlfs_hard_link_copy_up_reads_the_same_with_kernel_index() {
    const TEST: &str = "ovlfs_hard_link_copy_up_reads_the_same_with_kernel_index";
    if !require_kernel_overlay(TEST) {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    for d in ["lower", "upper", "work", "kmnt", "mnt"] {
        mkdirs(&root.join(d));
    }
    linked_lower(&root.join("lower"));
    let m = Ovlfs::new([root.join("lower")])
        .upper(root.join("upper"), root.join("work"))
        .mount(&root.join("mnt"));
    let mnt = m.path().to_path_buf();
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        append(&mnt.join("b"), "new\n");
        snapshot_tree_with(&mnt, Fields::MERGED)
    });
    drop(m);
    assert!(!root.join("work/index").exists(), "ovlfs writes no index");
    let k = KernelOverlay::mount(
        &[&root.join("lower")],
        Some((&root.join("upper"), &root.join("work"))),
        &["index=on"],
        &root.join("kmnt"),
    );
    let kernel = snapshot_tree_with(k.path(), Fields::MERGED);
    assert_trees_equal("ovlfs", &seen, "kernel", &kernel);
}
