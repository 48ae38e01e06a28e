//! Fixture: the three lower layers every run starts from.

use super::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Fixture: three lower layers (top first) using every lower-layer format the kernel reads
// ---------------------------------------------------------------------------------------------

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn set_times(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec + 7,
            tv_nsec: (nsec + 1) % 1_000_000_000,
        },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// Give every object of a layer a deterministic atime/mtime (so both fixture copies agree and
/// copy-up of times is observable).
fn fix_times(layer: &Path, layer_no: u64) {
    let mut stack = vec![layer.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        all.push(d.clone());
        for e in fs::read_dir(&d).expect("read_dir fixture") {
            let p = e.expect("entry").path();
            if fs::symlink_metadata(&p).expect("lstat").is_dir() {
                stack.push(p);
            } else {
                all.push(p);
            }
        }
    }
    for p in all {
        let rel = p.strip_prefix(layer).expect("prefix");
        let h = fnv64(rel.as_os_str().as_bytes()) ^ layer_no;
        set_times(
            &p,
            FIXTURE_TIME + (h % 10_000_000) as i64,
            (h >> 32) as i64 % 1_000_000_000,
        );
    }
}

/// Two names of one file in a lower layer (a copy instead under `OVLFS_RANDOM_IGNORE=lower-hardlinks`).
fn lower_link(existing: &Path, new: &Path) {
    if ignored("lower-hardlinks") {
        fs::copy(existing, new).expect("copy instead of link");
    } else {
        hardlink(existing, new);
    }
}

/// Whether this kernel's overlayfs honours xattr whiteouts in `opaque=x` directories (Linux
/// 6.7+); where it does not, the fixture uses a chardev whiteout instead (with a visible note).
fn kernel_reads_xattr_whiteouts() -> bool {
    static R: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *R.get_or_init(|| {
        let (_t, root) = scratch(&["l1/d", "l2/d", "m"]);
        opaque(&root.join("l1/d"), Opaque::TrustedX);
        whiteout_xattr(&root.join("l1/d/g"), Ns::Trusted);
        write_file(&root.join("l2/d/g"), "g");
        let l = [root.join("l1"), root.join("l2")];
        let reads =
            match catch(|| KernelOverlay::mount(&lower_refs(&l), None, &[], &root.join("m"))) {
                Ok(m) => {
                    let hidden = fs::symlink_metadata(m.join("d/g")).is_err();
                    drop(m);
                    hidden
                }
                Err(_) => false,
            };
        if !reads {
            visible(
                "random_ops: note: this kernel's overlayfs ignores xattr whiteouts (Linux < 6.7?); \
                 the fixture uses no xattr whiteout",
            );
        }
        reads
    })
}

