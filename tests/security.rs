//! Security (issue 6 §5–§7, DESIGN.md §5 "Security"):
//!
//! - `symlinks_in_layers_*`: lowers and the upper hold symlinks pointing outside the layers
//!   (absolute, `../../..` chains, relative ones, a symlinked parent directory, a symlink in an
//!   upper layer shadowing a lower directory). The "outside" directory as the daemon would see it
//!   (targets resolved relative to the layer directories) is a tmpfs mounted `strictatime`,
//!   whose every entry is snapshotted with atime, mtime, ctime, mode, owner, content and
//!   xattrs: reads, listings, writes, creations, chmod/chown/xattr changes made by a daemon
//!   that followed a layer symlink all show there. Relative symlinks resolve to a different
//!   directory in the caller's view (the mount sits deeper), so operations through the mount may
//!   follow them legitimately, and their results must come from the caller-side directory.
//! - `*_swap_race`: a thread swaps (RENAME_EXCHANGE, directly in the layers) upper and lower
//!   directories and files with symlinks to the outside directory, and plants symlinks where
//!   the daemon is about to copy up parent directories, while several threads operate through
//!   the mount. The outside directory must stay untouched.
//! - `permissions_*`: with the daemon as root (`allow_other`, `default_permissions`), uid 1000
//!   cannot read or change uid 1001's 0600 file, cannot delete or rename in another's sticky
//!   directory, and copy-ups it triggers keep every mode and owner (never wider).
//! - `setuid_setgid_*`: setuid/setgid clearing on write, truncate, O_TRUNC, chown and chmod by
//!   a non-member, compared with the same operations on a plain directory of the host's
//!   filesystem (ext4 here) and, where available, on the kernel's overlayfs.
//! - `no_panic_*`: a storm of racing and malformed requests (concurrent rename/exchange/unlink/
//!   readdir/open on the same names, rm -r during readdir, 255/256/1024/1025-byte names, names
//!   with odd bytes and overlay-reserved names, 64 KiB xattr values, tiny xattr buffers, deleted
//!   open files, RENAME_WHITEOUT from a caller, 0/0 device nodes, huge offsets, fallocate
//!   modes, locks, O_TMPFILE): the daemon stays alive, logs no panic, answers no EIO, keeps
//!   serving, and exits 0 when unmounted.
//!
//! CI: `cargo test --test security`.
//! Long: `OVLFS_RACE_SECS=120 OVLFS_STORM_SECS=300 cargo test --test security -- --nocapture`.

mod common;

use common::rng::{Rng, env_u64};

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Utilities
// ---------------------------------------------------------------------------------------------

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

/// Everything observable about a directory tree, atimes included (on a strictatime mount
/// every read and listing updates them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
    link: Option<PathBuf>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// lstat-level snapshot of `entries` under `root` without listing or reading anything (on a
/// strictatime mount a listing or a read of ours would change the atimes we compare).
fn observe(root: &Path, entries: &[&str]) -> BTreeMap<PathBuf, Observed> {
    let mut out = BTreeMap::new();
    for rel in entries {
        let p = root.join(rel);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let mut xattrs: Vec<(String, Vec<u8>)> = list_xattrs(&p)
            .unwrap_or_default()
            .into_iter()
            .map(|n| {
                let v = get_xattr(&p, &n).unwrap_or_default();
                (n, v)
            })
            .collect();
        xattrs.sort();
        out.insert(
            PathBuf::from(rel),
            Observed {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                size: if md.is_dir() { 0 } else { md.size() },
                atime: (md.atime(), md.atime_nsec()),
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                link: md
                    .file_type()
                    .is_symlink()
                    .then(|| fs::read_link(&p).expect("readlink")),
                xattrs,
            },
        );
    }
    out
}

fn diff_observed(a: &BTreeMap<PathBuf, Observed>, b: &BTreeMap<PathBuf, Observed>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, x) in a {
        match b.get(k) {
            None => d.push(format!("removed: /{}", k.display())),
            Some(y) if x != y => {
                let mut what = Vec::new();
                if x.atime != y.atime {
                    what.push("atime (read or listed)");
                }
                if x.mtime != y.mtime {
                    what.push("mtime (written)");
                }
                if x.ctime != y.ctime {
                    what.push("ctime (changed)");
                }
                if (x.mode, x.uid, x.gid) != (y.mode, y.uid, y.gid) {
                    what.push("mode/owner");
                }
                if x.size != y.size {
                    what.push("size");
                }
                if x.xattrs != y.xattrs {
                    what.push("xattrs");
                }
                d.push(format!(
                    "changed: /{}: {}\n      before {x:?}\n      after  {y:?}",
                    k.display(),
                    what.join(", ")
                ));
            }
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("created: /{}", k.display()));
        }
    }
    d
}

/// The daemon-side "outside" directory: a strictatime tmpfs with a sentinel tree.
struct Outside {
    path: PathBuf,
    _guard: MountGuard,
    before: BTreeMap<PathBuf, Observed>,
}

/// Every entry of the outside directory.
const OUTSIDE_ENTRIES: &[&str] = &["", "secret", "dir", "dir/inner", "empty"];

const DAEMON_SIDE: &[u8] = b"DAEMON-SIDE SECRET: never readable through the overlay\n";
const CALLER_SIDE: &[u8] = b"caller-side file\n";

