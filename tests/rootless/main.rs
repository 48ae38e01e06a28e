//! Unprivileged operation (the `user.overlay.*` format: docs/format.md): the daemon run by an
//! ordinary uid (`setpriv --reuid=65534`) mounting through fusermount3, and inside a user namespace
//! (`unshare -Urm`, and a multi-range map like rootless podman's). Every scenario mounts, copies
//! up, whites out, makes an opaque directory, unmounts, remounts over the same upper and checks the
//! view persisted, then checks the upper's on-disk format from outside: `user.overlay.*` xattrs
//! only, 0/0 character device whiteouts (or xattr whiteouts with `whiteout=xattr`).
//!
//! Operations through an unprivileged mount have to be done by the mounting user, so each phase
//! is a shell script run under `setpriv`/`unshare`; it prints `@key=value` lines that the test
//! compares. Every child runs in its own process group under a timeout (the group is killed
//! when it expires) and a guard unmounts and kills any daemon left on the test's mountpoints.

#[path = "../common/mod.rs"]
mod common;
mod helpers;

use common::*;
use helpers::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The unprivileged uid/gid the daemon runs as.
const NOBODY: u32 = 65534;
/// Upper bound for each child (mount, script, unmount).
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The scenario shared by the setpriv and user-namespace variants
// ---------------------------------------------------------------------------------------------

/// Lowers: l2 (bottom) holds f, g, d/{a,sub/c}, e/b, o/hidden, gone; l1 (top) holds `keep`, an
/// opaque `o` in the user.overlay namespace (with o/top) and a 0/0 whiteout of `gone` — the
/// formats an unprivileged daemon must read.
fn build_layers(fx: &Fixture) {
    write_file(&fx.p("l2/f"), "hi\n");
    write_file(&fx.p("l2/g"), "g\n");
    write_file(&fx.p("l2/d/a"), "a\n");
    write_file(&fx.p("l2/d/sub/c"), "c\n");
    write_file(&fx.p("l2/e/b"), "b\n");
    write_file(&fx.p("l2/o/hidden"), "hidden\n");
    write_file(&fx.p("l2/gone"), "gone\n");
    write_file(&fx.p("l1/keep"), "keep\n");
    opaque(&fx.p("l1/o"), Opaque::UserY);
    write_file(&fx.p("l1/o/top"), "top\n");
    whiteout_chardev(&fx.p("l1/gone"));
}

/// Operations through the mount (run with the mountpoint as cwd).
const OPS: &str = r#"
run sh -c 'echo more >> f'
run rm g
run rm e/b
run rm -rf d
run mkdir d
run sh -c 'echo new > d/n'
"#;

/// What the merged view must show after OPS, and again after a remount.
const VIEW: &str = r#"
show root "$(lst .)"
show d "$(lst d)"
show d_a "$(st d/a)"
show d_sub "$(st d/sub)"
show e "$(lst e)"
show e_b "$(st e/b)"
show g "$(st g)"
show o "$(lst o)"
show gone "$(st gone)"
show f "$(cat f | tr '\n' '|')"
show d_n "$(cat d/n | tr '\n' '|')"
show keep "$(cat keep | tr '\n' '|')"
"#;

