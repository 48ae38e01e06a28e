//! Overlays nested on ovlfs: the overlay's own xattrs (`trusted.overlay.*`, `user.overlay.*`)
//! set through the mount are stored escaped (`NS.overlay.overlay.*`) and read back under the
//! name given, as the kernel's overlayfs (≥ 6.7) does — compared side by side with it — so an
//! overlay whose layers live on an ovlfs mount keeps its markers there.

mod common;

use common::*;
use std::fs;
use std::path::Path;

const BODY_SECS: u64 = 60;

fn removexattr(p: &Path, name: &str) -> std::io::Result<()> {
    rustix::fs::lremovexattr(p, name).map_err(Into::into)
}

/// What set/get/list/remove of overlay names through a mount give, and what lands on disk.
fn xattr_transcript(mnt: &Path, upper: &Path) -> Vec<String> {
    let f = mnt.join("f");
    let mut t = Vec::new();
    for (name, value) in [
        ("trusted.overlay.opaque", &b"y"[..]),
        ("trusted.overlay.custom", b"c"),
        ("trusted.overlay.overlay.deeper", b"d"),
    ] {
        t.push(format!(
            "set {name}: {:?}",
            errno(&try_set_xattr(&f, name, value))
        ));
        t.push(format!(
            "get {name}: {:?}",
            get_xattr(&f, name).map_err(|e| e.raw_os_error())
        ));
    }
    let mut listed: Vec<String> = list_xattrs(&f)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.contains("overlay"))
        .collect();
    listed.sort();
    t.push(format!("listed: {listed:?}"));
    let mut stored: Vec<String> = list_xattrs(&upper.join("f"))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.contains("overlay.overlay"))
        .collect();
    stored.sort();
    t.push(format!("stored: {stored:?}"));
    t.push(format!(
        "remove trusted.overlay.custom: {:?}",
        errno(&removexattr(&f, "trusted.overlay.custom"))
    ));
    t.push(format!(
        "remove it again: {:?}",
        errno(&removexattr(&f, "trusted.overlay.custom"))
    ));
    t
}

/// `trusted.overlay.*` through ovlfs and through the kernel's overlayfs: the same answers
/// and the same escaped names on disk.
#[test]
fn overlay_xattrs_are_escaped_like_the_kernel() {
    if !require_kernel_overlay("overlay_xattrs_are_escaped_like_the_kernel") {
        return;
    }
    let (_t, root) = scratch(&["l", "u_ovl", "w_ovl", "u_k", "w_k", "m_ovl", "m_k"]);
    write_file(&root.join("l/f"), "lower\n");
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
        let k = xattr_transcript(&mk, &uk);
        let o = xattr_transcript(&mo, &uo);
        assert!(
            k.iter()
                .any(|l| l.contains("trusted.overlay.overlay.opaque")),
            "fixture assumption: this kernel escapes overlay xattrs: {k:#?}"
        );
        assert_eq!(o, k, "ovlfs (left) and the kernel (right)");
    });
    drop(ovl);
    drop(kern);
}

