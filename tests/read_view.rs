//! The merged read-only view: differential tests against the kernel's overlayfs, and focused
//! tests (ovlfs only) for the on-disk formats the kernel does not read (DESIGN.md §3).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Seconds any single test body may take before the watchdog aborts the FUSE connection.
const BODY_SECS: u64 = 90;

fn lstat_errno(p: &Path) -> Option<i32> {
    errno(&fs::symlink_metadata(p))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 32) as u8
                ^ seed
        })
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The differential fixture
// ---------------------------------------------------------------------------------------------

/// Four lower layers (returned top first) exercising every read-side feature the kernel also
/// reads, with overlay metadata in namespace `ns` only.
fn build_lowers(root: &Path, ns: Ns) -> Vec<PathBuf> {
    let l: Vec<PathBuf> = (1..=4).map(|i| root.join(format!("l{i}"))).collect();
    for d in &l {
        mkdirs(d);
    }
    let (l1, l2, l3, l4) = (&l[0], &l[1], &l[2], &l[3]);

    // Plain files shadowing each other at every level.
    for (i, d) in l.iter().enumerate() {
        write_file(&d.join("f_all"), format!("f_all from layer {}\n", i + 1));
    }
    write_file(&l3.join("f_mid"), "f_mid from l3");
    write_file(&l4.join("f_mid"), "f_mid from l4, longer");
    write_file(&l4.join("only4"), "only in l4");
    write_file(&l1.join("only1"), "only in l1");
    write_file(&l4.join("empty"), "");
    write_file(&l4.join("big"), pattern(1024 * 1024 + 4099, 7));
    write_file(&l2.join("big2"), pattern(200_000, 3));
    set_xattr(l1, "user.rootattr", b"top root");

    // Nested merged directories, 3 levels deep, each level contributed by several layers.
    write_file(&l4.join("d1/a4"), "a4");
    write_file(&l4.join("d1/d2/b4"), "b4");
    write_file(&l4.join("d1/d2/d3/c4"), "c4 from l4");
    write_file(&l3.join("d1/a3"), "a3");
    write_file(&l3.join("d1/d2/d3/c3"), "c3");
    write_file(&l2.join("d1/d2/b2"), "b2");
    write_file(&l2.join("d1/d2/d3/c4"), "c4 from l2");
    write_file(&l1.join("d1/d2/d3/c1"), "c1");
    chown(&l1.join("d1"), 1000, 1000);
    chmod(&l1.join("d1"), 0o750);
    set_xattr(&l1.join("d1"), "user.dirattr", b"d1 top");
    set_xattr(&l4.join("d1"), "user.dirattr", b"d1 bottom");
    chmod(&l3.join("d1/d2"), 0o711);
    chmod(&l2.join("d1/d2"), 0o700);

    // A file over a directory, a directory over a file, dir over file over dir.
    write_file(&l4.join("fod/x"), "x under file");
    write_file(&l2.join("fod"), "file over dir");
    write_file(&l4.join("dof"), "file under dir");
    write_file(&l3.join("dof/y"), "y in dir over file");
    write_file(&l4.join("dfd/z4"), "z4");
    write_file(&l3.join("dfd"), "file between dirs");
    write_file(&l2.join("dfd/z2"), "z2");
    // Lower pieces the upper variant shadows.
    write_file(&l4.join("opq_up/l"), "hidden by opaque upper dir");
    write_file(&l3.join("fod_up/inner"), "under upper file");
    write_file(&l4.join("dof_up"), "under upper dir");

    // Symlinks: relative, absolute, dangling, shadowing, symlink over a directory.
    symlink("f_all", &l3.join("sl_rel"));
    symlink("/etc/hostname", &l2.join("sl_abs"));
    symlink("nonexistent/target", &l1.join("sl_dangling"));
    symlink("a", &l4.join("sl_shadowed"));
    symlink("b", &l1.join("sl_shadowed"));
    write_file(&l4.join("sod/f"), "under symlink");
    symlink("d1", &l1.join("sod"));
    symlink("../../f_all", &l2.join("d1/d2/sl_up2"));
    chown(&l2.join("sl_abs"), 1000, 1001);

    // Special files.
    fifo(&l4.join("fifo4"));
    fifo(&l2.join("fifo2"));
    socket(&l3.join("sock3"));
    chardev(&l4.join("null_dev"), 1, 3);

    // Owners and modes.
    file_full(&l4.join("suid"), "setuid", 0o4755, 0, 0);
    file_full(&l3.join("sgid"), "setgid", 0o2755, 1000, 1000);
    dir_mode(&l2.join("sticky"), 0o1777);
    file_full(&l2.join("sticky/private"), "p", 0o600, 1001, 1002);
    file_full(&l1.join("owned"), "owned", 0o640, 1234, 5678);
    dir_mode(&l4.join("sgid_dir"), 0o2775);
    write_file(&l4.join("sgid_dir/f"), "in sgid dir");
    chown(&l4.join("sgid_dir"), 0, 100);

    // user.* xattrs on files and dirs; only the topmost copy's xattrs show.
    write_file(&l4.join("xf"), "xf bottom");
    set_xattr(&l4.join("xf"), "user.a", b"1");
    set_xattr(&l4.join("xf"), "user.b", b"");
    write_file(&l2.join("xf"), "xf top");
    set_xattr(&l2.join("xf"), "user.c", b"three");
    set_xattr(&l2.join("xf"), "user.binary", &[0, 1, 2, 255]);
    write_file(&l3.join("xd/f"), "f");
    set_xattr(&l3.join("xd"), "user.x", b"y");

    // Hard links (one group partly whited out above).
    write_file(&l4.join("hl_a"), "hard linked");
    hardlink(&l4.join("hl_a"), &l4.join("d1/hl_b"));
    write_file(&l3.join("hl3_a"), "hard linked 3");
    hardlink(&l3.join("hl3_a"), &l3.join("hl3_b"));
    hardlink(&l3.join("hl3_a"), &l3.join("hl3_c"));
    whiteout_chardev(&l1.join("hl3_c"));

    // Chardev whiteouts in every layer above some lower entry.
    write_file(&l4.join("wo_l4_by_l3"), "x");
    whiteout_chardev(&l3.join("wo_l4_by_l3"));
    write_file(&l4.join("wo_by_l2"), "x");
    write_file(&l3.join("wo_by_l2"), "x");
    whiteout_chardev(&l2.join("wo_by_l2"));
    write_file(&l2.join("wo_by_l1"), "x");
    whiteout_chardev(&l1.join("wo_by_l1"));
    whiteout_chardev(&l1.join("wo_nothing"));
    write_file(&l4.join("d1/d2/wo_nested"), "x");
    whiteout_chardev(&l1.join("d1/d2/wo_nested"));
    write_file(&l4.join("wdir/inner/deep"), "whited-out dir");
    whiteout_chardev(&l2.join("wdir"));
    write_file(&l4.join("recreated/old"), "old");
    whiteout_chardev(&l2.join("recreated"));
    write_file(&l1.join("recreated/new"), "new");

    // Opaque directories.
    write_file(&l4.join("opq/o4"), "hidden by opaque l2 dir");
    write_file(&l3.join("opq/o3"), "hidden by opaque l2 dir");
    opaque(&l2.join("opq"), ns.opaque_y());
    write_file(&l2.join("opq/o2"), "o2");
    write_file(&l1.join("opq/o1"), "o1");
    write_file(&l4.join("opq_top/below"), "hidden");
    opaque(&l1.join("opq_top"), ns.opaque_y());
    write_file(&l1.join("opq_top/above"), "above");

    // xattr whiteouts, inside directories marked opaque=x (the only place the kernel honours them).
    write_file(&l4.join("xwd/gone"), "x");
    write_file(&l4.join("xwd/kept4"), "kept4");
    write_file(&l4.join("xwd/gonedir/deep"), "x");
    write_file(&l3.join("xwd/gone3"), "x");
    opaque(&l2.join("xwd"), ns.opaque_x());
    whiteout_xattr(&l2.join("xwd/gone"), ns);
    whiteout_xattr(&l2.join("xwd/gonedir"), ns);
    whiteout_xattr(&l2.join("xwd/gone3"), ns);
    write_file(&l2.join("xwd/kept2"), "kept2");
    opaque(&l1.join("xwd"), ns.opaque_x());
    write_file(&l1.join("xwd/kept1"), "kept1");

    // Awkward names, an empty dir, entries changing kind between layers.
    for name in [
        "sp ace",
        "new\nline",
        "colon:name",
        "back\\slash",
        "ütf-8 ✓",
        "-dash",
        ".hidden",
    ] {
        write_file(&l3.join(name), format!("{name} in l3"));
        write_file(&l1.join("names").join(name), format!("{name} in l1"));
    }
    write_file(&l3.join("names/only3"), "only3");
    write_file(
        &l2.join(std::ffi::OsStr::from_bytes(b"non-utf8-\xff\xfe")),
        "bytes",
    );
    write_file(&l4.join("n".repeat(255)), "longest name");
    write_file(&l4.join("a/b/c/d/e/f/g/h/deep"), "deep");
    mkdirs(&l2.join("emptydir"));
    mkdirs(&l1.join("empty_over_full"));
    write_file(&l4.join("empty_over_full/kept"), "kept");
    write_file(&l4.join("kind_swap"), "file below");
    fifo(&l3.join("kind_swap"));
    write_file(&l4.join("dir_to_link/f"), "f");
    symlink("f_all", &l2.join("dir_to_link"));
    // Whiteouts in a lower that an upper entry shadows (the upper variant only).
    write_file(&l2.join("wo_under_upper"), "x");
    whiteout_chardev(&l1.join("wo_under_upper"));
    write_file(&l3.join("wdir2/old"), "old");
    whiteout_chardev(&l1.join("wdir2"));
    for (i, d) in l.iter().enumerate() {
        fix_times(d, 1_500_000_000 + i as i64 * 10_000_000);
    }
    l
}