fn expected_view() -> BTreeMap<String, String> {
    [
        ("root", "d e f keep o"),
        ("d", "n"),
        ("d_a", "ENOENT"),
        ("d_sub", "ENOENT"),
        ("e", ""),
        ("e_b", "ENOENT"),
        ("g", "ENOENT"),
        ("o", "top"),
        ("gone", "ENOENT"),
        ("f", "hi|more|"),
        ("d_n", "new|"),
        ("keep", "keep|"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn assert_view(phase: &str, stdout: &str) {
    let (kv, fails) = parse_report(stdout);
    assert!(
        fails.is_empty(),
        "{phase}: operations failed through the mount: {fails:?}\nfull output:\n{stdout}"
    );
    let want = expected_view();
    let diffs: Vec<String> = want
        .iter()
        .filter(|(k, v)| kv.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", kv.get(k)))
        .collect();
    assert!(
        diffs.is_empty(),
        "{phase}: merged view differs:\n  {}\nfull output:\n{stdout}",
        diffs.join("\n  ")
    );
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Wh {
    Default,
    Chardev,
    Xattr,
    Auto,
}

impl Wh {
    fn opt(self) -> &'static str {
        match self {
            Wh::Default => "",
            Wh::Chardev => "whiteout=chardev",
            Wh::Xattr => "whiteout=xattr",
            Wh::Auto => "whiteout=auto",
        }
    }
}

fn xattr_str(p: &Path, name: &str) -> Option<String> {
    get_xattr(p, name)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The upper after OPS, checked from outside as root.
fn check_upper(fx: &Fixture, wh: Wh, owner: u32) {
    let up = fx.p("upper");
    // Copy-up: the appended file is complete in the upper, the lower untouched.
    assert_eq!(
        fs::read_to_string(up.join("f")).expect("upper/f"),
        "hi\nmore\n"
    );
    assert_eq!(fs::read_to_string(fx.p("l2/f")).expect("l2/f"), "hi\n");
    // Whiteouts of g (in the root) and e/b (in a copied-up directory).
    for rel in ["g", "e/b"] {
        let p = up.join(rel);
        let md = fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("whiteout upper/{rel} missing: {e}"));
        match wh {
            Wh::Default | Wh::Chardev | Wh::Auto => {
                assert!(
                    md.file_type().is_char_device() && md.rdev() == 0,
                    "upper/{rel} should be a 0/0 character device whiteout (mode {:o}, rdev {})",
                    md.mode(),
                    md.rdev()
                );
            }
            Wh::Xattr => {
                assert!(
                    md.is_file() && md.len() == 0,
                    "upper/{rel} should be a zero-size regular file (mode {:o}, size {})",
                    md.mode(),
                    md.len()
                );
                assert!(
                    get_xattr(&p, "user.overlay.whiteout").is_ok(),
                    "upper/{rel} lacks user.overlay.whiteout; xattrs: {:?}",
                    list_xattrs(&p)
                );
                let parent = p.parent().expect("parent");
                let o = xattr_str(parent, "user.overlay.opaque");
                assert!(
                    matches!(o.as_deref(), Some("x") | Some("y")),
                    "parent of xattr whiteout upper/{rel} must carry user.overlay.opaque=x \
                     (the kernel only honours xattr whiteouts there); got {o:?}"
                );
            }
        }
    }
    // Opaque directory: d recreated after rm -rf, holding only the new file.
    let d = up.join("d");
    assert_eq!(
        xattr_str(&d, "user.overlay.opaque").as_deref(),
        Some("y"),
        "upper/d must be opaque (user.overlay.opaque=y); xattrs: {:?}",
        list_xattrs(&d)
    );
    assert_eq!(names(&d), vec!["n".to_string()]);
    // Format: only user.overlay.* private xattrs, nothing in trusted.*; owned by the user.
    for p in walk(&up) {
        let names = list_xattrs(&p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
        for n in &names {
            assert!(
                !n.starts_with("trusted."),
                "{} carries {n}: an unprivileged daemon must write user.overlay.* only",
                p.display()
            );
        }
        let md = fs::symlink_metadata(&p).expect("lstat");
        assert_eq!(
            (md.uid(), md.gid()),
            (owner, owner),
            "{} has the wrong owner on disk",
            p.display()
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Ctx {
    /// The daemon run as uid 65534, mounting through fusermount3.
    Setpriv,
    /// The daemon run as root of `unshare -Urm` started by uid 65534.
    Userns,
}

/// One mount / body / unmount cycle; returns the body's stdout.
fn phase(ctx: Ctx, fx: &Fixture, opts: &str, body: &str, what: &str) -> String {
    let mnt = fx.mnt();
    let bin = ovlfs_bin();
    let _cleanup = Cleanup { mnt: mnt.clone() };
    match ctx {
        Ctx::Setpriv => {
            let mut c = as_user(NOBODY, NOBODY);
            c.arg(&bin).arg("-o").arg(opts).arg(&mnt);
            let m = run_bounded(&mut c, STEP);
            let mounted = is_fuse_mounted(&mnt);
            assert!(
                m.success() && mounted,
                "{}\n(mounted: {mounted})",
                describe(&format!("{what}: ovlfs as uid {NOBODY}"), &m)
            );
            // The super options (after " - ") name the user the mount belongs to.
            let mi = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
            let line = mi
                .lines()
                .rev()
                .find(|l| l.split(' ').nth(4) == Some(&*mnt.to_string_lossy()))
                .unwrap_or_default();
            assert!(
                line.contains(&format!("user_id={NOBODY},")),
                "{what}: the mount should belong to uid {NOBODY}: {line}"
            );
            let mut c = as_user(NOBODY, NOBODY);
            // Root cannot enter a mount of another user (no allow_other): cd as that user.
            c.arg("sh")
                .arg("-c")
                .arg(format!("{PRELUDE}\ncd {} || exit 95\n{body}", sq(&mnt)));
            let b = run_bounded(&mut c, STEP);
            let mut c = as_user(NOBODY, NOBODY);
            c.arg("fusermount3").arg("-u").arg(&mnt);
            let u = run_bounded(&mut c, STEP);
            assert!(
                b.success(),
                "{}",
                describe(&format!("{what}: script as uid {NOBODY}"), &b)
            );
            assert!(
                u.success() && !is_fuse_mounted(&mnt),
                "{}",
                describe(&format!("{what}: fusermount3 -u as uid {NOBODY}"), &u)
            );
            assert!(
                daemons_gone(&mnt, EXIT_TIMEOUT),
                "{what}: the daemon did not exit by itself after fusermount3 -u"
            );
            b.stdout
        }
        Ctx::Userns => {
            let script = format!(
                "{PRELUDE}\n\
                 {bin} -o {opts} {mnt} || {{ echo 'ovlfs mount failed' >&2; exit 97; }}\n\
                 ( cd {mnt} && {{\n{body}\n}} ); rc=$?\n\
                 cd / && umount {mnt} || {{ echo 'umount failed' >&2; exit 98; }}\n\
                 exit $rc\n",
                bin = sq(&bin),
                opts = sq(opts),
                mnt = sq(&mnt),
            );
            let mut c = as_user(NOBODY, NOBODY);
            c.args(["unshare", "-Urm", "sh", "-c", &script]);
            let b = run_bounded(&mut c, STEP);
            assert!(
                b.success(),
                "{}",
                describe(&format!("{what}: unshare -Urm script as uid {NOBODY}"), &b)
            );
            assert!(
                daemons_gone(&mnt, EXIT_TIMEOUT),
                "{what}: the daemon did not exit by itself after umount in the namespace"
            );
            b.stdout
        }
    }
}

/// Whether uid 65534 may create a user namespace with a mount namespace here (distributions
/// can forbid it); prints `SKIPPED` (or panics under CI=true) when it may not.
fn require_userns(test: &str, uid: u32) -> bool {
    let mut c = as_user(uid, uid);
    c.args(["unshare", "-Urm", "true"]);
    let o = run_bounded(&mut c, STEP);
    if o.success() {
        return true;
    }
    let msg = format!(
        "SKIPPED: {test}: uid {uid} cannot create user namespaces here: {}",
        o.stderr.trim()
    );
    assert!(!in_ci(), "{msg} (CI=true: failing instead of skipping)");
    visible(&msg);
    false
}

fn scenario(test: &str, ctx: Ctx, wh: Wh) {
    if !require_unpriv_tools(test) {
        return;
    }
    if matches!(ctx, Ctx::Userns) && !require_userns(test, NOBODY) {
        return;
    }
    let fx = Fixture::new();
    build_layers(&fx);
    for rel in ["l1", "l2", "upper", "work", "mnt"] {
        chown_tree(&fx.p(rel), NOBODY, NOBODY);
    }
    let opts = fx.opts(wh.opt());
    let out = phase(ctx, &fx, &opts, &format!("{OPS}\n{VIEW}"), "first mount");
    assert_view("first mount", &out);
    // Both contexts write as host uid 65534 (the namespace's root maps to it).
    check_upper(&fx, wh, NOBODY);
    let out = phase(ctx, &fx, &opts, VIEW, "remount");
    assert_view("remount over the same upper", &out);
    check_upper(&fx, wh, NOBODY);
}

#[test]
fn setpriv_uid_default_whiteout() {
    scenario("setpriv_uid_default_whiteout", Ctx::Setpriv, Wh::Default);
}

#[test]
fn setpriv_uid_whiteout_chardev() {
    scenario("setpriv_uid_whiteout_chardev", Ctx::Setpriv, Wh::Chardev);
}

#[test]
fn setpriv_uid_whiteout_xattr() {
    scenario("setpriv_uid_whiteout_xattr", Ctx::Setpriv, Wh::Xattr);
}

#[test]
fn setpriv_uid_whiteout_auto() {
    scenario("setpriv_uid_whiteout_auto", Ctx::Setpriv, Wh::Auto);
}

#[test]
fn userns_default_whiteout() {
    scenario("userns_default_whiteout", Ctx::Userns, Wh::Default);
}

#[test]
fn userns_whiteout_xattr() {
    scenario("userns_whiteout_xattr", Ctx::Userns, Wh::Xattr);
}

#[test]
fn userns_whiteout_auto() {
    scenario("userns_whiteout_auto", Ctx::Userns, Wh::Auto);
}

/// `-o userxattr` as uid 65534 changes nothing (user.* is already the namespace).
#[test]
fn setpriv_uid_userxattr_option() {
    let test = "setpriv_uid_userxattr_option";
    if !require_unpriv_tools(test) {
        return;
    }
    let fx = Fixture::new();
    build_layers(&fx);
    for rel in ["l1", "l2", "upper", "work", "mnt"] {
        chown_tree(&fx.p(rel), NOBODY, NOBODY);
    }
    let opts = fx.opts("userxattr");
    let out = phase(Ctx::Setpriv, &fx, &opts, &format!("{OPS}\n{VIEW}"), "mount");
    assert_view("userxattr mount", &out);
    check_upper(&fx, Wh::Default, NOBODY);
}

// ---------------------------------------------------------------------------------------------
// A multi-range user namespace, as rootless podman sets up with newuidmap
// ---------------------------------------------------------------------------------------------

/// Host uid of the namespace's root, and the start of the subordinate range (ns ids 1..=65536).
const OWNER: u32 = 1000;
const SUB: u32 = 100_000;

/// The user namespace is created by uid 1000 (`unshare -Um`) and its maps
/// (`0 1000 1`, `1 100000 65536`) are written from outside by root, exactly what newuidmap
/// does for rootless podman — without needing the uidmap package.
#[test]
fn userns_multi_range_map_like_rootless_podman() {
    let test = "userns_multi_range_map_like_rootless_podman";
    if !require_unpriv_tools(test) || !require_userns(test, OWNER) {
        return;
    }
    let fx = Fixture::new();
    write_file(&fx.p("l2/root_file"), "r\n");
    file_full(&fx.p("l2/sub3"), "three\n", 0o644, SUB + 3, SUB + 3);
    file_full(&fx.p("l2/private6"), "six\n", 0o600, SUB + 5, SUB + 5);
    file_full(&fx.p("l2/unmapped"), "u\n", 0o644, 5, 5);
    write_file(&fx.p("l2/gone"), "gone\n");
    dir_mode(&fx.p("l2/shared"), 0o1777);
    write_file(&fx.p("l2/d/a"), "a\n");
    for rel in ["l1", "upper", "work", "mnt"] {
        chown_tree(&fx.p(rel), OWNER, OWNER);
    }
    for rel in [
        "l2",
        "l2/root_file",
        "l2/gone",
        "l2/shared",
        "l2/d",
        "l2/d/a",
    ] {
        chown(&fx.p(rel), OWNER, OWNER);
    }
    let mnt = fx.mnt();
    let _cleanup = Cleanup { mnt: mnt.clone() };
    let body = r#"
show owners "$(stat -c '%n:%u:%g' root_file sub3 private6 unmapped shared | tr '\n' ' ')"
run sh -c 'echo new > new_by_root'
run mkdir dir_by_root
run setpriv --reuid=5 --regid=5 --clear-groups sh -c 'echo five > shared/by5'
show read6_as6 "$(setpriv --reuid=6 --regid=6 --clear-groups cat private6 2>&1)"
show read6_as7 "$(setpriv --reuid=7 --regid=7 --clear-groups cat private6 >/dev/null 2>&1 && echo readable || echo denied)"
run chown 7:7 sub3
run rm gone
run rm -rf d
run mkdir d
show new_owners "$(stat -c '%n:%u:%g' new_by_root dir_by_root shared/by5 sub3 | tr '\n' ' ')"
show d "$(lst d)"
show d_a "$(st d/a)"
"#;
    let script = format!(
        "read _ || exit 96\n{PRELUDE}\n\
         {bin} -o {opts} {mnt} || {{ echo 'ovlfs mount failed' >&2; exit 97; }}\n\
         ( cd {mnt} && {{\n{body}\n}} ); rc=$?\n\
         cd / && umount {mnt} || {{ echo 'umount failed' >&2; exit 98; }}\n\
         exit $rc\n",
        bin = sq(ovlfs_bin()),
        opts = sq(fx.opts("")),
        mnt = sq(&mnt),
    );
    let my_userns = fs::read_link("/proc/self/ns/user").expect("own user ns");
    let mut c = as_user(OWNER, OWNER);
    c.args(["unshare", "-Um", "sh", "-c", &script]);
    let mut map_error = None;
    let out = run_bounded_with(&mut c, STEP, true, |child| {
        // setpriv and unshare exec in place: the child's PID ends up in the new namespace.
        let pid = child.id();
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|ns| ns == my_userns) {
            if Instant::now() >= deadline {
                map_error = Some("the child never entered a new user namespace".to_string());
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let map = format!("0 {OWNER} 1\n1 {SUB} 65536\n");
        for f in ["uid_map", "gid_map"] {
            // One write(2) per map file, as the kernel requires.
            if let Err(e) = fs::write(format!("/proc/{pid}/{f}"), &map) {
                map_error = Some(format!("write /proc/{pid}/{f}: {e}"));
                return;
            }
        }
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
        }
    });
    assert!(map_error.is_none(), "{map_error:?}");
    assert!(
        out.success(),
        "{}",
        describe("multi-range user namespace script", &out)
    );
    assert!(
        daemons_gone(&mnt, EXIT_TIMEOUT),
        "the daemon did not exit after umount in the namespace"
    );
    let (kv, fails) = parse_report(&out.stdout);
    assert!(
        fails.is_empty(),
        "operations failed: {fails:?}\n{}",
        out.stdout
    );
    let want = [
        (
            "owners",
            "root_file:0:0 sub3:4:4 private6:6:6 unmapped:65534:65534 shared:0:0 ",
        ),
        ("read6_as6", "six"),
        ("read6_as7", "denied"),
        (
            "new_owners",
            "new_by_root:0:0 dir_by_root:0:0 shared/by5:5:5 sub3:7:7 ",
        ),
        ("d", ""),
        ("d_a", "ENOENT"),
    ];
    for (k, v) in want {
        assert_eq!(
            kv.get(k).map(String::as_str),
            Some(v),
            "{k} in the namespace; full output:\n{}",
            out.stdout
        );
    }
    // On disk: namespace ids translated to host ids by the kernel.
    let up = fx.p("upper");
    let owner_of = |rel: &str| {
        let md = fs::symlink_metadata(up.join(rel)).unwrap_or_else(|e| panic!("upper/{rel}: {e}"));
        (md.uid(), md.gid())
    };
    assert_eq!(owner_of("new_by_root"), (OWNER, OWNER));
    assert_eq!(owner_of("dir_by_root"), (OWNER, OWNER));
    assert_eq!(owner_of("shared/by5"), (SUB + 4, SUB + 4));
    assert_eq!(owner_of("sub3"), (SUB + 6, SUB + 6));
    let wh = fs::symlink_metadata(up.join("gone")).expect("whiteout upper/gone");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr_str(&up.join("d"), "user.overlay.opaque").as_deref(),
        Some("y")
    );
    for p in walk(&up) {
        for n in list_xattrs(&p).unwrap_or_default() {
            assert!(
                !n.starts_with("trusted."),
                "{} carries {n} (a namespaced daemon must use user.overlay.*)",
                p.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// userxattr as root
// ---------------------------------------------------------------------------------------------

fn root_write_scenario(extra: Option<&str>) -> Fixture {
    let fx = Fixture::new();
    write_file(&fx.p("l2/f"), "hi\n");
    write_file(&fx.p("l2/g"), "g\n");
    write_file(&fx.p("l2/d/a"), "a\n");
    let mut o = Ovlfs::new([fx.p("l1"), fx.p("l2")]).upper(fx.p("upper"), fx.p("work"));
    if let Some(e) = extra {
        o = o.opt(e);
    }
    let m = o.mount(&fx.mnt());
    let mnt = m.path().to_path_buf();
    with_watchdog(60, m.path(), move || {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("f"))
            .expect("open f for append");
        f.write_all(b"more\n").expect("append");
        drop(f);
        fs::remove_file(mnt.join("g")).expect("rm g");
        fs::remove_dir_all(mnt.join("d")).expect("rm -rf d");
        fs::create_dir(mnt.join("d")).expect("mkdir d");
        assert!(names(&mnt.join("d")).is_empty());
        assert_eq!(
            errno(&fs::symlink_metadata(mnt.join("d/a"))),
            Some(libc::ENOENT)
        );
    });
    drop(m);
    fx
}

/// `-o userxattr` forces the user.overlay.* namespace even for a daemon with CAP_SYS_ADMIN.
#[test]
fn root_with_userxattr_writes_user_namespace() {
    if !require_root("root_with_userxattr_writes_user_namespace") {
        return;
    }
    let fx = root_write_scenario(Some("userxattr"));
    let up = fx.p("upper");
    assert_eq!(
        xattr_str(&up.join("d"), "user.overlay.opaque").as_deref(),
        Some("y")
    );
    for p in walk(&up) {
        for n in list_xattrs(&p).unwrap_or_default() {
            assert!(
                !n.starts_with("trusted.overlay."),
                "{} carries {n} despite -o userxattr",
                p.display()
            );
        }
    }
    assert_eq!(
        fs::read_to_string(up.join("f")).expect("upper/f"),
        "hi\nmore\n"
    );
    let g = fs::symlink_metadata(up.join("g")).expect("upper/g");
    assert!(g.file_type().is_char_device() && g.rdev() == 0);
}

/// Without userxattr, root writes trusted.overlay.* (the contrast to the unprivileged cases).
#[test]
fn root_without_userxattr_writes_trusted_namespace() {
    if !require_root("root_without_userxattr_writes_trusted_namespace") {
        return;
    }
    let fx = root_write_scenario(None);
    let d = fx.p("upper/d");
    assert_eq!(
        xattr_str(&d, "trusted.overlay.opaque").as_deref(),
        Some("y")
    );
    assert_eq!(xattr_str(&d, "user.overlay.opaque"), None);
}

// ---------------------------------------------------------------------------------------------
// Partial-page writes through write-only handles (the writeback cache reads around them)
// ---------------------------------------------------------------------------------------------

/// A file created write-only (`exec 3>f`), grown by another call, then written one byte in a
/// page that already holds data through the creating handle: the kernel reads that page
/// through the same handle first. Then a write-only open of a 0200 file, which the daemon
/// cannot widen to read-write: the kernel must write through without the page cache.
const WRITE_ONLY_BODY: &str = "\
exec 3>f || exit 1
truncate -s 8192 f || exit 2
printf x | dd bs=1 seek=100 count=1 status=none >&3 || echo '@created=failed'
exec 3>&-
echo \"@created=$(od -An -c -j100 -N1 f | tr -d ' ')$(stat -c %s f)\"
: > g && chmod 200 g || exit 3
printf y | dd of=g bs=1 seek=5000 count=1 status=none || echo '@write_only=failed'
chmod 600 g
echo \"@write_only=$(od -An -c -j5000 -N1 g | tr -d ' ')$(stat -c %s g)\"
";

fn write_only_scenario(test: &str, ctx: Ctx) {
    if !require_unpriv_tools(test) {
        return;
    }
    if matches!(ctx, Ctx::Userns) && !require_userns(test, NOBODY) {
        return;
    }
    let fx = Fixture::new();
    for rel in ["l1", "l2", "upper", "work", "mnt"] {
        chown_tree(&fx.p(rel), NOBODY, NOBODY);
    }
    let out = phase(
        ctx,
        &fx,
        &fx.opts(""),
        WRITE_ONLY_BODY,
        "write-only handles",
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('@')).collect();
    assert_eq!(lines, ["@created=x8192", "@write_only=y5001"], "{out}");
}

#[test]
fn setpriv_uid_partial_writes_through_write_only_handles() {
    write_only_scenario(
        "setpriv_uid_partial_writes_through_write_only_handles",
        Ctx::Setpriv,
    );
}

#[test]
fn userns_partial_writes_through_write_only_handles() {
    write_only_scenario(
        "userns_partial_writes_through_write_only_handles",
        Ctx::Userns,
    );
}
