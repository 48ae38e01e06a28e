//! Directory redirects between ovlfs and the kernel (`redirect_dir=on`): ovlfs writes them
//! as the kernel does and the kernel reads them back; the kernel's are read back by ovlfs.

use std::fs;
use std::path::Path;

use super::*;

/// Lower directories to rename: nested ones, one to move into, and a file hard-linked from
/// inside one of them.
fn lower_dirs(lower: &Path) {
    mkdirs(&lower.join("top/sub/deep"));
    mkdirs(&lower.join("other"));
    write_file(&lower.join("top/f"), "f\n");
    write_file(&lower.join("top/sub/g"), "g\n");
    write_file(&lower.join("top/sub/deep/h"), "h\n");
    write_file(&lower.join("other/o"), "o\n");
    write_file(&lower.join("outside"), "linked\n");
    hardlink(&lower.join("outside"), &lower.join("top/sub/linked"));
}

/// Renames in the same directory, twice, into another directory, out of a renamed one, and a
/// new directory where a renamed one was; then a write to a hard link inside a moved
/// directory (whose node was first looked up by its other name).
fn rename_dirs(mnt: &Path) {
    fs::metadata(mnt.join("outside")).expect("stat outside");
    let mv = |a: &str, b: &str| {
        fs::rename(mnt.join(a), mnt.join(b)).unwrap_or_else(|e| panic!("mv {a} {b}: {e}"))
    };
    mv("top", "top2");
    mv("top2/sub", "other/sub2");
    mv("top2", "top3");
    mkdirs(&mnt.join("top"));
    write_file(&mnt.join("top/new"), "new\n");
    mv("other/sub2/deep", "deep2");
    write_file(&mnt.join("deep2/h2"), "h2\n");
    append(&mnt.join("other/sub2/linked"), "more\n");
}

fn layers(root: &Path) {
    for d in ["lower", "upper", "work", "kmnt", "mnt"] {
        mkdirs(&root.join(d));
    }
    lower_dirs(&root.join("lower"));
}

fn redirect_of(p: &Path) -> Option<String> {
    xattrs_of(p, true)
        .into_iter()
        .find(|(name, _)| name == "trusted.overlay.redirect")
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
}

/// ovlfs with `redirect_dir=on` moves lower directories without copying their files, with the
/// redirects the kernel writes; the kernel (`redirect_dir=on`) and a later ovlfs mount show
/// what ovlfs showed.
#[test]
fn ovlfs_redirects_read_by_kernel() {
    const TEST: &str = "ovlfs_redirects_read_by_kernel";
    if !require_kernel_overlay(TEST) {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    let ovlfs = Ovlfs::new([root.join("lower")]).upper(root.join("upper"), root.join("work"));
    let m = ovlfs
        .clone()
        .opt("redirect_dir=on")
        .mount(&root.join("mnt"));
    let mnt = m.path().to_path_buf();
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        rename_dirs(&mnt);
        snapshot_tree(&mnt)
    });
    drop(m);
    let upper = root.join("upper");
    assert_eq!(redirect_of(&upper.join("top3")).as_deref(), Some("top"));
    assert_eq!(
        redirect_of(&upper.join("other/sub2")).as_deref(),
        Some("/top/sub")
    );
    assert_eq!(
        redirect_of(&upper.join("deep2")).as_deref(),
        Some("/top/sub/deep")
    );
    for copied in ["top3/f", "other/sub2/g", "deep2/h"] {
        assert!(!upper.join(copied).exists(), "{copied} was copied up");
    }
    let kernel = {
        let k = KernelOverlay::mount(
            &[&root.join("lower")],
            Some((&upper, &root.join("work"))),
            &["redirect_dir=on"],
            &root.join("kmnt"),
        );
        snapshot_tree(k.path())
    };
    assert_trees_equal("ovlfs", &seen, "kernel", &kernel);
    // Read back without the option: ovlfs always follows redirects.
    let m = ovlfs.mount(&root.join("mnt"));
    let mnt = m.path().to_path_buf();
    let again = with_watchdog(BODY_SECS, m.path(), move || snapshot_tree(&mnt));
    assert_trees_equal("ovlfs", &seen, "ovlfs remounted", &again);
}