/// An upper layer (built once per mount so neither mount sees the other's changes).
fn build_upper(u: &Path, ns: Ns) {
    mkdirs(u);
    write_file(&u.join("f_all"), "f_all from upper\n");
    write_file(&u.join("only_upper"), "only in upper");
    set_xattr(&u.join("only_upper"), "user.up", b"1");
    whiteout_chardev(&u.join("f_mid"));
    whiteout_chardev(&u.join("d1/d2/b4"));
    chmod(&u.join("d1"), 0o751);
    set_xattr(&u.join("d1"), "user.updir", b"upper d1");
    write_file(&u.join("d1/d2/d3/cu"), "cu");
    opaque(&u.join("opq_up"), ns.opaque_y());
    write_file(&u.join("opq_up/u"), "u");
    write_file(&u.join("fod_up"), "upper file over lower dir");
    write_file(&u.join("dof_up/n"), "upper dir over lower file");
    symlink("only_upper", &u.join("sl_up"));
    write_file(&u.join("uh1"), "upper hard link");
    hardlink(&u.join("uh1"), &u.join("uh2"));
    fifo(&u.join("fifo_up"));
    file_full(&u.join("up_owned"), "o", 0o4711, 4321, 8765);
    write_file(
        &u.join("wo_under_upper"),
        "upper file over a lower whiteout",
    );
    write_file(&u.join("wdir2/u"), "upper dir over a lower whiteout");
    fix_times(u, 1_600_000_000);
}

