//! Focused tests (ovlfs only): whiteout and opaque-directory forms.

use super::*;
use std::collections::BTreeMap;

/// Check that `visible` paths exist, `hidden` paths give ENOENT, and that none of the hidden
/// names is listed by its parent's readdir. Collects all failures.
fn check_visibility(mnt: &Path, visible_paths: &[String], hidden: &[String]) {
    let mut fails = Vec::new();
    for v in visible_paths {
        if let Err(e) = fs::symlink_metadata(mnt.join(v)) {
            fails.push(format!("{v} should be visible, lstat gives {e}"));
        }
    }
    for h in hidden {
        let p = mnt.join(h);
        let e = lstat_errno(&p);
        if e != Some(libc::ENOENT) {
            fails.push(format!(
                "{h} should be hidden, lstat gives {}",
                errno_name(e)
            ));
        }
        let parent = p.parent().expect("parent");
        let name = p.file_name().expect("name");
        if let Ok(ents) = read_dir_raw(parent)
            && ents.iter().any(|d| d.name == name)
        {
            fails.push(format!("{h} should be hidden, but readdir lists it"));
        }
    }
    assert!(
        fails.is_empty(),
        "visibility failures:\n  {}",
        fails.join("\n  ")
    );
}

#[derive(Clone, Copy, Debug)]
enum Wh {
    Chardev,
    XattrTrusted,
    XattrUser,
    Aufs,
}

impl Wh {
    fn tag(self) -> &'static str {
        match self {
            Wh::Chardev => "cd",
            Wh::XattrTrusted => "xt",
            Wh::XattrUser => "xu",
            Wh::Aufs => "au",
        }
    }

    /// Create a whiteout for `dir/name`; returns the names of the artifacts it created.
    fn make(self, dir: &Path, name: &str) -> String {
        mkdirs(dir);
        match self {
            Wh::Chardev => whiteout_chardev(&dir.join(name)),
            Wh::XattrTrusted => whiteout_xattr(&dir.join(name), Ns::Trusted),
            Wh::XattrUser => whiteout_xattr(&dir.join(name), Ns::User),
            Wh::Aufs => {
                whiteout_aufs(dir, name);
                return format!(".wh.{name}");
            }
        }
        name.to_string()
    }
}

/// Every whiteout form, in every position (upper, middle lower, top lower, bottom, inside an
/// opaque dir, inside a single-layer dir, with nothing below), hides its target and never shows.
#[test]
fn whiteout_forms_hide_entries() {
    if !require_root("whiteout_forms_hide_entries") {
        return;
    }
    let (_t, root) = scratch(&["u", "w", "l1", "l2", "l3", "m"]);
    let (u, l1, l2, l3) = (
        root.join("u"),
        root.join("l1"),
        root.join("l2"),
        root.join("l3"),
    );
    let mut visible_paths = Vec::new();
    let mut hidden = Vec::new();
    for wh in [Wh::Chardev, Wh::XattrTrusted, Wh::XattrUser, Wh::Aufs] {
        let t = wh.tag();
        // Whiteout in the upper over a lower file, and over a lower dir.
        write_file(&l3.join(format!("{t}_up")), "x");
        write_file(&l2.join(format!("{t}_updir/f")), "x");
        let a1 = wh.make(&u, &format!("{t}_up"));
        let a2 = wh.make(&u, &format!("{t}_updir"));
        // Whiteout in the top lower over the middle, in the middle over the bottom.
        write_file(&l2.join(format!("{t}_l1")), "x");
        let a3 = wh.make(&l1, &format!("{t}_l1"));
        write_file(&l3.join(format!("sub/{t}_l2")), "x");
        write_file(&l3.join("sub/keep"), "keep");
        let a4 = wh.make(&l2.join("sub"), &format!("{t}_l2"));
        // With nothing below; in the bottom layer; in a single-layer dir; in an opaque dir.
        let a5 = wh.make(&l1, &format!("{t}_nothing"));
        let a6 = wh.make(&l3, &format!("{t}_bottom"));
        let a7 = wh.make(&l1.join(format!("{t}_solo")), "ghost");
        write_file(&l1.join(format!("{t}_solo/real")), "real");
        opaque(&l2.join(format!("{t}_opq")), Opaque::TrustedY);
        write_file(&l2.join(format!("{t}_opq/real")), "real");
        write_file(&l3.join(format!("{t}_opq/ghost")), "hidden by opaque");
        let a8 = wh.make(&l2.join(format!("{t}_opq")), "ghost");
        visible_paths.extend([
            "sub/keep".to_string(),
            format!("{t}_solo/real"),
            format!("{t}_opq/real"),
        ]);
        for h in [
            format!("{t}_up"),
            format!("{t}_updir"),
            format!("{t}_updir/f"),
            format!("{t}_l1"),
            format!("sub/{t}_l2"),
            format!("{t}_nothing"),
            format!("{t}_bottom"),
            format!("{t}_solo/ghost"),
            format!("{t}_opq/ghost"),
            a1,
            a2,
            a3,
            format!("sub/{a4}"),
            a5,
            a6,
            format!("{t}_solo/{a7}"),
            format!("{t}_opq/{a8}"),
        ] {
            if !hidden.contains(&h) {
                hidden.push(h);
            }
        }
    }
    let m = Ovlfs::new([&l1, &l2, &l3])
        .upper(&u, root.join("w"))
        .mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        check_visibility(&p, &visible_paths, &hidden)
    });
}