impl Outside {
    fn new(path: &Path) -> Outside {
        mkdirs(path);
        let guard = MountGuard::mount(
            &["-t", "tmpfs", "-o", "size=4m,mode=755,strictatime", "tmpfs"],
            path,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        file_full(&path.join("secret"), DAEMON_SIDE, 0o640, 0, 0);
        write_file(&path.join("dir/inner"), DAEMON_SIDE);
        mkdirs(&path.join("empty"));
        set_xattr(&path.join("secret"), "user.sentinel", b"1");
        fix_times(path, 1_000_000_000);
        Outside {
            path: path.to_path_buf(),
            _guard: guard,
            before: observe(path, OUTSIDE_ENTRIES),
        }
    }

    /// Panics with every trace the daemon left in the outside directory.
    fn assert_untouched(&self, what: &str) {
        let now = observe(&self.path, OUTSIDE_ENTRIES);
        let mut d = diff_observed(&self.before, &now);
        // Listing (after the comparison, it changes atimes): nothing was created.
        for (dir, want) in [
            ("", &["dir", "empty", "secret"][..]),
            ("dir", &["inner"]),
            ("empty", &[]),
        ] {
            let have: Vec<String> = names(&self.path.join(dir)).into_iter().collect();
            if have != want {
                d.push(format!("/{dir} now holds {have:?} instead of {want:?}"));
            }
        }
        assert!(
            d.is_empty(),
            "{what}: the directory outside the layers was touched ({} change(s)):\n  {}",
            d.len(),
            d.join("\n  ")
        );
        // Content (read last: it changes the atimes we no longer compare).
        assert_eq!(
            fs::read(self.path.join("secret")).expect("read secret"),
            DAEMON_SIDE,
            "{what}: outside/secret content changed"
        );
    }
}

/// The caller-side twin of the outside directory (where relative symlinks lead in the
/// caller's view).
fn caller_side(path: &Path) {
    write_file(&path.join("secret"), CALLER_SIDE);
    write_file(&path.join("dir/inner"), CALLER_SIDE);
    write_file(&path.join("caller_marker"), b"");
    mkdirs(&path.join("empty"));
}

/// Removes a tree through the mount without following symlinks (like rm -rf).
fn rm_rf(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if md.is_dir() {
        for e in fs::read_dir(p)? {
            rm_rf(&e?.path())?;
        }
        fs::remove_dir(p)
    } else {
        fs::remove_file(p)
    }
}

fn assert_daemon_healthy(m: &OvlfsMount, what: &str) {
    let pid = m.pid().expect("daemon pid");
    assert!(
        process_alive(pid),
        "{what}: the daemon died; stderr:\n{}",
        m.stderr()
    );
    fs::metadata(m.path()).unwrap_or_else(|e| panic!("{what}: stat of the mount root: {e}"));
    fs::read_dir(m.path()).unwrap_or_else(|e| panic!("{what}: readdir of the mount root: {e}"));
    let err = m.stderr();
    assert!(
        !err.contains("panicked"),
        "{what}: the daemon logged a panic:\n{err}"
    );
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

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

// ---------------------------------------------------------------------------------------------
// Races: layer directories and files swapped for symlinks while operations run
// ---------------------------------------------------------------------------------------------

fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(io_err)
}

/// Worker operations through the mount on `rel` (errors are expected while the layers change
/// under the daemon; only a daemon escape or death matters). Returns EIO-like failures.
fn race_op(mnt: &Path, rng: &mut Rng, tid: usize, n: u64, eio: &Mutex<Vec<String>>) {
    let i = rng.below(4);
    let k = rng.below(8);
    let targets = [
        format!("d{i}"),
        format!("ld{i}"),
        format!("p{}", rng.below(64)),
    ];
    let dir = mnt.join(&targets[rng.below(3) as usize]);
    let file = mnt.join(format!("f{i}"));
    let fresh = dir.join(format!("t{tid}_{n}"));
    let r: io::Result<()> = match rng.below(14) {
        0 => fs::write(&fresh, b"data"),
        1 => fs::create_dir(&fresh),
        2 => fs::read_dir(&dir).map(|rd| rd.for_each(drop)),
        3 => fs::OpenOptions::new()
            .append(true)
            .open(dir.join("x"))
            .and_then(|mut f| f.write_all(b"appended")),
        4 => fs::set_permissions(dir.join("x"), fs::Permissions::from_mode(0o600)),
        5 => std::os::unix::fs::lchown(dir.join("x"), Some(1000), None),
        6 => try_set_xattr(&dir.join("x"), "user.race", b"1"),
        7 => fs::rename(
            dir.join(format!("m{k}")),
            dir.join(format!("m{}", (k + 1) % 8)),
        ),
        8 => fs::remove_file(dir.join(format!("m{k}")))
            .and_then(|_| fs::write(dir.join(format!("m{k}")), b"m")),
        9 => fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|mut f| f.write_all(b"file write")),
        10 => fs::set_permissions(&file, fs::Permissions::from_mode(0o640)),
        11 => {
            let c = std::ffi::CString::new(file.as_os_str().as_bytes()).expect("path");
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::truncate(c.as_ptr(), 3) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        12 => try_set_xattr(&file, "user.race", b"2"),
        _ => fs::read(dir.join("x")).map(drop),
    };
    if let Err(e) = r
        && matches!(
            e.raw_os_error(),
            Some(libc::EIO) | Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        )
    {
        eio.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{}: {e}", dir.display()));
    }
}

#[test]
fn layer_symlink_swap_race_never_redirects_the_daemon() {
    const TEST: &str = "layer_symlink_swap_race_never_redirects_the_daemon";
    if !require_root(TEST) {
        return;
    }
    let secs = env_u64("OVLFS_RACE_SECS", 5);
    let (_t, s) = scratch(&["l1", "upper", "work", "stash", "a/b/mnt", "a/b/out"]);
    let outside = Outside::new(&s.join("out"));
    caller_side(&s.join("a/b/out"));
    let (l1, upper, stash) = (s.join("l1"), s.join("upper"), s.join("stash"));
    let mut swaps: Vec<(PathBuf, PathBuf)> = Vec::new();
    for i in 0..4 {
        // An upper directory and a lower directory, each with a symlink twin in the stash.
        for (layer, name) in [(&upper, format!("d{i}")), (&l1, format!("ld{i}"))] {
            write_file(&layer.join(&name).join("x"), b"x");
            for k in 0..8 {
                write_file(&layer.join(&name).join(format!("m{k}")), b"m");
            }
            symlink("../out", &stash.join(format!("{name}_link")));
            swaps.push((layer.join(&name), stash.join(format!("{name}_link"))));
        }
        write_file(&upper.join(format!("f{i}")), b"upper file");
        symlink("../out/secret", &stash.join(format!("f{i}_link")));
        swaps.push((
            upper.join(format!("f{i}")),
            stash.join(format!("f{i}_link")),
        ));
    }
    // Lower directories the daemon has to copy up (the planting thread races it).
    for i in 0..64 {
        write_file(&l1.join(format!("p{i}/x")), b"p");
    }
    let mnt = s.join("a/b/mnt");
    let m = Ovlfs::new([&l1]).upper(&upper, s.join("work")).mount(&mnt);
    let stop = Arc::new(AtomicBool::new(false));
    let eio = Arc::new(Mutex::new(Vec::new()));
    let swaps = Arc::new(swaps);
    let (stop2, eio2, swaps2, mnt2, upper2) = (
        stop.clone(),
        eio.clone(),
        swaps.clone(),
        mnt.clone(),
        upper.clone(),
    );
    let counts = with_watchdog(secs + 120, &mnt, move || {
        let swapped = Arc::new(AtomicU64::new(0));
        let planted = Arc::new(AtomicU64::new(0));
        let mut hs = Vec::new();
        {
            let (stop, swaps, swapped) = (stop2.clone(), swaps2.clone(), swapped.clone());
            hs.push(thread::spawn(move || {
                let mut parity = vec![false; swaps.len()];
                while !stop.load(Ordering::Relaxed) {
                    for (i, (a, b)) in swaps.iter().enumerate() {
                        if exchange(a, b).is_ok() {
                            parity[i] = !parity[i];
                            swapped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    thread::yield_now();
                }
                // Put every real object back in place.
                for (i, (a, b)) in swaps.iter().enumerate() {
                    if parity[i] {
                        exchange(a, b).expect("swap back");
                    }
                }
            }));
        }
        {
            let (stop, planted, upper) = (stop2.clone(), planted.clone(), upper2.clone());
            hs.push(thread::spawn(move || {
                // Plant symlinks where not-yet-copied-up lower directories will go, leave
                // them a few milliseconds (copy-ups meanwhile find the name taken), remove.
                let mut rng = Rng::new(99);
                while !stop.load(Ordering::Relaxed) {
                    let mut mine = Vec::new();
                    for _ in 0..8 {
                        let p = upper.join(format!("p{}", rng.below(64)));
                        if std::os::unix::fs::symlink("../out", &p).is_ok() {
                            planted.fetch_add(1, Ordering::Relaxed);
                            mine.push(p);
                        }
                    }
                    thread::sleep(Duration::from_millis(rng.below(5) + 1));
                    for p in mine {
                        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                            let _ = fs::remove_file(&p);
                        }
                    }
                }
            }));
        }
        for tid in 0..3 {
            let (stop, eio, mnt) = (stop2.clone(), eio2.clone(), mnt2.clone());
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(tid as u64 + 1);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    race_op(&mnt, &mut rng, tid, n, &eio);
                    n += 1;
                }
            }));
        }
        // Evict the kernel's dentries now and then, so that the kernel looks the swapped
        // names up again (from the daemon) while they are symlinks.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            thread::sleep(Duration::from_millis(250));
            let _ = fs::write("/proc/sys/vm/drop_caches", b"2");
        }
        stop2.store(true, Ordering::Relaxed);
        for h in hs {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
        (
            swapped.load(Ordering::Relaxed),
            planted.load(Ordering::Relaxed),
        )
    });
    drop(stop);
    visible(&format!(
        "{TEST}: {} exchanges, {} planted symlinks in {secs} s",
        counts.0, counts.1
    ));
    assert!(counts.0 > 100, "the swapping thread barely ran");
    assert_daemon_healthy(&m, TEST);
    // EIO is an acceptable answer while the layers are changed under the daemon (a caught
    // panic would also answer EIO, but shows in the log checked above); ENOTCONN is not.
    let eio = eio.lock().map(|e| e.clone()).unwrap_or_default();
    let broken: Vec<String> = eio
        .iter()
        .filter(|e| !e.contains("os error 5"))
        .cloned()
        .collect();
    let unreadable = (0..64)
        .filter(|i| fs::read_dir(mnt.join(format!("p{i}"))).is_err())
        .count();
    visible(&format!(
        "{TEST}: {} operations answered EIO during the race; {unreadable} of 64 copied-up \
         directories unreadable afterwards",
        eio.len()
    ));
    drop(m);
    outside.assert_untouched(TEST);
    assert!(
        broken.is_empty(),
        "{TEST}: {} operations failed with ENOTCONN/ECONNABORTED: {:?}",
        broken.len(),
        &broken[..broken.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------------
// Permissions with allow_other
// ---------------------------------------------------------------------------------------------

const USER_A: u32 = 1000;
const USER_B: u32 = 1001;

/// Runs `script` with `sh -c` as uid/gid `id` without supplementary groups.
fn as_user(id: u32, script: &str) -> CmdOutput {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .arg("--clear-groups")
        .args(["--", "sh", "-c"])
        .arg(format!("umask 022; {script}"));
    run_cmd(&mut c, Duration::from_secs(30)).expect("run setpriv")
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

fn perm_fixture(root: &Path) {
    dir_mode(&root.join("home_b"), 0o755);
    chown(&root.join("home_b"), USER_B, USER_B);
    file_full(
        &root.join("home_b/secret_b"),
        b"B's secret",
        0o600,
        USER_B,
        USER_B,
    );
    file_full(
        &root.join("home_b/b_rw"),
        b"B's readable",
        0o644,
        USER_B,
        USER_B,
    );
    dir_mode(&root.join("sticky"), 0o1777);
    file_full(
        &root.join("sticky/b_file"),
        b"B in sticky",
        0o644,
        USER_B,
        USER_B,
    );
    file_full(
        &root.join("sticky/b_shared"),
        b"B shared",
        0o666,
        USER_B,
        USER_B,
    );
    file_full(
        &root.join("sticky/a_file"),
        b"A in sticky",
        0o644,
        USER_A,
        USER_A,
    );
    dir_mode(&root.join("home_a/sub"), 0o750);
    chown(&root.join("home_a/sub"), USER_A, USER_A);
    chmod(&root.join("home_a"), 0o700);
    chown(&root.join("home_a"), USER_A, USER_A);
    file_full(
        &root.join("home_a/sub/a_deep"),
        b"A deep",
        0o600,
        USER_A,
        USER_A,
    );
    fix_times(root, 1_000_000_000);
}

/// (who, script with ROOT for the tree, must succeed)
const PERM_CASES: &[(u32, &str, bool)] = &[
    (USER_A, "cat ROOT/home_b/secret_b", false),
    (USER_A, "echo x >> ROOT/home_b/secret_b", false),
    (USER_A, "chmod 666 ROOT/home_b/secret_b", false),
    (USER_A, "chown 1000 ROOT/home_b/secret_b", false),
    (USER_A, "touch -d @12345 ROOT/home_b/b_rw", false),
    (USER_A, "echo x >> ROOT/home_b/b_rw", false),
    (USER_A, "truncate -s 0 ROOT/home_b/b_rw", false),
    (USER_A, "setfattr -n user.x -v 1 ROOT/home_b/b_rw", false),
    (USER_A, "rm -f ROOT/home_b/b_rw", false),
    (USER_A, "mv ROOT/home_b/b_rw ROOT/sticky/", false),
    (USER_A, "rm -f ROOT/sticky/b_file", false),
    (USER_A, "mv ROOT/sticky/b_file ROOT/sticky/stolen", false),
    (USER_A, "mv ROOT/sticky/a_file ROOT/sticky/b_file", false),
    (USER_B, "cat ROOT/home_a/sub/a_deep", false),
    (USER_B, "ls ROOT/home_a", false),
    (USER_B, "cat ROOT/home_b/secret_b", true),
    (USER_A, "cat ROOT/home_b/b_rw", true),
    (USER_A, "rm ROOT/sticky/a_file", true),
    (USER_A, "echo more >> ROOT/home_a/sub/a_deep", true),
    (USER_A, "echo new > ROOT/home_a/newfile", true),
    (USER_A, "echo shared >> ROOT/sticky/b_shared", true),
];

#[test]
fn permissions_with_allow_other_are_enforced_and_never_widened() {
    const TEST: &str = "permissions_with_allow_other_are_enforced_and_never_widened";
    if !require_root(TEST) {
        return;
    }
    let (_t, s) = scratch(&["lower", "upper", "work", "mnt", "plain"]);
    chmod(&s, 0o755);
    let (lower, upper, plain) = (s.join("lower"), s.join("upper"), s.join("plain"));
    perm_fixture(&lower);
    perm_fixture(&plain);
    let lower_before = snapshot_tree(&lower);
    let mnt = s.join("mnt");
    let m = Ovlfs::new([&lower])
        .upper(&upper, s.join("work"))
        .opt("allow_other")
        .mount(&mnt);
    let mut failures = Vec::new();
    for (who, script, ok) in PERM_CASES {
        let run = |root: &Path| {
            let o = as_user(*who, &script.replace("ROOT", &root.display().to_string()));
            let err = o.stderr.replace(&root.display().to_string(), "ROOT");
            (o.success(), err.trim().to_string())
        };
        let reference = run(&plain);
        let got = run(&mnt);
        assert_eq!(
            reference.0, *ok,
            "test premise: `{script}` as uid {who} on plain ext4 gave {reference:?}"
        );
        if got != reference {
            failures.push(format!(
                "uid {who}: `{script}`: ovlfs {got:?}, plain ext4 {reference:?}"
            ));
        }
    }
    // Denied operations left nothing; copy-ups kept every mode and owner.
    for rel in [
        "home_a",
        "home_a/sub",
        "home_a/sub/a_deep",
        "sticky",
        "sticky/b_shared",
    ] {
        let l = owner_mode(&lower.join(rel));
        let u = fs::symlink_metadata(upper.join(rel)).map(|_| owner_mode(&upper.join(rel)));
        let mg = owner_mode(&mnt.join(rel));
        if u.as_ref().ok() != Some(&l) || mg != l {
            let show = |(u, g, m): (u32, u32, u32)| format!("{u}:{g} {m:o}");
            failures.push(format!(
                "{rel}: copy-up changed owner/mode: lower {}, upper {}, merged {}",
                show(l),
                u.map(show).unwrap_or_else(|e| e.to_string()),
                show(mg)
            ));
        }
    }
    let (newfile, plain_new) = (
        owner_mode(&upper.join("home_a/newfile")),
        owner_mode(&plain.join("home_a/newfile")),
    );
    if newfile != plain_new {
        failures.push(format!(
            "home_a/newfile created by uid {USER_A}: {newfile:?}, on ext4 {plain_new:?}"
        ));
    }
    for rel in ["home_b/secret_b", "home_b/b_rw", "sticky/b_file"] {
        if fs::symlink_metadata(upper.join(rel)).is_ok() {
            failures.push(format!(
                "upper/{rel} exists: a denied operation caused a copy-up or a whiteout"
            ));
        }
        if fs::read(mnt.join(rel)).ok() != fs::read(lower.join(rel)).ok() {
            failures.push(format!("{rel} changed in the merged view"));
        }
    }
    if names(&mnt.join("sticky")) != names(&plain.join("sticky")) {
        failures.push(format!(
            "merged sticky/ holds {:?}, ext4 {:?}",
            names(&mnt.join("sticky")),
            names(&plain.join("sticky"))
        ));
    }
    assert_daemon_healthy(&m, TEST);
    drop(m);
    assert_trees_equal(
        "lower before",
        &lower_before,
        "lower after",
        &snapshot_tree(&lower),
    );
    assert!(
        failures.is_empty(),
        "{TEST}: {} failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// setuid / setgid clearing, compared with ext4 and the kernel's overlayfs
// ---------------------------------------------------------------------------------------------

/// (name, mode, uid, gid, who acts, shell action with FILE for the path)
const SUID_CASES: &[(&str, u32, u32, u32, u32, &str)] = &[
    ("w_suid", 0o6777, USER_B, USER_B, USER_A, "echo x >> FILE"),
    ("w_owner", 0o6775, USER_A, USER_A, USER_A, "echo x >> FILE"),
    (
        "t_suid",
        0o6777,
        USER_B,
        USER_B,
        USER_A,
        "truncate -s 3 FILE",
    ),
    ("o_suid", 0o6777, USER_B, USER_B, USER_A, ": > FILE"),
    ("c_suid", 0o6755, USER_B, USER_B, 0, "chown 1002 FILE"),
    ("c_sgid", 0o2755, USER_B, USER_B, 0, "chgrp 1003 FILE"),
    (
        "m_sgid_nonmember",
        0o755,
        USER_A,
        USER_B,
        USER_A,
        "chmod 2755 FILE",
    ),
    (
        "m_sgid_member",
        0o755,
        USER_A,
        USER_A,
        USER_A,
        "chmod 2755 FILE",
    ),
    ("r_root_write", 0o6777, USER_B, USER_B, 0, "echo x >> FILE"),
];

/// setgid without group-execute on a file written by a non-member of its group: ext4 and the
/// kernel's overlayfs clear it (Linux ≥ 6.2 rules); FUSE's own kernel-side clearing only drops
/// setgid together with group-execute, so the daemon has to do it.
const SGID_NOGX_CASES: &[(&str, u32, u32, u32, u32, &str)] = &[
    (
        "w_sgid_nogx",
        0o2666,
        USER_B,
        USER_B,
        USER_A,
        "echo x >> FILE",
    ),
    (
        "t_sgid_nogx",
        0o2666,
        USER_B,
        USER_B,
        USER_A,
        "truncate -s 1 FILE",
    ),
];

fn suid_fixture(dir: &Path, prefix: &str, cases: &[(&str, u32, u32, u32, u32, &str)]) {
    for (name, mode, uid, gid, _, _) in cases {
        file_full(
            &dir.join(format!("{prefix}{name}")),
            b"content",
            *mode,
            *uid,
            *gid,
        );
    }
}

/// Runs every case on `root` (files `lo_*` from a lower, `up_*` already in the upper).
fn suid_run(
    root: &Path,
    cases: &[(&str, u32, u32, u32, u32, &str)],
) -> BTreeMap<String, (u32, u32, u32)> {
    let mut out = BTreeMap::new();
    for prefix in ["lo_", "up_"] {
        for (name, _, _, _, who, action) in cases {
            let file = root.join(format!("{prefix}{name}"));
            let script = action.replace("FILE", &file.display().to_string());
            let o = if *who == 0 {
                let mut c = Command::new("sh");
                c.args(["-c", &script]);
                run_cmd(&mut c, Duration::from_secs(30)).expect("sh")
            } else {
                as_user(*who, &script)
            };
            assert!(
                o.success(),
                "`{script}` as uid {who} failed: {}",
                o.stderr.trim()
            );
            out.insert(format!("{prefix}{name}"), owner_mode(&file));
        }
    }
    out
}

fn suid_compare(test: &str, cases: &[(&str, u32, u32, u32, u32, &str)]) {
    const TEST: &str = "setuid_setgid";
    if !require_root(test) {
        return;
    }
    let (_t, s) = scratch(&[
        "plain", "lower", "upper", "work", "mnt", "klower", "kupper", "kwork", "kmnt",
    ]);
    chmod(&s, 0o755);
    // Reference: the host filesystem itself.
    suid_fixture(&s.join("plain"), "lo_", cases);
    suid_fixture(&s.join("plain"), "up_", cases);
    let reference = suid_run(&s.join("plain"), cases);
    // ovlfs.
    suid_fixture(&s.join("lower"), "lo_", cases);
    suid_fixture(&s.join("upper"), "up_", cases);
    let m = Ovlfs::new([s.join("lower")])
        .upper(s.join("upper"), s.join("work"))
        .opt("allow_other")
        .mount(&s.join("mnt"));
    let ovl = suid_run(&s.join("mnt"), cases);
    // Where the operation copied the file up (or it was there), the upper must agree.
    let ovl_upper: BTreeMap<String, (u32, u32, u32)> = ovl
        .keys()
        .filter(|k| s.join("upper").join(k).exists())
        .map(|k| (k.clone(), owner_mode(&s.join("upper").join(k))))
        .collect();
    assert_daemon_healthy(&m, test);
    drop(m);
    // The kernel's overlayfs, when available.
    let kernel = if kernel_overlay_available() {
        suid_fixture(&s.join("klower"), "lo_", cases);
        suid_fixture(&s.join("kupper"), "up_", cases);
        let k = KernelOverlay::mount(
            &[&s.join("klower")],
            Some((&s.join("kupper"), &s.join("kwork"))),
            &[],
            &s.join("kmnt"),
        );
        let r = suid_run(&s.join("kmnt"), cases);
        drop(k);
        Some(r)
    } else {
        visible(&format!(
            "{test}: kernel overlayfs not available: comparing with ext4 only"
        ));
        None
    };
    let mut failures = Vec::new();
    for (k, want) in &reference {
        let got = ovl.get(k).copied();
        if got != Some(*want) {
            failures.push(format!(
                "{k}: ovlfs (uid, gid, mode) {:?} vs ext4 {:?}{}",
                got.map(|(u, g, m)| (u, g, format!("{m:o}"))),
                (want.0, want.1, format!("{:o}", want.2)),
                kernel
                    .as_ref()
                    .and_then(|kr| kr.get(k))
                    .map(|(u, g, m)| format!(" (kernel overlay: {u}, {g}, {m:o})"))
                    .unwrap_or_default()
            ));
        }
        if ovl_upper.get(k).is_some_and(|u| Some(u) != got.as_ref()) {
            failures.push(format!(
                "{k}: the upper holds {:?} but the mount shows {got:?}",
                ovl_upper.get(k)
            ));
        }
        if let Some(kr) = &kernel
            && kr.get(k) != Some(want)
        {
            visible(&format!(
                "{test}: note: kernel overlay differs from ext4 for {k}: {:?} vs {want:?}",
                kr.get(k)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{test} ({TEST}): {} difference(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn setuid_setgid_cleared_as_on_ext4_and_kernel_overlay() {
    suid_compare(
        "setuid_setgid_cleared_as_on_ext4_and_kernel_overlay",
        SUID_CASES,
    );
}

#[test]
fn setgid_without_group_exec_cleared_for_non_members_as_on_ext4() {
    suid_compare(
        "setgid_without_group_exec_cleared_for_non_members_as_on_ext4",
        SGID_NOGX_CASES,
    );
}

// ---------------------------------------------------------------------------------------------
// No panics: racing and malformed requests
// ---------------------------------------------------------------------------------------------

fn odd_names() -> Vec<OsString> {
    let mut v: Vec<OsString> = [
        b"\xff\xfe".as_slice(),
        b"a\nb",
        b"\x01\x02\x7f",
        b" ",
        b"-",
        b"...",
        b".wh.foo",
        b".wh..wh..opq",
        b".wh.",
        b"#ovlfs.1.2",
        b"trusted.overlay.opaque",
        b"\\",
        b"\xc3\x28",
    ]
    .iter()
    .map(|b| OsString::from_vec(b.to_vec()))
    .collect();
    for len in [255usize, 256, 1024, 1025, 4096] {
        v.push(OsString::from_vec(vec![b'n'; len]));
    }
    v
}

/// One round of malformed / unusual requests in `dir` (errors are expected; EIO is recorded).
fn odd_requests(dir: &Path, rng: &mut Rng, eio: &mut Vec<String>) {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
    let mut rec = |what: &str, r: io::Result<()>| {
        if let Err(e) = r
            && matches!(
                e.raw_os_error(),
                Some(libc::EIO) | Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
            )
        {
            eio.push(format!("{what}: {e}"));
        }
    };
    let names = odd_names();
    let name = &names[rng.below(names.len() as u64) as usize];
    let p = dir.join(name);
    let short = OsStr::new("short");
    let ps = dir.join(short);
    let lossy = name.to_string_lossy().chars().take(24).collect::<String>();
    rec(&format!("create {lossy}"), fs::write(&p, b"x"));
    rec(
        &format!("mkdir {lossy}"),
        fs::create_dir(p.with_extension("d")),
    );
    rec(&format!("stat {lossy}"), fs::symlink_metadata(&p).map(drop));
    rec(
        &format!("symlink {lossy}"),
        std::os::unix::fs::symlink(name, &ps),
    );
    rec(&format!("rename to {lossy}"), fs::rename(&ps, &p));
    rec(&format!("link {lossy}"), fs::hard_link(&p, dir.join("hl")));
    rec(&format!("unlink {lossy}"), fs::remove_file(&p));
    let _ = fs::remove_file(dir.join("hl"));
    let _ = fs::remove_file(&ps);
    // xattrs: huge values, long names, tiny buffers, private names.
    let f = dir.join("xfile");
    rec("create xfile", fs::write(&f, b"x"));
    let big = vec![b'v'; [4000usize, 65536, 70000][rng.below(3) as usize]];
    rec("setxattr huge", try_set_xattr(&f, "user.huge", &big));
    rec(
        "setxattr long name",
        try_set_xattr(&f, &format!("user.{}", "k".repeat(250)), b"1"),
    );
    rec(
        "setxattr private",
        try_set_xattr(&f, "trusted.overlay.opaque", b"y"),
    );
    rec(
        "setxattr user.overlay",
        try_set_xattr(&f, "user.overlay.whiteout", b"y"),
    );
    rec("setxattr empty name", try_set_xattr(&f, "user.", b"1"));
    rec(
        "getxattr tiny buffer",
        rustix::fs::lgetxattr(&f, "user.huge", &mut [0u8; 1][..])
            .map(drop)
            .map_err(io_err),
    );
    rec(
        "listxattr tiny buffer",
        rustix::fs::llistxattr(&f, &mut [0u8; 1][..])
            .map(drop)
            .map_err(io_err),
    );
    rec(
        "removexattr missing",
        rustix::fs::lremovexattr(&f, "user.missing").map_err(io_err),
    );
    // Special nodes: a 0/0 device (reads back as a whiteout), a block device, a FIFO, a socket.
    for (ft, dev) in [
        (FileType::CharacterDevice, 0),
        (FileType::BlockDevice, rustix::fs::makedev(7, 200)),
        (FileType::Fifo, 0),
        (FileType::Socket, 0),
    ] {
        rec(
            "mknod",
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join("node"),
                ft,
                Mode::from_raw_mode(0o600),
                dev,
            )
            .map_err(io_err),
        );
        let _ = fs::remove_file(dir.join("node"));
    }
    // RENAME_WHITEOUT and invalid flag combinations from a caller.
    rec("create rw", fs::write(dir.join("rw"), b"x"));
    for flags in [
        RenameFlags::WHITEOUT,
        RenameFlags::EXCHANGE | RenameFlags::NOREPLACE,
        RenameFlags::EXCHANGE,
        RenameFlags::NOREPLACE,
    ] {
        rec(
            "renameat2 flags",
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                dir.join("rw"),
                rustix::fs::CWD,
                dir.join("rw2"),
                flags,
            )
            .map_err(io_err),
        );
    }
    let _ = fs::remove_file(dir.join("rw"));
    let _ = fs::remove_file(dir.join("rw2"));
    // A directory into its own subdirectory, a directory over a file and vice versa.
    let _ = fs::create_dir_all(dir.join("loop/inner"));
    rec(
        "rename into self",
        fs::rename(dir.join("loop"), dir.join("loop/inner/x")),
    );
    rec("rename dir over file", fs::rename(dir.join("loop"), &f));
    rec("rename file over dir", fs::rename(&f, dir.join("loop")));
    // Huge offsets and sizes, fallocate modes, SEEK_DATA/HOLE past the end, locks.
    if let Ok(file) = fs::OpenOptions::new().read(true).write(true).open(&f) {
        let huge = [u64::MAX / 2, i64::MAX as u64, 1 << 62, (1 << 44) - 1];
        let off = huge[rng.below(huge.len() as u64) as usize];
        rec(
            "pwrite huge offset",
            rustix::io::pwrite(&file, b"x", off)
                .map(drop)
                .map_err(io_err),
        );
        rec(
            "ftruncate huge",
            rustix::fs::ftruncate(&file, off).map_err(io_err),
        );
        for mode in [
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            rustix::fs::FallocateFlags::COLLAPSE_RANGE,
            rustix::fs::FallocateFlags::ZERO_RANGE,
            rustix::fs::FallocateFlags::INSERT_RANGE,
            rustix::fs::FallocateFlags::PUNCH_HOLE,
        ] {
            rec(
                "fallocate",
                rustix::fs::fallocate(&file, mode, 4096, 4096).map_err(io_err),
            );
        }
        rec(
            "SEEK_DATA past end",
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(1 << 40))
                .map(drop)
                .map_err(io_err),
        );
        rec(
            "SEEK_HOLE",
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0))
                .map(drop)
                .map_err(io_err),
        );
        rec(
            "flock",
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .map_err(io_err),
        );
        // SAFETY: fcntl F_SETLK with a valid flock struct on an open fd.
        let r = unsafe {
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as i16;
            fl.l_whence = libc::SEEK_SET as i16;
            fl.l_len = 10;
            libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_SETLK, &fl)
        };
        rec(
            "fcntl lock",
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            },
        );
        rec(
            "copy_file_range overlapping",
            rustix::fs::copy_file_range(&file, Some(&mut 0), &file, Some(&mut 2), 100)
                .map(drop)
                .map_err(io_err),
        );
        // SAFETY: FS_IOC_GETFLAGS with a valid out pointer on an open fd.
        let r = unsafe {
            let mut flags: libc::c_long = 0;
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0x8008_6601, // FS_IOC_GETFLAGS
                &mut flags,
            )
        };
        rec(
            "ioctl",
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            },
        );
    }
    // Opened, then deleted: every fd operation on the deleted file.
    rec("create del", fs::write(dir.join("del"), b"deleted"));
    if let Ok(mut file) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("del"))
    {
        let _ = fs::remove_file(dir.join("del"));
        rec("fstat deleted", file.metadata().map(drop));
        let mut b = Vec::new();
        rec("read deleted", file.read_to_end(&mut b).map(drop));
        rec("write deleted", file.write_all(b"more"));
        rec(
            "fchmod deleted",
            rustix::fs::fchmod(&file, Mode::from_raw_mode(0o4755)).map_err(io_err),
        );
        rec(
            "fsetxattr deleted",
            rustix::fs::fsetxattr(&file, "user.d", b"1", rustix::fs::XattrFlags::empty())
                .map_err(io_err),
        );
        rec("ftruncate deleted", file.set_len(1));
        rec("fsync deleted", file.sync_all());
        rec(
            "linkat deleted",
            rustix::fs::linkat(
                &file,
                "",
                rustix::fs::CWD,
                dir.join("undead"),
                AtFlags::EMPTY_PATH,
            )
            .map_err(io_err),
        );
        let _ = fs::remove_file(dir.join("undead"));
    }
    // A directory fd whose directory is removed, then read.
    let _ = fs::create_dir(dir.join("gone"));
    if let Ok(dfd) = rustix::fs::open(
        dir.join("gone"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let _ = fs::remove_dir(dir.join("gone"));
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut it = rustix::fs::RawDir::new(&dfd, &mut buf);
        while let Some(e) = it.next() {
            if let Err(e) = e {
                rec("getdents removed dir", Err(io_err(e)));
                break;
            }
        }
        rec(
            "openat in removed dir",
            rustix::fs::openat(
                &dfd,
                "x",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
            .map_err(io_err),
        );
    }
    // O_TMPFILE, O_DIRECT, O_WRONLY on a directory.
    rec(
        "O_TMPFILE",
        rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::RDWR,
            Mode::from_raw_mode(0o600),
        )
        .map(drop)
        .map_err(io_err),
    );
    rec(
        "O_DIRECT",
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&f)
            .map(drop),
    );
    // Long symlink targets.
    for len in [4095usize, 4096, 5000] {
        let target = OsString::from_vec(vec![b't'; len]);
        rec(
            "long symlink",
            std::os::unix::fs::symlink(&target, dir.join("longlink")),
        );
        rec(
            "readlink long",
            fs::read_link(dir.join("longlink")).map(drop),
        );
        let _ = fs::remove_file(dir.join("longlink"));
    }
    // utimensat with omitted / now / negative times.
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: -1,
            tv_nsec: 999_999_999,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    };
    rec(
        "utimensat odd",
        rustix::fs::utimensat(rustix::fs::CWD, &f, &ts, AtFlags::empty()).map_err(io_err),
    );
    rec("statfs", rustix::fs::statfs(dir).map(drop).map_err(io_err));
    rec(
        "access odd mask",
        rustix::fs::access(dir, rustix::fs::Access::from_bits_retain(0o7)).map_err(io_err),
    );
}