/// Paths the merged view must not have (whited out or under an opaque / non-dir entry).
fn hidden_paths(with_upper: bool) -> Vec<&'static str> {
    let mut v = vec![
        "wo_l4_by_l3",
        "wo_by_l2",
        "wo_by_l1",
        "wo_nothing",
        "hl3_c",
        "d1/d2/wo_nested",
        "wdir",
        "wdir/inner",
        "recreated/old",
        "opq/o4",
        "opq/o3",
        "opq_top/below",
        "xwd/gone",
        "xwd/gone3",
        "xwd/gonedir",
        "xwd/gonedir/deep",
        "fod/x",
        "dfd/z4",
        "sod/f",
    ];
    if with_upper {
        v.extend(["f_mid", "d1/d2/b4", "opq_up/l", "fod_up/inner"]);
    }
    v
}

fn differential(test: &str, ns: Ns, with_upper: bool) {
    if !require_kernel_overlay(test) {
        return;
    }
    let (_t, root) = scratch(&["m_ovl", "m_kern", "w_ovl", "w_kern"]);
    let lowers = build_lowers(&root, ns);
    let lower_refs: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
    let (u_ovl, u_kern) = (root.join("u_ovl"), root.join("u_kern"));
    let mut ov = Ovlfs::new(&lowers);
    let mut kopts = Vec::new();
    if ns == Ns::User {
        ov = ov.opt("userxattr");
        kopts.push("userxattr");
    }
    if with_upper {
        build_upper(&u_ovl, ns);
        build_upper(&u_kern, ns);
        ov = ov.upper(&u_ovl, root.join("w_ovl"));
    }
    let w_kern = root.join("w_kern");
    let kern = KernelOverlay::mount(
        &lower_refs,
        with_upper.then_some((u_kern.as_path(), w_kern.as_path())),
        &kopts,
        &root.join("m_kern"),
    );
    let ovl = ov.mount(&root.join("m_ovl"));
    let (pk, po) = (kern.path().to_path_buf(), ovl.path().to_path_buf());
    let hidden = hidden_paths(with_upper);
    with_watchdog(BODY_SECS, ovl.path(), move || {
        let k = snapshot_tree(&pk);
        // Fixture sanity: the kernel must show what this test believes it shows.
        assert!(
            k.entries.len() > 50,
            "kernel view suspiciously small: {:?}",
            k.entries.keys()
        );
        let mut kernel_errno = Vec::new();
        for h in &hidden {
            let e = lstat_errno(&pk.join(h));
            assert!(
                matches!(e, Some(libc::ENOENT) | Some(libc::ENOTDIR)),
                "fixture assumption: the kernel hides {h}, but lstat gives {}",
                errno_name(e)
            );
            kernel_errno.push(e);
        }
        let o = snapshot_tree(&po);
        let mut diffs = diff_trees("ovlfs", &o, "kernel", &k);
        for (h, ek) in hidden.iter().zip(kernel_errno) {
            let eo = lstat_errno(&po.join(h));
            if eo != ek {
                diffs.push(format!(
                    "lstat {h}: ovlfs gives {} but the kernel gives {}",
                    errno_name(eo),
                    errno_name(ek)
                ));
            }
        }
        if !diffs.is_empty() {
            panic!(
                "ovlfs and the kernel's overlayfs disagree ({} difference(s)):\n  {}",
                diffs.len(),
                diffs.join("\n  ")
            );
        }
    });
    drop(ovl);
    drop(kern);
}

#[test]
fn differential_lowers_only_trusted() {
    differential("differential_lowers_only_trusted", Ns::Trusted, false);
}

#[test]
fn differential_with_upper_trusted() {
    differential("differential_with_upper_trusted", Ns::Trusted, true);
}

#[test]
fn differential_lowers_only_userxattr() {
    differential("differential_lowers_only_userxattr", Ns::User, false);
}

#[test]
fn differential_with_upper_userxattr() {
    differential("differential_with_upper_userxattr", Ns::User, true);
}

// ---------------------------------------------------------------------------------------------
// Focused tests (ovlfs only)
// ---------------------------------------------------------------------------------------------

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

