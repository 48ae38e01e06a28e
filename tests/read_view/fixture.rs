//! The differential fixture: lower layers (and an upper) exercising every read-side feature the
//! kernel also reads, and the paths the merged view must hide.

use super::*;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Four lower layers (returned top first) exercising every read-side feature the kernel also
/// reads, with overlay metadata in namespace `ns` only.
pub(crate) fn build_lowers(root: &Path, ns: Ns) -> Vec<PathBuf> {
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
pub(crate) fn build_upper(u: &Path, ns: Ns) {
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
pub(crate) fn hidden_paths(with_upper: bool) -> Vec<&'static str> {
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
