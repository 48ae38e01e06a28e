//! Focused tests (ovlfs only): reading through the mount (file contents, symlinks, statfs,
//! lowers given as symlinks, concurrent readers, read-only mounts, permissions).

use super::fixture::build_lowers;
use super::*;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

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
    assert_tree_unchanged("l1", &before.0, &l1);
    assert_tree_unchanged("l2", &before.1, &l2);
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