const PRIVATE: [&str; 5] = [
    "trusted.overlay.opaque",
    "trusted.overlay.foo",
    "user.overlay.bar",
    "user.overlay.opaque",
    "user.fuseoverlayfs.baz",
];

/// Overlay-private xattrs never appear in listxattr and getxattr gives ENODATA, in both
/// namespace modes, on files and dirs of the upper and of lowers; ordinary user.* ones do.
#[test]
fn private_xattrs_hidden() {
    if !require_root("private_xattrs_hidden") {
        return;
    }
    let mut all_fails = Vec::new();
    for mode in ["trusted", "userxattr"] {
        let (_t, root) = scratch(&["u", "w", "l1", "l2", "m"]);
        let (u, l1, l2) = (root.join("u"), root.join("l1"), root.join("l2"));
        let objs = [
            u.join("uf"),
            u.join("ud"),
            l1.join("lf"),
            l1.join("ld"),
            l2.join("l2f"),
        ];
        for (i, o) in objs.iter().enumerate() {
            if o.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with('d'))
            {
                mkdirs(o);
                // Keep the directories non-opaque (opaque=x) so both lowers stay merged.
                set_xattr(o, "trusted.overlay.opaque", b"x");
                set_xattr(o, "user.overlay.opaque", b"x");
            } else {
                write_file(o, format!("object {i}"));
                set_xattr(o, "trusted.overlay.opaque", b"y");
                set_xattr(o, "user.overlay.opaque", b"y");
            }
            set_xattr(o, "trusted.overlay.foo", b"1");
            set_xattr(o, "user.overlay.bar", b"2");
            set_xattr(o, "user.fuseoverlayfs.baz", b"3");
            set_xattr(o, "user.visible", b"ok");
        }
        set_xattr(&u, "trusted.overlay.foo", b"root");
        set_xattr(&u, "user.overlay.bar", b"root");
        set_xattr(&u, "user.visible", b"ok");
        let mut ov = Ovlfs::new([&l1, &l2]).upper(&u, root.join("w"));
        if mode == "userxattr" {
            ov = ov.opt("userxattr");
        }
        let m = ov.mount(&root.join("m"));
        let p = m.path().to_path_buf();
        let fails = with_watchdog(BODY_SECS, m.path(), move || {
            let mut fails = Vec::new();
            for rel in ["", "uf", "ud", "lf", "ld", "l2f"] {
                let path = p.join(rel);
                let shown = if rel.is_empty() { "/" } else { rel };
                match list_xattrs(&path) {
                    Ok(list) => {
                        for n in &list {
                            if n.starts_with("trusted.overlay.")
                                || n.starts_with("user.overlay.")
                                || n.starts_with("user.fuseoverlayfs.")
                            {
                                fails.push(format!("[{mode}] {shown}: listxattr shows {n}"));
                            }
                        }
                        if !list.iter().any(|n| n == "user.visible") {
                            fails.push(format!(
                                "[{mode}] {shown}: listxattr lacks user.visible: {list:?}"
                            ));
                        }
                    }
                    Err(e) => fails.push(format!("[{mode}] {shown}: listxattr: {e}")),
                }
                for name in PRIVATE {
                    let r = get_xattr(&path, name);
                    if errno(&r) != Some(libc::ENODATA) {
                        fails.push(format!(
                            "[{mode}] {shown}: getxattr {name} gives {:?} (want ENODATA)",
                            r.map(|v| String::from_utf8_lossy(&v).into_owned())
                        ));
                    }
                }
                let r = get_xattr(&path, "user.never-set");
                if errno(&r) != Some(libc::ENODATA) {
                    fails.push(format!(
                        "[{mode}] {shown}: getxattr of a missing ordinary name gives {:?}",
                        r.map(|v| String::from_utf8_lossy(&v).into_owned())
                    ));
                }
                match get_xattr(&path, "user.visible") {
                    Ok(v) if v == b"ok" => {}
                    other => fails.push(format!("[{mode}] {shown}: user.visible = {other:?}")),
                }
            }
            fails
        });
        all_fails.extend(fails);
        drop(m);
    }
    assert!(
        all_fails.is_empty(),
        "private xattrs leaked ({} problem(s)):\n  {}",
        all_fails.len(),
        all_fails.join("\n  ")
    );
}

