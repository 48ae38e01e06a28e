//! Metadata-only copies (`overlay.metacopy`) and data-only lower layers, side by side with the
//! kernel's overlayfs: an upper the kernel wrote with `metacopy=on` reads the same through
//! ovlfs (sizes, blocks, contents, modes) and a write through ovlfs copies the data up in a
//! form the kernel reads back; a composefs-style metadata layer with absolute redirects into a
//! content-addressed data-only layer (`lowerdir=META::DATA`) reads the same through both; and
//! `metacopy=on` makes ovlfs write metadata-only copies the kernel reads.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::scratch::MountGuard;
use common::*;

const BODY_SECS: u64 = 60;
const METACOPY: &str = "trusted.overlay.metacopy";
const REDIRECT: &str = "trusted.overlay.redirect";

/// The tree as users see it (contents, modes, owners, sizes, mtimes, every xattr) and each
/// regular file's st_blocks, which the kernel takes from the file holding the data.
fn view(root: &Path) -> (TreeSnapshot, BTreeMap<PathBuf, u64>) {
    let fields = Fields {
        all_xattrs: true,
        ..Fields::MERGED
    };
    let snap = snapshot_tree_with(root, fields);
    let blocks = snap
        .entries
        .iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(rel, _)| {
            let md = fs::symlink_metadata(root.join(rel)).expect("stat");
            (rel.clone(), md.blocks())
        })
        .collect();
    (snap, blocks)
}

#[track_caller]
fn assert_same_view(
    a_label: &str,
    a: &(TreeSnapshot, BTreeMap<PathBuf, u64>),
    b_label: &str,
    b: &(TreeSnapshot, BTreeMap<PathBuf, u64>),
) {
    assert_trees_equal(a_label, &a.0, b_label, &b.0);
    assert_eq!(a.1, b.1, "st_blocks: {a_label} (left), {b_label} (right)");
}

/// Every entry's d_type inode number equals what stat says (`dir` and its subdirectories).
#[track_caller]
fn assert_d_ino_is_st_ino(dir: &Path) {
    for e in read_dir_raw(dir).expect("readdir") {
        if e.name == "." || e.name == ".." {
            continue;
        }
        let path = dir.join(&e.name);
        let md = fs::symlink_metadata(&path).expect("stat");
        assert_eq!(e.ino, md.ino(), "d_ino of {}", path.display());
        if md.is_dir() {
            assert_d_ino_is_st_ino(&path);
        }
    }
}

fn has_xattr(path: &Path, name: &str) -> bool {
    list_xattrs(path)
        .unwrap_or_default()
        .iter()
        .any(|n| n == name)
}

/// A lower tree with files of several sizes (a sparse one among them) and a directory.
fn fill_lower(lower: &Path) {
    let mut rng = rng::Rng::new(7);
    write_file(&lower.join("small"), "hello\n");
    write_random_file(&lower.join("big"), 300_000, &mut rng);
    write_file(&lower.join("empty"), "");
    write_file(&lower.join("moved"), "renamed by the kernel\n");
    write_file(&lower.join("d/inner"), "inner\n");
    write_file(&lower.join("d/far"), "moved to another directory\n");
    let sparse = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(lower.join("sparse"))
        .expect("sparse");
    sparse.set_len(1 << 20).expect("set_len");
    sparse.write_all_at_end(b"tail");
    mkdirs(&lower.join("e"));
    fix_times(lower, 1_600_000_000);
}

trait WriteAtEnd {
    fn write_all_at_end(&self, data: &[u8]);
}

impl WriteAtEnd for fs::File {
    fn write_all_at_end(&self, data: &[u8]) {
        use std::os::unix::fs::FileExt;
        let len = self.metadata().expect("stat").len();
        self.write_all_at(data, len).expect("write");
    }
}

fn kernel_opts(root: &Path, lowers: &str, upper: bool) -> String {
    let mut o = format!("lowerdir={lowers}");
    if upper {
        o.push_str(&format!(
            ",upperdir={},workdir={}",
            root.join("u").display(),
            root.join("w").display()
        ));
    }
    o.push_str(",metacopy=on,redirect_dir=on");
    o
}