/// One racing operation on the shared names `race/n0..n7`.
fn racing_op(race: &Path, rng: &mut Rng, eio: &Mutex<Vec<String>>) {
    let a = race.join(format!("n{}", rng.below(8)));
    let b = race.join(format!("n{}", rng.below(8)));
    let r: io::Result<()> = match rng.below(16) {
        0 => fs::rename(&a, &b),
        1 => exchange(&a, &b),
        2 => rustix::fs::renameat_with(
            rustix::fs::CWD,
            &a,
            rustix::fs::CWD,
            &b,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(io_err),
        3 => fs::rename(&a, b.join("inside")),
        4 => fs::remove_file(&a),
        5 => fs::remove_dir(&a),
        6 => rm_rf(&a),
        7 => fs::write(&a, b"file"),
        8 => fs::create_dir(&a).and_then(|_| fs::write(a.join("child"), b"c")),
        9 => std::os::unix::fs::symlink("n0", &a),
        10 => fs::hard_link(&a, &b),
        11 => fs::read_dir(race).map(|rd| {
            for e in rd.flatten() {
                let _ = fs::symlink_metadata(e.path());
                if let Ok(inner) = fs::read_dir(e.path()) {
                    inner.for_each(drop);
                }
            }
        }),
        12 => fs::read(&a).map(drop),
        13 => fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&a)
            .and_then(|mut f| {
                let _ = fs::remove_file(&a);
                f.write_all(b"after unlink")?;
                f.metadata().map(drop)
            }),
        14 => fs::set_permissions(&a, fs::Permissions::from_mode(0o700)),
        _ => try_set_xattr(&a, "user.r", b"1"),
    };
    if let Err(e) = r
        && matches!(
            e.raw_os_error(),
            Some(libc::EIO) | Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        )
    {
        eio.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("race op on {}: {e}", a.display()));
    }
}