/// st_dev is one value, st_ino unique (hard links share), stable, equal to readdir's d_ino;
/// `.`/`..` are listed, `.` has the directory's inode; names are listed once; dir nlink ≥ 1.
#[test]
fn inode_numbers_consistent() {
    if !require_root("inode_numbers_consistent") {
        return;
    }
    let (_t, root) = scratch(&["m"]);
    let lowers = build_lowers(&root, Ns::Trusted);
    let m = Ovlfs::new(&lowers).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let mut fails = Vec::new();
        let tree = readdir_tree(&p);
        let stat_all = || -> BTreeMap<PathBuf, (u64, u64, bool, u64)> {
            let mut out = BTreeMap::new();
            for (dir, ents) in &tree {
                for e in ents {
                    if e.name == "." || e.name == ".." {
                        continue;
                    }
                    let rel = dir.join(&e.name);
                    match fs::symlink_metadata(p.join(&rel)) {
                        Ok(md) => {
                            out.insert(rel, (md.dev(), md.ino(), md.is_dir(), md.nlink()));
                        }
                        Err(err) => panic!("lstat {}: {err}", rel.display()),
                    }
                }
            }
            let md = fs::symlink_metadata(&p).expect("lstat root");
            out.insert(PathBuf::new(), (md.dev(), md.ino(), true, md.nlink()));
            out
        };
        let first = stat_all();
        let second = stat_all();
        let root_dev = first[&PathBuf::new()].0;
        let mut by_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for (rel, (dev, ino, is_dir, nlink)) in &first {
            if *dev != root_dev {
                fails.push(format!(
                    "{}: st_dev {dev:#x} != root's {root_dev:#x}",
                    rel.display()
                ));
            }
            if second.get(rel).map(|s| s.1) != Some(*ino) {
                fails.push(format!(
                    "{}: st_ino not stable: {ino} then {:?}",
                    rel.display(),
                    second.get(rel).map(|s| s.1)
                ));
            }
            if *is_dir && *nlink < 1 {
                fails.push(format!("{}: directory nlink {nlink}", rel.display()));
            }
            by_ino.entry(*ino).or_default().push(rel.clone());
        }
        let expected_groups: BTreeSet<Vec<PathBuf>> = [
            vec![PathBuf::from("d1/hl_b"), PathBuf::from("hl_a")],
            vec![PathBuf::from("hl3_a"), PathBuf::from("hl3_b")],
        ]
        .into_iter()
        .collect();
        for (ino, paths) in &by_ino {
            if paths.len() > 1 && !expected_groups.contains(paths) {
                fails.push(format!("st_ino {ino} shared by {paths:?}"));
            }
        }
        for g in &expected_groups {
            let inos: BTreeSet<u64> = g.iter().filter_map(|x| first.get(x).map(|s| s.1)).collect();
            if inos.len() != 1 {
                fails.push(format!("hard links {g:?} do not share st_ino: {inos:?}"));
            }
        }
        for (dir, ents) in &tree {
            let dir_ino = first[dir].1;
            let mut seen = BTreeSet::new();
            for e in ents {
                if !seen.insert(e.name.clone()) {
                    fails.push(format!("{}: {:?} listed twice", dir.display(), e.name));
                }
                if e.name == "." {
                    if e.ino != dir_ino {
                        fails.push(format!(
                            "{}/.: d_ino {} != st_ino {dir_ino}",
                            dir.display(),
                            e.ino
                        ));
                    }
                    continue;
                }
                if e.name == ".." {
                    continue;
                }
                let rel = dir.join(&e.name);
                let (_, ino, _, _) = first[&rel];
                if e.ino != ino {
                    fails.push(format!(
                        "{}: d_ino {} != st_ino {ino}",
                        rel.display(),
                        e.ino
                    ));
                }
            }
            for dot in [".", ".."] {
                if !seen.contains(std::ffi::OsStr::new(dot)) {
                    fails.push(format!("{}: readdir lacks {dot}", dir.display()));
                }
            }
        }
        assert!(
            fails.is_empty(),
            "inode problems:\n  {}",
            fails.join("\n  ")
        );
    });
}

/// `..` in a (non-root) directory's readdir carries the parent's inode number.
#[test]
fn readdir_dotdot_inode() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    write_file(&l1.join("a/b/c/f"), "f");
    write_file(&l2.join("a/b/g"), "g");
    write_file(&l2.join("solo/x"), "x");
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let mut fails = Vec::new();
        for (dir, parent) in [("a", ""), ("a/b", "a"), ("a/b/c", "a/b"), ("solo", "")] {
            let want = fs::symlink_metadata(p.join(parent))
                .expect("lstat parent")
                .ino();
            let ents = read_dir_raw(&p.join(dir)).expect("readdir");
            match ents.iter().find(|e| e.name == "..") {
                Some(e) if e.ino == want => {}
                Some(e) => fails.push(format!("{dir}/..: d_ino {} != parent st_ino {want}", e.ino)),
                None => fails.push(format!("{dir}: no .. entry")),
            }
        }
        assert!(fails.is_empty(), "{}", fails.join("\n"));
    });
}