fn kernel_mount(opts: &str, mnt: &Path) -> MountGuard {
    MountGuard::mount(&["-t", "overlay", "overlay", "-o", opts], mnt)
        .unwrap_or_else(|e| panic!("{e}\ndmesg: {}", dmesg_tail()))
}

/// An upper the kernel wrote with `metacopy=on` (chmod, chown, renames within and across
/// directories, so relative and absolute redirects) reads through ovlfs as through the
/// kernel; writes, truncates and opens for writing through ovlfs copy the data up, and the
/// kernel reads the result as ovlfs shows it.
#[test]
fn kernel_metacopy_upper_reads_and_writes_like_the_kernel() {
    const TEST: &str = "kernel_metacopy_upper_reads_and_writes_like_the_kernel";
    if !require_root(TEST) || !require_kernel_overlay(TEST) {
        return;
    }
    let (_t, root) = scratch(&["l", "u", "w", "w2", "m_k", "m_o"]);
    fill_lower(&root.join("l"));
    let kopts = kernel_opts(&root, &root.join("l").display().to_string(), true);
    let (mk, mo) = (root.join("m_k"), root.join("m_o"));
    let kernel = kernel_mount(&kopts, &mk);
    let body = mk.clone();
    let by_kernel = with_watchdog(BODY_SECS, &mk, move || {
        for f in [
            "small", "big", "empty", "sparse", "moved", "d/inner", "d/far",
        ] {
            chmod(&body.join(f), 0o640);
        }
        chown(&body.join("d/inner"), 1234, 5678);
        fs::rename(body.join("moved"), body.join("renamed")).expect("rename");
        fs::rename(body.join("d/far"), body.join("e/far")).expect("rename across");
        view(&body)
    });
    drop(kernel);
    let u = root.join("u");
    for f in [
        "small", "big", "empty", "sparse", "renamed", "d/inner", "e/far",
    ] {
        assert!(
            has_xattr(&u.join(f), METACOPY),
            "fixture assumption: the kernel wrote {f} as a metadata-only copy"
        );
    }
    assert!(
        get_xattr(&u.join("e/far"), REDIRECT).is_ok_and(|r| r.starts_with(b"/")),
        "fixture assumption: an absolute redirect"
    );

    let ovl = Ovlfs::new([root.join("l")])
        .upper(&u, root.join("w2"))
        .mount(&mo);
    let body = mo.clone();
    let after_writes = with_watchdog(BODY_SECS, ovl.path(), move || {
        let through_ovlfs = view(&body);
        assert_same_view("kernel", &by_kernel, "ovlfs", &through_ovlfs);
        assert_d_ino_is_st_ino(&body);
        // The marker is private, as the kernel keeps it.
        let listed = list_xattrs(&body.join("small")).expect("listxattr");
        assert!(!listed.iter().any(|n| n.contains("metacopy")), "{listed:?}");
        assert_eq!(
            errno(&get_xattr(&body.join("small"), METACOPY)),
            Some(libc::ENODATA)
        );
        // Reads through an fd opened before the data copy-up go on, from the data they were
        // opened on (passthrough to the lower data file, as the kernel keeps an mmap).
        let early = fs::File::open(body.join("small")).expect("open");
        // Data copy-up: append, truncate, an open for writing that writes nothing.
        let mut f = OpenOptions::new()
            .append(true)
            .open(body.join("small"))
            .expect("open for append");
        f.write_all(b"more\n").expect("append");
        drop(f);
        let mut again = String::new();
        std::io::Read::read_to_string(&mut &early, &mut again).expect("read");
        assert_eq!(again, "hello\n");
        assert_eq!(
            fs::read_to_string(body.join("small")).unwrap(),
            "hello\nmore\n"
        );
        fs::File::options()
            .write(true)
            .open(body.join("big"))
            .expect("truncate")
            .set_len(100_000)
            .expect("set_len");
        drop(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(body.join("e/far"))
                .expect("open rw"),
        );
        view(&body)
    });
    drop(ovl);
    for f in ["small", "big", "e/far"] {
        assert!(!has_xattr(&u.join(f), METACOPY), "{f} has its data now");
    }
    assert_eq!(
        fs::read(u.join("e/far")).unwrap(),
        b"moved to another directory\n"
    );
    assert!(
        has_xattr(&u.join("sparse"), METACOPY),
        "untouched: still metadata-only"
    );

    fs::remove_dir_all(root.join("w")).unwrap();
    mkdirs(&root.join("w"));
    let kernel = kernel_mount(&kopts, &mk);
    let body = mk.clone();
    let again = with_watchdog(BODY_SECS, &mk, move || view(&body));
    drop(kernel);
    assert_same_view("ovlfs", &after_writes, "kernel", &again);
}

