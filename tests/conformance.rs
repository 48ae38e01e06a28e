//! POSIX corner cases where ovlfs once differed from the kernel's overlayfs, each run side
//! by side with it (the commands of the external conformance runs behind these cases are in
//! docs/comparison.md, "External suites").

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

const BODY_SECS: u64 = 30;

/// `lchown(path, -1, -1)` on a fresh upper file, a lower file, a lower directory and a lower
/// symlink: whether the change time moved and whether the object was copied up.
fn chown_nothing_transcript(mnt: &Path, upper: &Path) -> Vec<String> {
    std::fs::write(mnt.join("new"), "upper\n").unwrap();
    let mut t = Vec::new();
    for name in ["new", "lf", "ld", "ls"] {
        let p = mnt.join(name);
        let before = std::fs::symlink_metadata(&p).unwrap();
        // Change times have nanoseconds on the layers' filesystem; a tick is enough.
        std::thread::sleep(Duration::from_millis(20));
        let r = rustix::fs::chownat(
            rustix::fs::CWD,
            &p,
            None,
            None,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        );
        let after = std::fs::symlink_metadata(&p).unwrap();
        let moved = (after.ctime(), after.ctime_nsec()) != (before.ctime(), before.ctime_nsec());
        t.push(format!(
            "{name}: {r:?}, ctime moved: {moved}, in upper: {}, owner {}:{}",
            upper.join(name).symlink_metadata().is_ok(),
            after.uid(),
            after.gid()
        ));
    }
    t
}

/// chown(-1, -1) changes no owner but is not a no-op: the kernel copies the object up and
/// moves its change time (as Linux does on any filesystem).
#[test]
fn chown_to_nothing_moves_ctime_like_the_kernel() {
    if !require_kernel_overlay("chown_to_nothing_moves_ctime_like_the_kernel") {
        return;
    }
    let (_t, root) = scratch(&["l", "u_ovl", "w_ovl", "u_k", "w_k", "m_ovl", "m_k"]);
    write_file(&root.join("l/lf"), "lower\n");
    mkdirs(&root.join("l/ld"));
    std::os::unix::fs::symlink("lf", root.join("l/ls")).unwrap();
    let kern = KernelOverlay::mount(
        &[&root.join("l")],
        Some((&root.join("u_k"), &root.join("w_k"))),
        &[],
        &root.join("m_k"),
    );
    let ovl = Ovlfs::new([root.join("l")])
        .upper(root.join("u_ovl"), root.join("w_ovl"))
        .mount(&root.join("m_ovl"));
    let (mk, mo) = (kern.path().to_path_buf(), ovl.path().to_path_buf());
    let (uk, uo) = (root.join("u_k"), root.join("u_ovl"));
    with_watchdog(BODY_SECS, ovl.path(), move || {
        let k = chown_nothing_transcript(&mk, &uk);
        let o = chown_nothing_transcript(&mo, &uo);
        assert!(
            k[0].contains("ctime moved: true"),
            "fixture assumption: the kernel moves the change time: {k:#?}"
        );
        assert_eq!(o, k, "ovlfs (left) and the kernel (right)");
    });
    drop(ovl);
    drop(kern);
}