/// AUFS `.wh.NAME` hides NAME (files, dirs, nested) and `.wh.NAME` itself never shows.
#[test]
fn aufs_whiteout_hides_name() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    write_file(&l2.join("a"), "a");
    write_file(&l2.join("b"), "b stays");
    write_file(&l2.join("dir/inner"), "inner");
    write_file(&l2.join("nested/x"), "x");
    write_file(&l2.join("nested/y"), "y stays");
    whiteout_aufs(&l1, "a");
    whiteout_aufs(&l1, "dir");
    whiteout_aufs(&l1, "no_target");
    whiteout_aufs(&l1.join("nested"), "x");
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&p), strs(&["b", "nested"]), "root listing");
        assert_eq!(names(&p.join("nested")), strs(&["y"]), "nested listing");
        check_visibility(
            &p,
            &strs(&["b", "nested/y"]),
            &strs(&[
                "a",
                "dir",
                "dir/inner",
                "nested/x",
                ".wh.a",
                ".wh.dir",
                ".wh.no_target",
                "no_target",
                "nested/.wh.x",
            ]),
        );
    });
}

/// The ways of marking a directory opaque, in the upper, the top lower and a middle lower;
/// `opaque=x` (either namespace) is not opaque; `.wh..wh..opq` never shows.
#[test]
fn opaque_forms() {
    if !require_root("opaque_forms") {
        return;
    }
    let (_t, root) = scratch(&["u", "w", "l1", "l2", "l3", "m"]);
    let (u, l1, l2, l3) = (
        root.join("u"),
        root.join("l1"),
        root.join("l2"),
        root.join("l3"),
    );
    let forms = [
        (Opaque::TrustedY, "ty", true),
        (Opaque::UserY, "uy", true),
        (Opaque::FuseOverlayfsY, "fy", true),
        (Opaque::WhOpq, "wh", true),
        (Opaque::TrustedX, "tx", false),
        (Opaque::UserX, "ux", false),
    ];
    let mut expect: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (form, tag, is_opaque) in forms {
        // Marked in the upper.
        opaque(&u.join(format!("up_{tag}")), form);
        write_file(&u.join(format!("up_{tag}/u")), "u");
        write_file(&l1.join(format!("up_{tag}/l")), "l");
        // Marked in the top lower.
        opaque(&l1.join(format!("top_{tag}")), form);
        write_file(&l1.join(format!("top_{tag}/a")), "a");
        write_file(&l2.join(format!("top_{tag}/b")), "b");
        // Marked in the middle lower, merged with the layer above.
        write_file(&l1.join(format!("mid_{tag}/a")), "a");
        opaque(&l2.join(format!("mid_{tag}")), form);
        write_file(&l2.join(format!("mid_{tag}/b")), "b");
        write_file(&l3.join(format!("mid_{tag}/c")), "c");
        let pick = |opq: Vec<&str>, all: Vec<&str>| strs(if is_opaque { &opq } else { &all });
        expect.insert(format!("up_{tag}"), pick(vec!["u"], vec!["l", "u"]));
        expect.insert(format!("top_{tag}"), pick(vec!["a"], vec!["a", "b"]));
        expect.insert(
            format!("mid_{tag}"),
            pick(vec!["a", "b"], vec!["a", "b", "c"]),
        );
    }
    let m = Ovlfs::new([&l1, &l2, &l3])
        .upper(&u, root.join("w"))
        .mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let mut fails = Vec::new();
        for (dir, want) in &expect {
            let got = names(&p.join(dir));
            if &got != want {
                fails.push(format!("{dir}: listed {got:?}, expected {want:?}"));
            }
            for gone in ["l", "b", "c"] {
                let shown = want.iter().any(|w| w == gone);
                let e = lstat_errno(&p.join(dir).join(gone));
                let existed = matches!(
                    (dir.split('_').next(), gone),
                    (Some("up"), "l") | (Some("top"), "b") | (Some("mid"), "c")
                );
                if existed && !shown && e != Some(libc::ENOENT) {
                    fails.push(format!(
                        "{dir}/{gone}: lstat gives {} (want ENOENT)",
                        errno_name(e)
                    ));
                }
                if shown && e.is_some() {
                    fails.push(format!("{dir}/{gone}: lstat gives {}", errno_name(e)));
                }
            }
            let e = lstat_errno(&p.join(dir).join(".wh..wh..opq"));
            if e != Some(libc::ENOENT) {
                fails.push(format!("{dir}/.wh..wh..opq: lstat gives {}", errno_name(e)));
            }
        }
        assert!(
            fails.is_empty(),
            "opaque handling:\n  {}",
            fails.join("\n  ")
        );
    });
}