/// Without an upperdir every modification fails with EROFS and the lowers stay untouched.
#[test]
fn read_only_mount_rejects_writes() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    write_file(&l1.join("file"), "content");
    write_file(&l2.join("dir/inner"), "inner");
    write_file(&l2.join("lowfile"), "low");
    let before = (snapshot_tree(&l1), snapshot_tree(&l2));
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let mut fails = Vec::new();
        let mut check = |what: &str, r: io::Result<()>| {
            let e = errno(&r);
            if e != Some(libc::EROFS) {
                fails.push(format!("{what}: {} (want EROFS)", errno_name(e)));
            }
        };
        check("create", fs::File::create(p.join("new")).map(drop));
        check(
            "open O_WRONLY",
            fs::OpenOptions::new()
                .write(true)
                .open(p.join("file"))
                .map(drop),
        );
        check(
            "open O_RDWR lower",
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p.join("lowfile"))
                .map(drop),
        );
        check(
            "open O_TRUNC",
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(p.join("file"))
                .map(drop),
        );
        check(
            "open O_APPEND",
            fs::OpenOptions::new()
                .append(true)
                .open(p.join("file"))
                .map(drop),
        );
        check("unlink", fs::remove_file(p.join("file")));
        check("unlink lower", fs::remove_file(p.join("lowfile")));
        check("mkdir", fs::create_dir(p.join("newdir")));
        check("mkdir nested", fs::create_dir(p.join("dir/newdir")));
        check("rmdir", fs::remove_dir(p.join("dir")));
        check("rename", fs::rename(p.join("file"), p.join("renamed")));
        check("symlink", std::os::unix::fs::symlink("file", p.join("sl")));
        check("link", fs::hard_link(p.join("file"), p.join("hl")));
        check(
            "chmod",
            fs::set_permissions(
                p.join("file"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            ),
        );
        check(
            "chown",
            std::os::unix::fs::lchown(p.join("file"), Some(1), Some(1)),
        );
        check("setxattr", try_set_xattr(&p.join("file"), "user.new", b"v"));
        check(
            "removexattr",
            rustix::fs::lremovexattr(p.join("file"), "user.none").map_err(io::Error::from),
        );
        check(
            "mkfifo",
            rustix::fs::mknodat(
                rustix::fs::CWD,
                p.join("fifo"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .map_err(io::Error::from),
        );
        assert!(
            fails.is_empty(),
            "read-only mount accepted writes:\n  {}",
            fails.join("\n  ")
        );
        // Reads still work.
        assert_eq!(fs::read_to_string(p.join("file")).expect("read"), "content");
    });
    drop(m);
    let after = (snapshot_tree(&l1), snapshot_tree(&l2));
    assert_trees_equal("l1 before", &before.0, "l1 after", &after.0);
    assert_trees_equal("l2 before", &before.1, "l2 after", &after.1);
}

/// statfs(2) on the mount and inside it succeeds with sane values.
#[test]
fn statfs_works() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    write_file(&l2.join("d/f"), "f");
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        for rel in ["", "d", "d/f"] {
            let s =
                rustix::fs::statvfs(p.join(rel)).unwrap_or_else(|e| panic!("statvfs {rel:?}: {e}"));
            assert!(s.f_bsize > 0, "{rel:?}: f_bsize {}", s.f_bsize);
            assert!(s.f_blocks > 0, "{rel:?}: f_blocks {}", s.f_blocks);
            assert!(s.f_namemax > 0, "{rel:?}: f_namemax {}", s.f_namemax);
            assert!(s.f_bfree <= s.f_blocks, "{rel:?}: bfree > blocks");
        }
    });
}

/// readlink returns the stored target exactly, for every kind of symlink and layer.
#[test]
fn readlink_works() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    let long: String = std::iter::repeat_n("abcdefghi/", 200).collect();
    write_file(&l2.join("target"), "target content");
    let links: Vec<(PathBuf, String)> = vec![
        (l1.join("rel"), "target".into()),
        (l2.join("abs"), "/etc/hostname".into()),
        (l1.join("dangling"), "does/not/exist".into()),
        (l2.join("d/up"), "../target".into()),
        (l1.join("long"), long.clone()),
        (l1.join("dotdot"), "..".into()),
        (l2.join("spaces"), "a name with spaces".into()),
    ];
    for (p, t) in &links {
        symlink(t, p);
    }
    symlink("shadowed-below", &l2.join("shadow"));
    symlink("shadow-top", &l1.join("shadow"));
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    let base = [l1.clone(), l2.clone()];
    with_watchdog(BODY_SECS, m.path(), move || {
        for (lp, t) in &links {
            let rel = base
                .iter()
                .find_map(|b| lp.strip_prefix(b).ok())
                .expect("relative");
            let got =
                fs::read_link(p.join(rel)).unwrap_or_else(|e| panic!("readlink {rel:?}: {e}"));
            assert_eq!(got, PathBuf::from(t), "readlink {rel:?}");
            let md = fs::symlink_metadata(p.join(rel)).expect("lstat");
            assert!(md.file_type().is_symlink(), "{rel:?} is not a symlink");
            assert_eq!(md.len(), t.len() as u64, "{rel:?}: symlink st_size");
        }
        assert_eq!(
            fs::read_link(p.join("shadow")).expect("readlink"),
            PathBuf::from("shadow-top")
        );
        assert_eq!(
            fs::read_to_string(p.join("rel")).expect("follow"),
            "target content"
        );
        assert_eq!(
            fs::read_to_string(p.join("d/up")).expect("follow"),
            "target content"
        );
        assert_eq!(
            errno(&fs::read_link(p.join("target"))),
            Some(libc::EINVAL),
            "readlink of a regular file"
        );
    });
}