/// A composefs-style image: a metadata layer of metadata-only files with absolute redirects
/// into a content-addressed data-only layer, mounted `lowerdir=META::DATA` by the kernel and
/// by ovlfs (also as `lowerdir=META,datadir+=DATA`): the same tree; the data layer's own
/// names never show. A write through ovlfs copies the file up with its data.
#[test]
fn composefs_layout_like_the_kernel() {
    const TEST: &str = "composefs_layout_like_the_kernel";
    if !require_root(TEST) || !require_kernel_overlay(TEST) {
        return;
    }
    let (_t, root) = scratch(&["meta", "data", "u", "w", "w2", "m_k", "m_o"]);
    let (meta, data) = (root.join("meta"), root.join("data"));
    let mut rng = rng::Rng::new(11);
    let mut blobs = Vec::new();
    for (i, len) in [0u64, 5, 4096, 70_000, 1 << 20].into_iter().enumerate() {
        let rel = format!("{:02x}/{:062x}", i * 37, fnv64(&len.to_le_bytes()));
        write_random_file(&data.join(&rel), len, &mut rng);
        blobs.push((rel, len));
    }
    for (i, (rel, len)) in blobs.iter().enumerate() {
        let f = meta.join(format!("dir{}/file{i}", i % 2));
        write_file(&f, "");
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(*len)
            .unwrap();
        chmod(&f, 0o600 + i as u32);
        set_xattr(&f, METACOPY, b"");
        set_xattr(&f, REDIRECT, format!("/{rel}").as_bytes());
    }
    // Two names of one blob, and a file of the metadata layer holding its own data.
    let twin = meta.join("twin");
    write_file(&twin, "");
    fs::File::options()
        .write(true)
        .open(&twin)
        .unwrap()
        .set_len(blobs[2].1)
        .unwrap();
    set_xattr(&twin, METACOPY, b"");
    set_xattr(&twin, REDIRECT, format!("/{}", blobs[2].0).as_bytes());
    write_file(&meta.join("plain"), "own data\n");
    fix_times(&meta, 1_700_000_000);

    let layers = format!("{}::{}", meta.display(), data.display());
    let (mk, mo) = (root.join("m_k"), root.join("m_o"));
    let kernel = kernel_mount(&format!("lowerdir={layers}"), &mk);
    let by_kernel = view(&mk);
    drop(kernel);
    assert!(
        by_kernel.0.entries.contains_key(Path::new("dir0/file0")),
        "{:?}",
        by_kernel.0.entries.keys()
    );
    for form in ["lowerdir", "datadir+"] {
        let ovlfs = match form {
            "lowerdir" => Ovlfs::new(Vec::<PathBuf>::new()).opt(&format!("lowerdir={layers}")),
            _ => Ovlfs::new([&meta]).opt(&format!("datadir+={}", data.display())),
        };
        let ovl = ovlfs.mount(&mo);
        let body = mo.clone();
        let through_ovlfs = with_watchdog(BODY_SECS, ovl.path(), move || view(&body));
        drop(ovl);
        assert_same_view(
            "kernel",
            &by_kernel,
            &format!("ovlfs ({form})"),
            &through_ovlfs,
        );
    }

    // With an upper: a write copies the file up with the data of its blob.
    let ovl = Ovlfs::new([&meta])
        .opt(&format!("datadir+={}", data.display()))
        .upper(root.join("u"), root.join("w2"))
        .mount(&mo);
    let body = mo.clone();
    let after = with_watchdog(BODY_SECS, ovl.path(), move || {
        let mut f = OpenOptions::new()
            .append(true)
            .open(body.join("dir1/file3"))
            .expect("open");
        f.write_all(b"appended").expect("write");
        drop(f);
        chmod(&body.join("dir0/file2"), 0o644);
        view(&body)
    });
    drop(ovl);
    let up = root.join("u/dir1/file3");
    assert_eq!(
        fs::metadata(&up).unwrap().len(),
        blobs[3].1 + 8,
        "the data came up with the file"
    );
    assert!(!has_xattr(&up, METACOPY));
    let opts = format!(
        "lowerdir={layers},upperdir={},workdir={}",
        root.join("u").display(),
        root.join("w").display()
    );
    let kernel = kernel_mount(&opts, &mk);
    let again = view(&mk);
    drop(kernel);
    assert_same_view("ovlfs", &after, "kernel", &again);
}