/// Builds the layers under `root` and returns them top first.
pub(crate) fn build_fixture(root: &Path) -> Vec<PathBuf> {
    let l: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("l{i}"))).collect();
    for d in &l {
        mkdirs(d);
    }
    let (l1, l2, l3) = (&l[0], &l[1], &l[2]);

    // ---- l3, the bottom layer
    write_file(&l3.join("a/f1"), "L3 a/f1\n");
    write_file(&l3.join("a/f2"), "L3 a/f2, a bit longer\n");
    write_file(&l3.join("a/b/bf"), "bf\n");
    write_file(&l3.join("a/b/c/deep"), "deep in L3\n");
    write_file(&l3.join("a/rel_src/rel1"), "relative redirect source\n");
    set_xattr(&l3.join("a"), "user.dirx", b"L3 a");
    set_xattr(&l3.join("a/f1"), "user.test", b"f1 L3");
    write_file(&l3.join("hl1"), "hard-linked data\n");
    lower_link(&l3.join("hl1"), &l3.join("hl2"));
    lower_link(&l3.join("hl1"), &l3.join("a/hl3"));
    set_xattr(&l3.join("hl1"), "user.hl", b"shared");
    write_file(
        &l3.join("s"),
        "shadowed: from L3, the longest of the three\n",
    );
    symlink("a/f1", &l3.join("sym"));
    symlink("a", &l3.join("dsym"));
    symlink("nowhere/at/all", &l3.join("dangle"));
    fifo(&l3.join("fifo"));
    file_full(&l3.join("suid"), "setuid root\n", 0o4755, 0, 0);
    file_full(&l3.join("sgid"), "setgid 1000\n", 0o2755, 1000, 1000);
    file_full(&l3.join("suidw"), "world-writable setuid\n", 0o6777, 0, 0);
    file_full(&l3.join("u1000/f"), "owned by 1000\n", 0o644, 1000, 1000);
    file_full(
        &l3.join("u1000/priv"),
        "private to 1000\n",
        0o600,
        1000,
        1000,
    );
    file_full(&l3.join("u1000/sub/x"), "x\n", 0o664, 1000, 1000);
    chown(&l3.join("u1000"), 1000, 1000);
    chown(&l3.join("u1000/sub"), 1000, 1000);
    chmod(&l3.join("u1000/sub"), 0o700);
    file_full(&l3.join("u1001f"), "owned by 1001\n", 0o640, 1001, 1001);
    dir_mode(&l3.join("sticky"), 0o1777);
    file_full(&l3.join("sticky/a1000"), "a1000\n", 0o666, 1000, 1000);
    file_full(&l3.join("sticky/b1001"), "b1001\n", 0o644, 1001, 1001);
    mkdirs(&l3.join("sg"));
    chown(&l3.join("sg"), 0, 1001);
    chmod(&l3.join("sg"), 0o2775);
    file_full(&l3.join("sg/file"), "in setgid dir\n", 0o664, 0, 1001);
    write_file(&l3.join("o/old1"), "old1\n");
    write_file(&l3.join("o/od/odf"), "odf\n");
    write_file(&l3.join("o2/hidden"), "hidden by opaque o2\n");
    write_file(&l3.join("w/gone"), "whited out by L2\n");
    write_file(&l3.join("w/keep"), "kept\n");
    write_file(&l3.join("w/gd/gf"), "in a whited-out dir\n");
    write_file(&l3.join("wd/child"), "whited-out dir child\n");
    write_file(&l3.join("gone_root"), "whited out\n");
    write_file(&l3.join("x/xgone"), "hidden by an xattr whiteout\n");
    write_file(&l3.join("x/xkeep"), "x keep\n");
    write_file(&l3.join("tc"), "file under a dir\n");
    write_file(&l3.join("big"), pattern(300_000, 5));
    {
        let f = fs::File::create(l3.join("sparse")).expect("sparse");
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"after the hole", 200_000)
            .expect("sparse write");
    }
    write_file(&l3.join("xat"), "xattrs\n");
    set_xattr(&l3.join("xat"), "user.test", b"v3");
    set_xattr(&l3.join("xat"), "user.other", b"o3");
    write_file(&l3.join("rd_src/r1"), "r1\n");
    write_file(&l3.join("rd_src/r2"), "r2\n");
    write_file(&l3.join("empty"), "");
    mkdirs(&l3.join("mt"));

    // ---- l2, the middle layer
    write_file(&l2.join("a/f2"), "L2 a/f2\n");
    write_file(&l2.join("a/m2"), "L2 a/m2\n");
    write_file(&l2.join("a/b/c/deep2"), "deep2 in L2\n");
    set_xattr(&l2.join("a/b"), "user.dirx", b"L2 b");
    opaque(&l2.join("o"), Opaque::TrustedY);
    write_file(&l2.join("o/new1"), "new1 in opaque o\n");
    write_file(&l2.join("o2/hidden2"), "hidden2 by opaque o2\n");
    whiteout_chardev(&l2.join("w/gone"));
    whiteout_chardev(&l2.join("w/gd"));
    whiteout_chardev(&l2.join("wd"));
    whiteout_chardev(&l2.join("gone_root"));
    write_file(&l2.join("s"), "shadowed: L2\n");
    write_file(&l2.join("tc/inner"), "dir over a file\n");
    write_file(&l2.join("mh1"), "middle hard link\n");
    lower_link(&l2.join("mh1"), &l2.join("mh2"));
    mkdirs(&l2.join("rd_dst"));
    if !ignored("lower-redirects") {
        set_xattr(&l2.join("rd_dst"), "trusted.overlay.redirect", b"/rd_src");
    }
    write_file(&l2.join("rd_dst/r3"), "r3\n");
    whiteout_chardev(&l2.join("rd_src"));
    fifo(&l2.join("fifo2"));
    file_full(&l2.join("u1000/m"), "L2 in u1000\n", 0o644, 1000, 1000);
    chown(&l2.join("u1000"), 1000, 1000);

    // ---- l1, the top lower layer
    write_file(&l1.join("a/f1"), "L1 a/f1 top\n");
    whiteout_chardev(&l1.join("a/m2"));
    write_file(&l1.join("a/t1"), "top only\n");
    write_file(&l1.join("a/b/c/deep3"), "deep3\n");
    set_xattr(&l1.join("a"), "user.dirx", b"L1 a");
    opaque(&l1.join("x"), Opaque::TrustedX);
    if kernel_reads_xattr_whiteouts() {
        whiteout_xattr(&l1.join("x/xgone"), Ns::Trusted);
    } else {
        whiteout_chardev(&l1.join("x/xgone"));
    }
    write_file(&l1.join("x/xnew"), "x new\n");
    write_file(&l1.join("s"), "L1\n");
    symlink("s", &l1.join("sym2"));
    opaque(&l1.join("o2"), Opaque::TrustedY);
    write_file(&l1.join("o2/top"), "top of o2\n");
    mkdirs(&l1.join("a/rel_dst"));
    if !ignored("lower-redirects") {
        set_xattr(
            &l1.join("a/rel_dst"),
            "trusted.overlay.redirect",
            b"rel_src",
        );
    }
    write_file(&l1.join("a/rel_dst/rel2"), "rel2\n");
    whiteout_chardev(&l1.join("a/rel_src"));
    write_file(&l1.join("ne/n1/n2/leaf"), "leaf, 3 deep\n");
    set_xattr(&l1.join("ne/n1"), "user.deep", b"n1");

    for (i, d) in l.iter().enumerate() {
        fix_times(d, i as u64 + 1);
    }
    l
}