/// The same renames under the kernel (`redirect_dir=on`): ovlfs shows its upper as the kernel
/// did.
#[test]
fn kernel_redirects_read_by_ovlfs() {
    const TEST: &str = "kernel_redirects_read_by_ovlfs";
    if !require_kernel_overlay(TEST) {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    let upper = root.join("upper");
    let kernel = {
        let k = KernelOverlay::mount(
            &[&root.join("lower")],
            Some((&upper, &root.join("work"))),
            &["redirect_dir=on"],
            &root.join("kmnt"),
        );
        rename_dirs(k.path());
        snapshot_tree(k.path())
    };
    assert!(
        redirect_of(&upper.join("deep2")).is_some(),
        "kernel wrote redirects"
    );
    let m = Ovlfs::new([root.join("lower")])
        .upper(&upper, root.join("work"))
        .mount(&root.join("mnt"));
    let mnt = m.path().to_path_buf();
    let seen = with_watchdog(BODY_SECS, m.path(), move || snapshot_tree(&mnt));
    assert_trees_equal("kernel", &kernel, "ovlfs", &seen);
}

/// A directory moved out of a directory that an earlier mount (now a lower layer) had moved:
/// its redirect names the path through the moved parent, whose own redirect leads on to the
/// lowest layer. Written by the kernel and by ovlfs, read by both.
#[test]
fn redirect_through_a_lower_moved_dir() {
    const TEST: &str = "redirect_through_a_lower_moved_dir";
    if !require_kernel_overlay(TEST) {
        return;
    }
    for writer in ["kernel", "ovlfs"] {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        for d in [
            "l0/a/dir/pop",
            "l0/a/empty",
            "u1",
            "w1",
            "u2",
            "w2",
            "mnt",
            "kmnt",
        ] {
            mkdirs(&root.join(d));
        }
        write_file(&root.join("l0/a/dir/pop/b"), "b\n");
        write_file(&root.join("l0/a/dir/f"), "f\n");
        let l0 = root.join("l0");
        let u1 = root.join("u1");
        // Each step on its own mount: the upper of the first is a lower of the second.
        let steps: [(Vec<&Path>, &str, &str, &str, &str); 2] = [
            (vec![&l0], "u1", "w1", "a/dir", "a/empty/dir"),
            (vec![&u1, &l0], "u2", "w2", "a/empty/dir/pop", "a/empty/pop"),
        ];
        for (lowers, upper, work, from, to) in steps {
            let (upper, work) = (root.join(upper), root.join(work));
            let (from, to) = (from.to_string(), to.to_string());
            if writer == "kernel" {
                let k = KernelOverlay::mount(
                    &lowers,
                    Some((&upper, &work)),
                    &["redirect_dir=on"],
                    &root.join("kmnt"),
                );
                fs::rename(k.join(&from), k.join(&to)).expect("kernel rename");
            } else {
                let m = Ovlfs::new(lowers)
                    .upper(&upper, &work)
                    .opt("redirect_dir=on")
                    .mount(&root.join("mnt"));
                let mnt = m.path().to_path_buf();
                with_watchdog(BODY_SECS, m.path(), move || {
                    fs::rename(mnt.join(from), mnt.join(to)).expect("ovlfs rename")
                });
            }
        }
        let layers = [root.join("u2"), u1.clone(), l0.clone()];
        let layers: Vec<&Path> = layers.iter().map(|p| p.as_path()).collect();
        let kernel = {
            let k = KernelOverlay::mount(&layers, None, &[], &root.join("kmnt"));
            snapshot_tree(k.path())
        };
        let m = Ovlfs::new(layers).mount(&root.join("mnt"));
        let mnt = m.path().to_path_buf();
        let (seen, moved) = with_watchdog(BODY_SECS, m.path(), move || {
            let moved = fs::read_to_string(mnt.join("a/empty/pop/b"));
            (snapshot_tree(&mnt), moved.ok())
        });
        drop(m);
        assert_eq!(moved.as_deref(), Some("b\n"), "written by {writer}");
        assert_trees_equal("kernel", &kernel, &format!("ovlfs ({writer} wrote)"), &seen);
    }
}