/// `metacopy=on`: chmod, chown and utimes of lower files through ovlfs leave metadata-only
/// copies in the upper (no data copied; hard links are copied whole), which the kernel
/// mounts with `metacopy=on` and shows as ovlfs did. Without the option, a full copy.
#[test]
fn metacopy_on_writes_metadata_only_copies() {
    const TEST: &str = "metacopy_on_writes_metadata_only_copies";
    if !require_root(TEST) || !require_kernel_overlay(TEST) {
        return;
    }
    let (_t, root) = scratch(&["l", "u", "w", "w2", "u_off", "w_off", "m_k", "m_o"]);
    let l = root.join("l");
    fill_lower(&l);
    write_file(&l.join("linked"), "two names\n");
    hardlink(&l.join("linked"), &l.join("d/link2"));
    let mo = root.join("m_o");

    let ovl = Ovlfs::new([&l])
        .upper(root.join("u"), root.join("w2"))
        .opt("metacopy=on")
        .mount(&mo);
    let body = mo.clone();
    let through_ovlfs = with_watchdog(BODY_SECS, ovl.path(), move || {
        for f in ["small", "big", "empty", "sparse", "d/inner", "linked"] {
            chmod(&body.join(f), 0o604);
        }
        chown(&body.join("d/far"), 42, 43);
        fix_times(&body.join("e"), 1_650_000_000);
        rustix::fs::utimensat(
            rustix::fs::CWD,
            body.join("moved"),
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: 2,
                    tv_nsec: 0,
                },
            },
            rustix::fs::AtFlags::empty(),
        )
        .expect("utimensat");
        view(&body)
    });
    drop(ovl);
    let u = root.join("u");
    for f in [
        "small", "big", "empty", "sparse", "d/inner", "d/far", "moved",
    ] {
        let md = fs::metadata(u.join(f)).unwrap();
        let lower = fs::metadata(l.join(f)).unwrap();
        assert!(has_xattr(&u.join(f), METACOPY), "{f}: metadata-only copy");
        assert_eq!(md.len(), lower.len(), "{f}: size set");
        // An xattr block at most: no data.
        assert!(md.blocks() <= 8, "{f}: {} blocks copied", md.blocks());
    }
    assert_eq!(
        fs::metadata(u.join("small")).unwrap().permissions().mode() & 0o7777,
        0o604
    );
    assert!(
        !has_xattr(&u.join("linked"), METACOPY),
        "hard links are copied whole"
    );
    assert_eq!(fs::read(u.join("linked")).unwrap(), b"two names\n");

    let kernel = kernel_mount(
        &kernel_opts(&root, &l.display().to_string(), true),
        &root.join("m_k"),
    );
    let by_kernel = view(&root.join("m_k"));
    drop(kernel);
    assert_same_view("ovlfs", &through_ovlfs, "kernel", &by_kernel);

    // Without the option: full copies, as fuse-overlayfs reads them.
    let ovl = Ovlfs::new([&l])
        .upper(root.join("u_off"), root.join("w_off"))
        .mount(&mo);
    let body = mo.clone();
    with_watchdog(BODY_SECS, ovl.path(), move || {
        chmod(&body.join("big"), 0o600)
    });
    drop(ovl);
    let full = root.join("u_off/big");
    assert!(!has_xattr(&full, METACOPY));
    assert_eq!(fs::read(&full).unwrap(), fs::read(l.join("big")).unwrap());
}