/// ovlfs over layers on an ovlfs mount: the inner mount copies up, whites out (as xattr
/// whiteouts: the outer mount refuses 0/0 devices, as the kernel does) and makes opaque
/// directories, and reads the opaque marker and whiteout its lower carries.
#[test]
fn ovlfs_nested_on_ovlfs() {
    if !require_root("ovlfs_nested_on_ovlfs") {
        return;
    }
    let (_t, root) = scratch(&["outer_l", "outer_u", "outer_w", "outer", "inner"]);
    let outer = Ovlfs::new([root.join("outer_l")])
        .upper(root.join("outer_u"), root.join("outer_w"))
        .mount(&root.join("outer"));
    let o = outer.path().to_path_buf();
    // The inner layers, made through the outer mount.
    for d in ["l2/d", "l2/keep", "l1/d", "u", "w"] {
        fs::create_dir_all(o.join(d)).unwrap();
    }
    write_file(&o.join("l2/d/hidden"), "below an opaque dir\n");
    write_file(&o.join("l2/gone"), "whited out in l1\n");
    write_file(&o.join("l2/keep/f"), "lower file\n");
    write_file(&o.join("l2/del"), "deleted through the inner mount\n");
    write_file(&o.join("l1/d/top"), "top\n");
    set_xattr(&o.join("l1/d"), "trusted.overlay.opaque", b"y");
    write_file(&o.join("l1/gone"), "");
    set_xattr(&o.join("l1/gone"), "trusted.overlay.whiteout", b"y");
    set_xattr(&o.join("l1"), "trusted.overlay.opaque", b"x");
    let inner = Ovlfs::new([o.join("l1"), o.join("l2")])
        .upper(o.join("u"), o.join("w"))
        .opt("whiteout=xattr")
        .mount(&root.join("inner"));
    let i = inner.path().to_path_buf();
    let ou = root.join("outer_u");
    with_watchdog(BODY_SECS, inner.path(), move || {
        // What the inner lower says.
        assert_eq!(names(&i.join("d")), ["top"], "opaque d hides l2/d");
        assert_eq!(errno(&fs::metadata(i.join("gone"))), Some(libc::ENOENT));
        // Copy-up, whiteout, opaque directory through the inner mount.
        fs::write(i.join("keep/f"), "changed\n").expect("copy-up through the inner mount");
        fs::remove_file(i.join("del")).expect("delete a lower file");
        fs::remove_dir_all(i.join("keep")).expect("rm -rf keep");
        fs::create_dir(i.join("keep")).expect("mkdir over it");
        assert!(names(&i.join("keep")).is_empty(), "new keep is opaque");
        assert_eq!(errno(&fs::metadata(i.join("del"))), Some(libc::ENOENT));
        // Inside the outer upper, the inner markers are escaped.
        let opaque = get_xattr(&ou.join("u/keep"), "trusted.overlay.overlay.opaque");
        assert_eq!(
            opaque.ok().as_deref(),
            Some(&b"y"[..]),
            "inner opaque, escaped"
        );
        let wh = get_xattr(&ou.join("u/del"), "trusted.overlay.overlay.whiteout");
        assert!(wh.is_ok(), "inner whiteout, escaped: {wh:?}");
    });
    drop(inner);
    // Remounted, the inner overlay shows the same.
    let inner = Ovlfs::new([o.join("l1"), o.join("l2")])
        .upper(o.join("u"), o.join("w"))
        .opt("whiteout=xattr")
        .mount(&root.join("inner"));
    assert!(names(&inner.join("keep")).is_empty());
    assert_eq!(errno(&fs::metadata(inner.join("del"))), Some(libc::ENOENT));
    assert_eq!(names(&inner.join("d")), ["top"]);
    drop(inner);
    drop(outer);
}

/// The kernel's overlayfs (`userxattr`) over lower layers on an ovlfs mount reads the
/// `user.overlay.*` markers stored (escaped) through ovlfs.
#[test]
fn kernel_overlay_over_ovlfs_lowers() {
    if !require_kernel_overlay("kernel_overlay_over_ovlfs_lowers") {
        return;
    }
    let (_t, root) = scratch(&["outer_l", "outer_u", "outer_w", "outer", "ku", "kw", "km"]);
    let outer = Ovlfs::new([root.join("outer_l")])
        .upper(root.join("outer_u"), root.join("outer_w"))
        .mount(&root.join("outer"));
    let o = outer.path().to_path_buf();
    for d in ["l2/d", "l1/d"] {
        fs::create_dir_all(o.join(d)).unwrap();
    }
    write_file(&o.join("l2/d/hidden"), "below an opaque dir\n");
    write_file(&o.join("l2/f"), "lower\n");
    write_file(&o.join("l1/d/top"), "top\n");
    set_xattr(&o.join("l1/d"), "user.overlay.opaque", b"y");
    let kern = KernelOverlay::mount(
        &[&o.join("l1"), &o.join("l2")],
        Some((&root.join("ku"), &root.join("kw"))),
        &["userxattr"],
        &root.join("km"),
    );
    let k = kern.path().to_path_buf();
    with_watchdog(BODY_SECS, outer.path(), move || {
        assert_eq!(
            names(&k.join("d")),
            ["top"],
            "the kernel reads the escaped opaque"
        );
        fs::write(k.join("f"), "changed\n").expect("copy-up from an ovlfs lower");
        assert_eq!(fs::read_to_string(k.join("f")).unwrap(), "changed\n");
        fs::remove_file(k.join("d/top")).expect("whiteout");
        assert!(names(&k.join("d")).is_empty());
    });
    drop(kern);
    drop(outer);
}