/// `user.fuseoverlayfs.opaque=y` alone (no kernel xattr) makes a lower directory opaque.
#[test]
fn fuseoverlayfs_opaque_xattr() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    opaque(&l1.join("d"), Opaque::FuseOverlayfsY);
    write_file(&l1.join("d/new"), "new");
    write_file(&l2.join("d/old"), "old");
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&p.join("d")), strs(&["new"]));
        assert_eq!(lstat_errno(&p.join("d/old")), Some(libc::ENOENT));
    });
}

/// `.wh..wh..opq` makes a directory opaque and never shows.
#[test]
fn aufs_opaque_marker() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    opaque(&l1.join("d"), Opaque::WhOpq);
    write_file(&l1.join("d/new"), "new");
    write_file(&l2.join("d/old"), "old");
    write_file(&l2.join("d/sub/deep"), "deep");
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&p.join("d")), strs(&["new"]));
        for h in ["d/old", "d/sub", "d/.wh..wh..opq"] {
            assert_eq!(lstat_errno(&p.join(h)), Some(libc::ENOENT), "{h}");
        }
    });
}

/// `trusted.overlay.opaque=x` means "may hold xattr whiteouts", not opaque.
#[test]
fn trusted_opaque_x_is_not_opaque() {
    if !require_root("trusted_opaque_x_is_not_opaque") {
        return;
    }
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    opaque(&l1.join("d"), Opaque::TrustedX);
    write_file(&l1.join("d/new"), "new");
    write_file(&l2.join("d/old"), "old");
    whiteout_xattr(&l1.join("d/gone"), Ns::Trusted);
    write_file(&l2.join("d/gone"), "gone");
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&p.join("d")), strs(&["new", "old"]));
        assert_eq!(
            fs::read_to_string(p.join("d/old")).expect("read d/old"),
            "old"
        );
        assert_eq!(lstat_errno(&p.join("d/gone")), Some(libc::ENOENT));
    });
}