#[test]
fn no_panic_under_racing_and_malformed_requests() {
    const TEST: &str = "no_panic_under_racing_and_malformed_requests";
    if !require_root(TEST) {
        return;
    }
    let secs = env_u64("OVLFS_STORM_SECS", 8);
    let (_t, s) = scratch(&["lower", "upper", "work", "mnt"]);
    let lower = s.join("lower");
    for i in 0..8 {
        if i % 2 == 0 {
            write_file(&lower.join(format!("race/n{i}")), b"lower file");
        } else {
            write_file(&lower.join(format!("race/n{i}/child")), b"lower child");
        }
    }
    write_file(&lower.join("odd/lowerfile"), b"x");
    let mnt = s.join("mnt");
    let mut m = Ovlfs::new([&lower])
        .upper(s.join("upper"), s.join("work"))
        .mount(&mnt);
    let eio = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (eio2, stop2, mnt2) = (eio.clone(), stop.clone(), mnt.clone());
    let rounds = with_watchdog(secs + 120, &mnt, move || {
        let mut hs = Vec::new();
        for tid in 0..4u64 {
            let (eio, stop, race) = (eio2.clone(), stop2.clone(), mnt2.join("race"));
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(tid + 100);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    racing_op(&race, &mut rng, &eio);
                    n += 1;
                }
                n
            }));
        }
        {
            let (eio, stop, odd) = (eio2.clone(), stop2.clone(), mnt2.join("odd"));
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(7);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut local = Vec::new();
                    odd_requests(&odd, &mut rng, &mut local);
                    if !local.is_empty() {
                        eio.lock().unwrap_or_else(|p| p.into_inner()).extend(local);
                    }
                    n += 1;
                }
                n
            }));
        }
        thread::sleep(Duration::from_secs(secs));
        stop2.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<u64>>()
    });
    drop(stop);
    visible(&format!(
        "{TEST}: {secs} s: racing operations per thread {:?}, rounds of malformed requests {}",
        &rounds[..4],
        rounds[4]
    ));
    assert_daemon_healthy(&m, TEST);
    // Still fully serving.
    fs::write(mnt.join("after"), b"after the storm").expect("create after the storm");
    assert_eq!(
        fs::read(mnt.join("after")).expect("read"),
        b"after the storm"
    );
    fs::remove_file(mnt.join("after")).expect("unlink after the storm");
    rm_rf(&mnt.join("race")).expect("rm -rf race after the storm");
    let eio = eio.lock().map(|e| e.clone()).unwrap_or_default();
    assert!(
        eio.is_empty(),
        "{TEST}: {} requests failed with EIO/ENOTCONN (a caught panic answers EIO): {:?}\n\
         daemon stderr:\n{}",
        eio.len(),
        &eio[..eio.len().min(15)],
        m.stderr()
    );
    // A clean exit at unmount.
    assert!(m.fusermount_u(), "fusermount3 -u after the storm failed");
    let st = m.wait_exit(EXIT_TIMEOUT);
    assert!(
        matches!(st, Some(Some(s)) if s.success()),
        "the daemon did not exit cleanly after the storm: {st:?}; stderr:\n{}",
        m.stderr()
    );
}