/// Files of many sizes from every layer read back byte-exact, whole and at odd offsets.
#[test]
fn file_contents_read_in_full() {
    let (_t, root) = scratch(&["l1", "l2", "l3", "m"]);
    let layers = [root.join("l1"), root.join("l2"), root.join("l3")];
    let sizes = [0usize, 1, 4095, 4096, 4097, 131_073, 3 * 1024 * 1024 + 7];
    let mut expect = Vec::new();
    for (li, l) in layers.iter().enumerate() {
        for (si, size) in sizes.iter().enumerate() {
            let name = format!("f_{li}_{size}");
            let data = pattern(*size, (li * 10 + si) as u8);
            write_file(&l.join(&name), &data);
            expect.push((name, data));
        }
    }
    // The same name in every layer: the top one wins.
    write_file(&layers[2].join("shadowed"), pattern(10_000, 1));
    write_file(&layers[1].join("shadowed"), pattern(20_000, 2));
    write_file(&layers[0].join("shadowed"), pattern(5_000, 3));
    expect.push(("shadowed".into(), pattern(5_000, 3)));
    let m = Ovlfs::new(&layers).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        for (name, data) in &expect {
            let got = fs::read(p.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
            assert!(
                got == *data,
                "{name}: content differs (len {} vs {})",
                got.len(),
                data.len()
            );
            let md = fs::metadata(p.join(name)).expect("stat");
            assert_eq!(md.len(), data.len() as u64, "{name}: st_size");
            let f = fs::File::open(p.join(name)).expect("open");
            for off in [1usize, 4095, 65_537, 1_000_003] {
                if off >= data.len() {
                    continue;
                }
                let mut buf = vec![0u8; 10_000];
                let n = f.read_at(&mut buf, off as u64).expect("pread");
                let want = &data[off..(off + 10_000).min(data.len())];
                assert!(n > 0 && buf[..n] == want[..n], "{name}: pread at {off}");
            }
            let mut buf = [0u8; 16];
            assert_eq!(
                f.read_at(&mut buf, data.len() as u64).expect("pread eof"),
                0,
                "{name}: EOF"
            );
        }
    });
}

/// A lowerdir given as a symlink to the real layer directory (absolute or relative) works.
#[test]
fn lower_given_as_symlink_to_layer() {
    let (_t, root) = scratch(&["real1", "real2", "m"]);
    write_file(&root.join("real1/top"), "top");
    write_file(&root.join("real1/d/a"), "a");
    write_file(&root.join("real2/bottom"), "bottom");
    write_file(&root.join("real2/d/b"), "b");
    symlink(root.join("real1"), &root.join("link1"));
    symlink("real2", &root.join("link2"));
    let m = Ovlfs::new([root.join("link1"), root.join("link2")]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&p), strs(&["bottom", "d", "top"]));
        assert_eq!(names(&p.join("d")), strs(&["a", "b"]));
        assert_eq!(fs::read_to_string(p.join("top")).expect("read top"), "top");
        assert_eq!(
            fs::read_to_string(p.join("bottom")).expect("read bottom"),
            "bottom"
        );
        assert!(fs::symlink_metadata(&p).expect("lstat root").is_dir());
    });
}

/// A large merged directory (several getdents batches): every visible name listed exactly once,
/// whiteouts applied, shadowed names deduplicated, d_ino == st_ino.
#[test]
fn large_merged_directory_listing() {
    if !require_root("large_merged_directory_listing") {
        return;
    }
    let (_t, root) = scratch(&["l1", "l2", "l3", "m"]);
    let (l1, l2, l3) = (root.join("l1"), root.join("l2"), root.join("l3"));
    let n = 3000;
    let mut want = BTreeSet::new();
    for i in 0..n {
        let name = format!("entry-with-a-longish-name-{i:05}");
        write_file(&l3.join("big").join(&name), "3");
        if i % 2 == 0 {
            write_file(&l2.join("big").join(&name), "2");
        }
        if i % 7 == 0 {
            whiteout_chardev(&l1.join("big").join(&name));
        } else if i % 11 == 0 {
            whiteout_aufs(&l1.join("big"), &name);
        } else {
            want.insert(name);
        }
        if i % 5 == 0 {
            let extra = format!("l1-only-{i:05}");
            write_file(&l1.join("big").join(&extra), "1");
            want.insert(extra);
        }
    }
    let m = Ovlfs::new([&l1, &l2, &l3]).mount(&root.join("m"));
    let p = m.path().join("big");
    with_watchdog(BODY_SECS, m.path(), move || {
        // A partial read, then rewinddir, then a full read from the start.
        {
            use rustix::fs::{Mode, OFlags};
            let fd = rustix::fs::open(&p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .expect("open big");
            let mut d = rustix::fs::Dir::new(fd).expect("Dir");
            for _ in 0..100 {
                d.read().expect("entry").expect("readdir");
            }
            d.rewind();
            let mut n = 0;
            while let Some(e) = d.read() {
                e.expect("readdir after rewind");
                n += 1;
            }
            assert_eq!(
                n,
                want.len() + 2,
                "entries after rewinddir (incl. . and ..)"
            );
        }
        for round in 0..2 {
            let ents = read_dir_raw(&p).expect("readdir big");
            let mut seen = BTreeSet::new();
            let mut dups = Vec::new();
            for e in &ents {
                if !seen.insert(e.name.to_string_lossy().into_owned()) {
                    dups.push(e.name.clone());
                }
            }
            seen.remove(".");
            seen.remove("..");
            assert!(
                dups.is_empty(),
                "round {round}: listed more than once: {dups:?}"
            );
            let missing: Vec<_> = want.difference(&seen).take(10).collect();
            let extra: Vec<_> = seen.difference(&want).take(10).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "round {round}: {} listed, {} expected; missing (first 10) {missing:?}; \
                 unexpected (first 10) {extra:?}",
                seen.len(),
                want.len()
            );
            for e in ents
                .iter()
                .filter(|e| e.name != "." && e.name != "..")
                .step_by(97)
            {
                let md = fs::symlink_metadata(p.join(&e.name)).expect("lstat entry");
                assert_eq!(e.ino, md.ino(), "{:?}: d_ino vs st_ino", e.name);
            }
        }
    });
}

