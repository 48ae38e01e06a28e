//! Static symlinks in the layers pointing outside them: the daemon never follows them.

use super::*;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Static symlinks in the layers
// ---------------------------------------------------------------------------------------------

#[test]
fn symlinks_in_layers_are_never_followed_by_the_daemon() {
    const TEST: &str = "symlinks_in_layers_are_never_followed_by_the_daemon";
    if !require_root(TEST) {
        return;
    }
    // S/l1, S/l2, S/upper, S/work: `../out` from a layer root is S/out (daemon side);
    // S/a/b/mnt: `../out` from the mount root is S/a/b/out (caller side).
    let (_t, s) = scratch(&["l1", "l2", "upper", "work", "a/b/mnt", "a/b/out"]);
    let outside = Outside::new(&s.join("out"));
    caller_side(&s.join("a/b/out"));
    let (l1, l2, upper) = (s.join("l1"), s.join("l2"), s.join("upper"));
    let out_abs = s.join("out");
    let chain = format!(
        "{}{}",
        "../".repeat(16),
        out_abs.to_string_lossy().trim_start_matches('/')
    );
    // Lower 1 (top).
    symlink("../out", &l1.join("rel"));
    symlink("../out/secret", &l1.join("rel_secret"));
    symlink("../../out", &l1.join("sub/rel"));
    symlink("../../out/secret", &l1.join("sub/rel_secret"));
    symlink(&chain, &l1.join("chain"));
    symlink(&out_abs, &l1.join("abs"));
    symlink(out_abs.join("secret"), &l1.join("abs_secret"));
    symlink("../out/dir", &l1.join("pdir"));
    symlink("../out", &l1.join("shadowed"));
    write_file(&l1.join("shadow2/x"), b"lower shadow2");
    for f in ["file1", "file2", "file3"] {
        write_file(&l1.join(f), f.as_bytes());
    }
    write_file(&l1.join("d/f"), b"d/f");
    // Lower 2 (bottom): a directory that the top layer's symlink shadows.
    write_file(&l2.join("shadowed/lower2_file"), b"l2");
    write_file(&l2.join("l2only"), b"l2only");
    // Upper: symlinks out of the upper layer, one shadowing a lower directory.
    symlink("../out", &upper.join("up_rel"));
    symlink(out_abs.join("secret"), &upper.join("up_abs"));
    symlink("../../out/secret", &upper.join("ud/l"));
    symlink("../out", &upper.join("shadow2"));
    let outside_names_top: BTreeSet<String> = names(&s);

    let mnt = s.join("a/b/mnt");
    let m = Ovlfs::new([&l1, &l2])
        .upper(&upper, s.join("work"))
        .mount(&mnt);
    let mut failures = Vec::new();
    let mut check = |ok: bool, msg: String| {
        if !ok {
            failures.push(msg);
        }
    };

    // Symlinks are returned to the kernel as symlinks, with their exact targets.
    for (name, target) in [
        ("rel", PathBuf::from("../out")),
        ("rel_secret", PathBuf::from("../out/secret")),
        ("sub/rel", PathBuf::from("../../out")),
        ("chain", PathBuf::from(&chain)),
        ("abs", out_abs.clone()),
        ("pdir", PathBuf::from("../out/dir")),
        ("shadowed", PathBuf::from("../out")),
        ("up_rel", PathBuf::from("../out")),
        ("ud/l", PathBuf::from("../../out/secret")),
        ("shadow2", PathBuf::from("../out")),
    ] {
        let p = mnt.join(name);
        let md = fs::symlink_metadata(&p);
        check(
            md.as_ref().is_ok_and(|m| m.file_type().is_symlink()),
            format!("{name}: not a symlink through the mount: {md:?}"),
        );
        let t = fs::read_link(&p);
        check(
            t.as_ref().is_ok_and(|t| *t == target),
            format!("{name}: readlink gives {t:?}, expected {target:?}"),
        );
    }
    // Following relative links happens in the caller's view: the caller-side files.
    for name in [
        "rel_secret",
        "sub/rel_secret",
        "up_rel/secret",
        "ud/l",
        "pdir/inner",
    ] {
        let c = fs::read(mnt.join(name));
        check(
            c.as_deref().is_ok_and(|c| c == CALLER_SIDE),
            format!(
                "reading {name} through the mount gave {:?}, not the caller-side file",
                c.map(|c| String::from_utf8_lossy(&c).into_owned())
            ),
        );
    }
    for name in ["rel", "shadowed", "shadow2", "sub/rel"] {
        let n = names(&mnt.join(name));
        check(
            n.contains("caller_marker") && !n.contains("lower2_file") && !n.contains("x"),
            format!("listing {name}/ through the mount gave {n:?}, not the caller-side directory"),
        );
    }
    // O_NOFOLLOW on a layer symlink: ELOOP, never the target.
    for name in ["abs", "chain", "rel_secret", "up_abs"] {
        let r = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(mnt.join(name));
        check(
            errno(&r) == Some(libc::ELOOP),
            format!(
                "open(O_NOFOLLOW) of symlink {name}: {}",
                errno_name(errno(&r))
            ),
        );
    }
    // Writes, creations and chmod through relative links: caller side.
    let _ = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("rel_secret"))
        .and_then(|mut f| f.write_all(b"appended via rel_secret\n"));
    let _ = fs::write(mnt.join("rel/created_via_rel"), b"x");
    let _ = fs::create_dir(mnt.join("sub/rel/dir_via_rel"));
    let _ = fs::write(mnt.join("pdir/created_via_pdir"), b"x");
    let _ = fs::set_permissions(mnt.join("up_rel/secret"), fs::Permissions::from_mode(0o600));
    let _ = fs::write(mnt.join("shadowed/created_via_shadowed"), b"x");
    // Operations on the symlinks themselves (copy-up of symlinks, never of their targets).
    for name in [
        "abs",
        "abs_secret",
        "chain",
        "rel",
        "rel_secret",
        "pdir",
        "sub/rel",
        "up_abs",
        "ud/l",
    ] {
        let p = mnt.join(name);
        let r = std::os::unix::fs::lchown(&p, Some(1000), Some(1000));
        check(r.is_ok(), format!("lchown {name}: {r:?}"));
        let _ = try_set_xattr(&p, "trusted.via_link", b"1");
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 5,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 6,
                tv_nsec: 0,
            },
        };
        let r = rustix::fs::utimensat(
            rustix::fs::CWD,
            &p,
            &ts,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        );
        check(r.is_ok(), format!("utimensat(NOFOLLOW) {name}: {r:?}"));
        let md = fs::symlink_metadata(&p);
        check(
            md.as_ref()
                .is_ok_and(|m| m.file_type().is_symlink() && m.uid() == 1000 && m.mtime() == 6),
            format!("{name} after lchown/utimensat: {md:?}"),
        );
    }
    let r = fs::hard_link(mnt.join("abs"), mnt.join("abs_hardlink"));
    check(r.is_ok(), format!("link of symlink abs: {r:?}"));
    check(
        fs::read_link(mnt.join("abs_hardlink")).is_ok_and(|t| t == out_abs),
        "hard link of symlink abs is not the symlink".into(),
    );
    let _ = fs::rename(mnt.join("chain"), mnt.join("chain_moved"));
    let _ = fs::rename(mnt.join("file1"), mnt.join("abs"));
    let _ = fs::rename(mnt.join("file2"), mnt.join("rel/file2"));
    let _ = fs::rename(mnt.join("file3"), mnt.join("pdir/file3"));
    let _ = fs::rename(mnt.join("d"), mnt.join("rel/d"));
    let _ = fs::set_permissions(mnt.join("ud"), fs::Permissions::from_mode(0o700));
    // The upper holds copies of the symlinks, never copies of their targets.
    for name in ["abs_secret", "rel", "pdir", "sub/rel", "up_abs"] {
        let md = fs::symlink_metadata(upper.join(name));
        check(
            md.as_ref().is_ok_and(|m| m.file_type().is_symlink()),
            format!("upper/{name} after copy-up: {md:?}"),
        );
    }
    // rm -rf of everything (never follows).
    for e in fs::read_dir(&mnt).expect("read mnt") {
        let p = e.expect("entry").path();
        let r = rm_rf(&p);
        check(r.is_ok(), format!("rm -rf {}: {r:?}", p.display()));
    }
    check(
        names(&mnt).is_empty(),
        format!("mount not empty after rm -rf: {:?}", names(&mnt)),
    );
    assert_daemon_healthy(&m, TEST);
    drop(m);

    outside.assert_untouched(TEST);
    assert_eq!(
        names(&s),
        outside_names_top,
        "something was created next to the layers"
    );
    // The operations did happen (in the caller's view): the caller side shows them.
    let cs = fs::read(s.join("a/b/out/secret")).expect("read caller side");
    assert!(
        cs.ends_with(b"appended via rel_secret\n"),
        "the append through rel_secret did not reach the caller-side file: the test did nothing"
    );
    assert!(
        failures.is_empty(),
        "{TEST}: {} failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