/// Metadata-only copies built by hand, read side by side with the kernel: an absolute
/// redirect through a directory that is itself redirected in a lower layer, a chain through a
/// lower metadata-only copy with a relative redirect, one found by name, and one whose data
/// is missing (`EIO` from both).
#[test]
fn metacopy_redirect_chains_like_the_kernel() {
    const TEST: &str = "metacopy_redirect_chains_like_the_kernel";
    if !require_root(TEST) || !require_kernel_overlay(TEST) {
        return;
    }
    let (_t, root) = scratch(&["l1/new", "l2/old", "u", "w", "w2", "m_k", "m_o"]);
    let meta = |path: &Path, size: u64, redirect: Option<&str>| {
        write_file(path, "");
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(size)
            .unwrap();
        set_xattr(path, METACOPY, b"");
        if let Some(r) = redirect {
            set_xattr(path, REDIRECT, r.as_bytes());
        }
    };
    let (l1, l2, u) = (root.join("l1"), root.join("l2"), root.join("u"));
    write_file(&l2.join("old/f"), "old data\n");
    set_xattr(&l1.join("new"), REDIRECT, b"/old");
    write_file(&l2.join("base"), "base data\n");
    meta(&l1.join("mid"), 10, Some("base"));
    meta(&l1.join("y"), 9, Some("/old/f"));
    meta(&u.join("x"), 9, Some("/new/f"));
    meta(&u.join("y"), 9, None);
    meta(&u.join("lost"), 3, None);
    fix_times(&root.join("l1"), 1_600_000_000);
    fix_times(&l2, 1_600_000_000);
    fix_times(&u, 1_600_000_000);
    let layers = format!("{}:{}", l1.display(), l2.display());
    let kernel = kernel_mount(
        &format!(
            "lowerdir={layers},upperdir={},workdir={},metacopy=on,redirect_dir=on",
            u.display(),
            root.join("w").display()
        ),
        &root.join("m_k"),
    );
    // Only the metadata-only copies: the kernel gives `x` the inode of its data file, which
    // `new/f` and `old/f` show too, and then shows `x`'s attributes under those names.
    let files = ["x", "y", "mid"];
    let by_kernel = snapshot_entries(&root.join("m_k"), &files, Fields::MERGED);
    let lost_in_kernel = fs::metadata(root.join("m_k/lost"));
    drop(kernel);
    for (f, content) in [
        ("x", "old data\n"),
        ("y", "old data\n"),
        ("mid", "base data\n"),
    ] {
        let e = &by_kernel.entries[Path::new(f)];
        assert_eq!(
            e.content,
            Some(Ok(fnv64(content.as_bytes()))),
            "kernel: {f}"
        );
    }
    assert_eq!(
        errno(&lost_in_kernel),
        Some(libc::EIO),
        "fixture assumption: the kernel fails the lookup"
    );
    let ovl = Ovlfs::new([&l1, &l2])
        .upper(&u, root.join("w2"))
        .mount(&root.join("m_o"));
    let body = root.join("m_o");
    let through_ovlfs = with_watchdog(BODY_SECS, ovl.path(), move || {
        assert_eq!(
            errno(&fs::metadata(body.join("lost"))),
            Some(libc::EIO),
            "no data anywhere"
        );
        snapshot_entries(&body, &files, Fields::MERGED)
    });
    drop(ovl);
    assert_trees_equal("kernel", &by_kernel, "ovlfs", &through_ovlfs);
}