/// Several threads walking, stating and reading the same merged tree at once all see the view a
/// single walk sees.
#[test]
fn concurrent_readers_see_one_view() {
    if !require_root("concurrent_readers_see_one_view") {
        return;
    }
    let (_t, root) = scratch(&["m"]);
    let lowers = build_lowers(&root, Ns::Trusted);
    let m = Ovlfs::new(&lowers).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let reference = snapshot_tree(&p);
        let diffs: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        for _ in 0..4 {
                            out.extend(diff_trees(
                                "thread",
                                &snapshot_tree(&p),
                                "first",
                                &reference,
                            ));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("reader thread"))
                .collect()
        });
        assert!(
            diffs.is_empty(),
            "concurrent views differ:\n  {}",
            diffs.join("\n  ")
        );
    });
}

/// Permission checks apply to other users through the mount (default_permissions): an
/// unprivileged uid reads world-readable files but not private ones, nor lists 0700/0711 dirs.
#[test]
fn permissions_enforced_for_other_users() {
    if !require_root("permissions_enforced_for_other_users") {
        return;
    }
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    chmod(&root, 0o755);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    file_full(&l1.join("public"), "public\n", 0o644, 0, 0);
    file_full(&l2.join("private"), "private\n", 0o600, 0, 0);
    file_full(&l2.join("theirs"), "theirs\n", 0o600, 65534, 65534);
    dir_mode(&l2.join("closed"), 0o700);
    write_file(&l2.join("closed/f"), "f");
    dir_mode(&l1.join("xonly"), 0o711);
    file_full(&l1.join("xonly/known"), "known\n", 0o644, 0, 0);
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.args(args);
        run_cmd(&mut c, std::time::Duration::from_secs(20)).expect("run setpriv")
    };
    let cat = |rel: &str| as_nobody(&["cat".as_ref(), p.join(rel).as_os_str()]);
    let ls = |rel: &str| as_nobody(&["ls".as_ref(), p.join(rel).as_os_str()]);
    let mut fails = Vec::new();
    for (what, out, ok, want) in [
        ("cat public", cat("public"), true, "public\n"),
        ("cat theirs", cat("theirs"), true, "theirs\n"),
        ("cat xonly/known", cat("xonly/known"), true, "known\n"),
        ("cat private", cat("private"), false, ""),
        ("cat closed/f", cat("closed/f"), false, ""),
        ("ls closed", ls("closed"), false, ""),
        ("ls xonly", ls("xonly"), false, ""),
    ] {
        if out.status.is_none() {
            fails.push(format!("{what}: timed out"));
        } else if ok && (!out.success() || out.stdout != want) {
            fails.push(format!(
                "{what}: should succeed: {:?} {:?}",
                out.status, out.stderr
            ));
        } else if !ok && (out.success() || !out.stderr.contains("Permission denied")) {
            fails.push(format!(
                "{what}: should fail with EACCES: {:?} stdout {:?} stderr {:?}",
                out.status, out.stdout, out.stderr
            ));
        }
    }
    drop(m);
    assert!(
        fails.is_empty(),
        "permission checks:\n  {}",
        fails.join("\n  ")
    );
}

/// st_ino of every entry is the same after unmounting and mounting the same layers again.
#[test]
fn inode_numbers_stable_across_remount() {
    if !require_root("inode_numbers_stable_across_remount") {
        return;
    }
    let (_t, root) = scratch(&["m", "u", "w"]);
    let lowers = build_lowers(&root, Ns::Trusted);
    build_upper(&root.join("u"), Ns::Trusted);
    let inos = |mnt: &Path| -> BTreeMap<PathBuf, u64> {
        readdir_tree(mnt)
            .into_iter()
            .flat_map(|(dir, ents)| {
                ents.into_iter()
                    .filter(|e| e.name != "." && e.name != "..")
                    .map(move |e| dir.join(e.name))
                    .collect::<Vec<_>>()
            })
            .chain([PathBuf::new()])
            .map(|rel| {
                let md = fs::symlink_metadata(mnt.join(&rel)).expect("lstat");
                (rel, md.ino())
            })
            .collect()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let m = Ovlfs::new(&lowers)
            .upper(root.join("u"), root.join("w"))
            .mount(&root.join("m"));
        let p = m.path().to_path_buf();
        runs.push(with_watchdog(BODY_SECS, m.path(), move || inos(&p)));
        drop(m);
    }
    let changed: Vec<String> = runs[0]
        .iter()
        .filter(|(k, v)| runs[1].get(*k) != Some(v))
        .map(|(k, v)| format!("{}: {v} then {:?}", k.display(), runs[1].get(k)))
        .collect();
    assert_eq!(runs[0].len(), runs[1].len(), "different trees");
    assert!(
        changed.is_empty(),
        "st_ino changed across remount:\n  {}",
        changed.join("\n  ")
    );
}
