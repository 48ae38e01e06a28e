//! Unit tests of option parsing and layer validation.

use super::*;
use std::ffi::OsStr;
use tempfile::TempDir;

/// A temp tree with helpers that create directories and files and return their paths.
pub(super) struct Tree(pub(super) TempDir);

impl Tree {
    pub(super) fn new() -> Tree {
        Tree(tempfile::tempdir().unwrap())
    }

    pub(super) fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_owned()
    }

    pub(super) fn dir(&self, name: &str) -> String {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub(super) fn file(&self, name: &str) -> String {
        let p = self.path(name);
        fs::write(&p, b"x").unwrap();
        p
    }

    /// lower `l`, upper `u`, work `w`, mountpoint `m`, all created.
    pub(super) fn standard(&self) -> (String, String, String, String) {
        (self.dir("l"), self.dir("u"), self.dir("w"), self.dir("m"))
    }
}

pub(super) fn os(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

pub(super) fn parse(list: &[&str]) -> Result<Action> {
    parse_args(os(list))
}

#[track_caller]
pub(super) fn config(list: &[&str]) -> Config {
    match parse(list) {
        Ok(Action::Mount(c)) => *c,
        other => panic!("{list:?}: expected a mount config, got {other:?}"),
    }
}

/// The error message, checked to be one line starting with `ovlfs: `.
#[track_caller]
pub(super) fn err(list: &[&str]) -> String {
    match parse(list) {
        Err(e) => {
            let m = e.to_string();
            assert!(m.starts_with("ovlfs: "), "{m}");
            assert!(!m.contains('\n'), "{m:?}");
            assert_eq!(m, e.message());
            m
        }
        Ok(a) => panic!("{list:?}: expected an error, got {a:?}"),
    }
}

#[track_caller]
pub(super) fn err_contains(list: &[&str], needles: &[&str]) -> String {
    let m = err(list);
    for n in needles {
        assert!(m.contains(n), "{m:?} does not mention {n:?}");
    }
    m
}

/// `-o lowerdir=L,upperdir=U,workdir=W,EXTRA M` on a standard tree.
pub(super) fn with_extra(t: &Tree, extra: &str) -> Result<Action> {
    let (l, u, w, m) = t.standard();
    let opts = format!("lowerdir={l},upperdir={u},workdir={w},{extra}");
    parse(&["-o", &opts, &m])
}

#[track_caller]
pub(super) fn cfg_extra(extra: &str) -> Config {
    let t = Tree::new();
    match with_extra(&t, extra) {
        Ok(Action::Mount(c)) => *c,
        other => panic!("{extra}: {other:?}"),
    }
}

#[track_caller]
pub(super) fn err_extra(extra: &str, needles: &[&str]) -> String {
    let t = Tree::new();
    match with_extra(&t, extra) {
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m:?}");
            for n in needles {
                assert!(m.contains(n), "{m:?} does not mention {n:?}");
            }
            m
        }
        Ok(a) => panic!("{extra}: expected an error, got {a:?}"),
    }
}

// ---- splitting ----

#[test]
fn minimal_read_only_mount() {
    let t = Tree::new();
    let (l, m) = (t.dir("l"), t.dir("m"));
    let c = config(&["-o", &format!("lowerdir={l}"), &m]);
    assert_eq!(c.lowerdirs, vec![PathBuf::from(&l)]);
    assert_eq!(c.upperdir, None);
    assert_eq!(c.workdir, None);
    assert_eq!(c.mountpoint, PathBuf::from(&m));
    assert_eq!(c.source, None);
    assert!(!c.foreground && !c.debug);
}

#[test]
fn defaults() {
    let c = cfg_extra("");
    assert_eq!(c.whiteout, WhiteoutMode::Chardev);
    assert_eq!(c.passthrough, PassthroughMode::Auto);
    assert!(c.fsync && c.writeback && !c.volatile);
    assert_eq!(c.threads, None);
    assert_eq!(c.timeout, None);
    assert!(!c.userxattr && !c.squash_to_root && !c.static_nlink && !c.noacl && !c.ino32);
    assert_eq!(c.squash_to_uid, None);
    assert_eq!(c.squash_to_gid, None);
    assert!(c.uid_mapping.is_empty() && c.gid_mapping.is_empty());
    assert!(c.fuse_options.is_empty() && c.ignored_options.is_empty());
}

#[test]
fn full_mount_paths_are_canonical() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let l2 = t.dir("l2");
    let opts = format!(
        "lowerdir={l}:{}/../l2,upperdir={u}/.,workdir={w}//",
        t.path("l")
    );
    let c = config(&["-o", &opts, &m]);
    assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l2)]);
    assert_eq!(c.upperdir, Some(PathBuf::from(&u)));
    assert_eq!(c.workdir, Some(PathBuf::from(&w)));
}

#[test]
fn symlinked_layers_resolve() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    std::os::unix::fs::symlink(&l, t.path("link")).unwrap();
    std::os::unix::fs::symlink("../l", t.dir("sub").to_owned() + "/rel").unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={u},workdir={w}",
        t.path("link"),
        t.path("sub/rel")
    );
    let c = config(&["-o", &opts, &m]);
    assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l)]);
}

#[test]
fn relative_paths_are_relative_to_cwd() {
    // cargo runs unit tests from the package root, which has src/.
    let c = config(&["-o", "lowerdir=src", "."]);
    let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
    assert_eq!(c.lowerdirs, vec![cwd.join("src")]);
    assert_eq!(c.mountpoint, cwd);
}

#[test]
fn escaped_colon_and_comma_in_paths() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let odd = t.dir("a:b,c");
    let opts = format!(
        r"lowerdir={}\:b\,c:{l},upperdir={u},workdir={w}",
        t.path("a")
    );
    let c = config(&["-o", &opts, &m]);
    assert_eq!(c.lowerdirs, vec![PathBuf::from(&odd), PathBuf::from(&l)]);
}

#[test]
fn non_utf8_paths() {
    let t = Tree::new();
    let (u, w, m) = (t.dir("u"), t.dir("w"), t.dir("m"));
    let mut raw = t.0.path().as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/l\xff");
    fs::create_dir(OsStr::from_bytes(&raw)).unwrap();
    let mut opt = b"lowerdir=".to_vec();
    opt.extend_from_slice(&raw);
    opt.extend_from_slice(format!(",upperdir={u},workdir={w}").as_bytes());
    let args = vec![
        OsString::from("-o"),
        OsString::from_vec(opt),
        OsString::from(m),
    ];
    match parse_args(args).unwrap() {
        Action::Mount(c) => assert_eq!(c.lowerdirs[0].as_os_str().as_bytes(), &raw[..]),
        a => panic!("{a:?}"),
    }
}

#[test]
fn joined_and_repeated_o_accumulate() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let c = config(&[
        &format!("-olowerdir={l}"),
        "-o",
        &format!("upperdir={u}"),
        &format!("-oworkdir={w},noacl"),
        "-o",
        "allow_other",
        &m,
    ]);
    assert_eq!(c.upperdir, Some(PathBuf::from(&u)));
    assert_eq!(c.workdir, Some(PathBuf::from(&w)));
    assert!(c.noacl);
    assert_eq!(c.fuse_options, vec!["allow_other".to_owned()]);
}

#[test]
fn later_values_win() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let l2 = t.dir("l2");
    let c = config(&[
        "-o",
        &format!("lowerdir=/nonexistent,lowerdir={l2},upperdir={u},workdir={w}"),
        "-o",
        &format!("lowerdir={l},whiteout=xattr,whiteout=auto"),
        &m,
    ]);
    assert_eq!(c.lowerdirs, vec![PathBuf::from(&l)]);
    assert_eq!(c.whiteout, WhiteoutMode::Auto);
}

#[test]
fn lowerdir_plus_appends() {
    let t = Tree::new();
    let (l, m) = (t.dir("l"), t.dir("m"));
    let l2 = t.dir("x:y");
    let c = config(&["-o", &format!("lowerdir+={l},lowerdir+={l2}"), &m]);
    assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l2)]);
    err_contains(&["-o", "lowerdir+=", &m], &["lowerdir+"]);
}

#[test]
fn data_only_layers() {
    let t = Tree::new();
    let (l, d, d2, m) = (t.dir("l"), t.dir("d"), t.dir("d2"), t.dir("m"));
    let p = |s: &str| PathBuf::from(s);
    let c = config(&["-o", &format!("lowerdir={l}::{d}::{d2}"), &m]);
    assert_eq!(c.lowerdirs, vec![p(&l)]);
    assert_eq!(c.datadirs, vec![p(&d), p(&d2)]);
    let c = config(&[
        "-o",
        &format!("lowerdir+={l},datadir+={d},datadir+={d2}"),
        &m,
    ]);
    assert_eq!(
        (c.lowerdirs, c.datadirs),
        (vec![p(&l)], vec![p(&d), p(&d2)])
    );
    let c = config(&["-o", &format!("lowerdir={l},datadir+={d}"), &m]);
    assert_eq!((c.lowerdirs, c.datadirs), (vec![p(&l)], vec![p(&d)]));
    err_contains(
        &["-o", &format!("datadir+={d},lowerdir+={l}"), &m],
        &["cannot follow a data-only"],
    );
    err_contains(
        &["-o", &format!("lowerdir={l}::{d}:{d2}"), &m],
        &["cannot follow a data-only"],
    );
    err_contains(
        &["-o", &format!("datadir+={d}"), &m],
        &["at least one regular"],
    );
    err_contains(&["-o", &format!("lowerdir={l}::"), &m], &["empty element"]);
    err_contains(&["-o", &format!("lowerdir=::{d}"), &m], &["empty element"]);
    err_contains(&["-o", &format!("lowerdir={l}:::{d}"), &m], &["\"::\""]);
    err_contains(&["-o", "datadir+=", &m], &["datadir+ is empty"]);
    err_contains(
        &["-o", &format!("lowerdir={l}::{}/missing", t.dir("x")), &m],
        &["datadir", "missing"],
    );
}

#[test]
fn metacopy_option() {
    assert!(!cfg_extra("").metacopy);
    assert!(cfg_extra("metacopy=on").metacopy);
    assert!(!cfg_extra("metacopy=on,metacopy=off").metacopy);
    err_extra("metacopy=yes", &["metacopy", "on or off"]);
    err_extra("metacopy", &["metacopy", "needs a value"]);
}

#[test]
fn mount_helper_form() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let opts = format!("rw,lowerdir={l},upperdir={u},workdir={w}");
    let c = config(&["overlay-src", &m, "-o", &opts]);
    assert_eq!(c.source.as_deref(), Some("overlay-src"));
    assert_eq!(c.mountpoint, PathBuf::from(&m));
    assert_eq!(c.fuse_options, vec!["rw".to_owned()]);
    err_contains(
        &["a", &m, "c", "-o", &opts],
        &["too many arguments", "\"c\""],
    );
}

#[test]
fn containers_storage_argv() {
    // What containers/storage passes: relative-ish layer links, trailing and double commas.
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let l2 = t.dir("l2");
    std::os::unix::fs::symlink(&l2, t.path("short")).unwrap();
    let opts = format!(
        ",,lowerdir={l}:{},upperdir={u},workdir={w},,uidmapping=:0:1000:1:1:100000:65536,\
         gidmapping=:0:1000:1,volatile,context=\"system_u:object_r:container_file_t:s0:c1,c2\",\
         nodev,",
        t.path("short")
    );
    let c = config(&["-o", &opts, &m]);
    assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l2)]);
    assert_eq!(c.uid_mapping.len(), 2);
    assert_eq!(
        c.gid_mapping,
        vec![IdRange {
            container: 0,
            host: 1000,
            size: 1
        }]
    );
    assert!(c.volatile && !c.fsync);
    assert_eq!(c.fuse_options, vec!["nodev".to_owned()]);
    assert_eq!(
        c.ignored_options,
        vec!["context=\"system_u:object_r:container_file_t:s0:c1,c2\"".to_owned()]
    );
}

#[test]
fn flags() {
    let t = Tree::new();
    let (l, m) = (t.dir("l"), t.dir("m"));
    let o = format!("lowerdir={l}");
    let c = config(&["-f", "-o", &o, &m]);
    assert!(c.foreground && !c.debug);
    let c = config(&["-d", "-o", &o, &m]);
    assert!(c.foreground && c.debug);
    let c = config(&["-o", &format!("{o},debug"), &m]);
    assert!(c.foreground && c.debug);
    let c = config(&["-fd", "-o", &o, &m]);
    assert!(c.foreground && c.debug);
    // As in fuse-overlayfs (libfuse): --debug logs but does not keep the process in front.
    let c = config(&["--debug", "-o", &o, &m]);
    assert!(!c.foreground && c.debug);
    let c = config(&["-f", "--debug", "-o", &o, &m]);
    assert!(c.foreground && c.debug);
    let c = config(&["-s", "-o", &o, &m]);
    assert_eq!(c.threads, Some(1));
    let c = config(&["-o", &o, "--", &m]);
    assert_eq!(c.mountpoint, PathBuf::from(&m));
}

#[test]
fn flag_errors() {
    let t = Tree::new();
    let (l, m) = (t.dir("l"), t.dir("m"));
    let o = format!("lowerdir={l}");
    err_contains(&["-x", "-o", &o, &m], &["unknown flag", "\"-x\""]);
    err_contains(&["--frobnicate", "-o", &o, &m], &["\"--frobnicate\""]);
    err_contains(&["-fx", "-o", &o, &m], &["\"-fx\""]);
    err_contains(&[&m, "-o"], &["-o", "argument"]);
    err_contains(&["-o", &o], &["mountpoint"]);
    err_contains(&[], &["mountpoint"]);
    // After `--` a dash argument is a (missing) path.
    err_contains(&["-o", &o, "--", "-x"], &["mountpoint", "\"-x\""]);
}

// ---- option values ----

#[test]
fn ovlfs_options() {
    assert_eq!(
        cfg_extra("whiteout=chardev").whiteout,
        WhiteoutMode::Chardev
    );
    assert_eq!(cfg_extra("whiteout=xattr").whiteout, WhiteoutMode::Xattr);
    assert_eq!(cfg_extra("whiteout=auto").whiteout, WhiteoutMode::Auto);
    assert_eq!(cfg_extra("passthrough=on").passthrough, PassthroughMode::On);
    assert_eq!(
        cfg_extra("passthrough=off").passthrough,
        PassthroughMode::Off
    );
    assert_eq!(
        cfg_extra("passthrough=auto").passthrough,
        PassthroughMode::Auto
    );
    assert!(cfg_extra("userxattr").userxattr);
    assert_eq!(cfg_extra("threads=8").threads, Some(8));
    assert_eq!(cfg_extra("threads=1024").threads, Some(1024));
}

#[test]
fn ovlfs_option_errors() {
    err_extra("whiteout=foo", &["whiteout", "\"foo\"", "chardev"]);
    err_extra("whiteout=", &["whiteout"]);
    err_extra("whiteout", &["whiteout", "needs a value"]);
    err_extra("passthrough=maybe", &["passthrough", "\"maybe\""]);
    for bad in ["0", "-1", "abc", "1025", "1.5", ""] {
        err_extra(
            &format!("threads={bad}"),
            &["threads", &format!("\"{bad}\"")],
        );
    }
    err_extra("userxattr=1", &["userxattr", "takes no value"]);
}

#[test]
fn fuse_overlayfs_options() {
    let c = cfg_extra(
        "squash_to_root,squash_to_uid=0,squash_to_gid=4294967295,static_nlink,noacl,\
         timeout=2.5,fsync=0,writeback=0,ino32_t",
    );
    assert!(c.squash_to_root && c.static_nlink && c.noacl && c.ino32);
    assert_eq!(c.squash_to_uid, Some(0));
    assert_eq!(c.squash_to_gid, Some(u32::MAX));
    assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
    assert!(!c.fsync && !c.writeback && !c.volatile);
    assert_eq!(cfg_extra("threaded=0").threads, Some(1));
    assert_eq!(cfg_extra("threaded=1").threads, None);
    assert_eq!(cfg_extra("threaded=0,threads=4").threads, Some(4));
    assert_eq!(cfg_extra("threads=4,threaded=0").threads, Some(4));
    let c = cfg_extra("volatile,fsync=1");
    assert!(c.volatile && !c.fsync);
    assert!(cfg_extra("fsync=1,writeback=1").fsync);
}

#[test]
fn redirect_dir_values() {
    assert!(!cfg_extra("").redirect_dir);
    assert!(cfg_extra("redirect_dir=on").redirect_dir);
    for off in ["off", "follow"] {
        let c = cfg_extra(&format!("redirect_dir=on,redirect_dir={off}"));
        assert!(!c.redirect_dir && c.ignored_options.is_empty(), "{off}");
    }
    assert!(!cfg_extra("redirect_dir=nofollow").redirect_dir);
    err_extra(
        "redirect_dir=yes",
        &["redirect_dir", "\"yes\"", "on, off, follow"],
    );
}

#[test]
fn ignored_compat_options() {
    let c = cfg_extra(
        "xino=auto,fast_ino,fast_ino=1,plugins=/a.so:/b.so,\
         noxattrs=1,redirect_dir=nofollow,index=off,mystery,other=1",
    );
    assert_eq!(
        c.ignored_options,
        [
            "xino=auto",
            "fast_ino",
            "fast_ino=1",
            "plugins=/a.so:/b.so",
            "noxattrs=1",
            "redirect_dir=nofollow",
            "index=off",
            "mystery",
            "other=1"
        ]
    );
    assert!(c.fuse_options.is_empty());
    let c = cfg_extra("defaults,noauto,nofail,_netdev,user,users,x-systemd.automount,comment=x");
    assert!(c.ignored_options.is_empty() && c.fuse_options.is_empty());
    for ok in ["on", "off", "auto"] {
        assert_eq!(cfg_extra(&format!("xino={ok}")).ignored_options.len(), 1);
    }
}

#[test]
fn fuse_overlayfs_option_errors() {
    for name in ["threaded", "fsync", "writeback"] {
        for bad in ["2", "yes", "", "-1"] {
            err_extra(
                &format!("{name}={bad}"),
                &[name, &format!("\"{bad}\""), "0 or 1"],
            );
        }
        err_extra(name, &[name, "needs a value"]);
    }
    for bad in ["-1", "x", "", "nan"] {
        err_extra(
            &format!("timeout={bad}"),
            &["timeout", &format!("\"{bad}\"")],
        );
    }
    for name in ["squash_to_uid", "squash_to_gid"] {
        for bad in ["-1", "4294967296", "root", ""] {
            err_extra(&format!("{name}={bad}"), &[name, &format!("\"{bad}\"")]);
        }
    }
    err_extra("xino=maybe", &["xino", "\"maybe\""]);
    err_extra("uidmapping=0:1000", &["uidmapping", "triples"]);
    err_extra("gidmapping=0:x:1", &["gidmapping", "\"x\""]);
    err_extra("uidmapping=0:0:0", &["uidmapping", "size 0"]);
    err_extra("squash_to_root=1", &["squash_to_root", "takes no value"]);
    err_extra("volatile=1", &["volatile", "takes no value"]);
    err_extra("context", &["context", "needs a value"]);
}

#[test]
fn fuse_options_pass_through() {
    let all = FUSE_FLAGS.join(",") + ",fsname=myfs,subtype=ovl,max_read=131072,blksize=4096";
    let c = cfg_extra(&all);
    let mut expected: Vec<String> = FUSE_FLAGS.iter().map(|s| s.to_string()).collect();
    expected.extend(["fsname=myfs", "subtype=ovl", "max_read=131072"].map(String::from));
    assert_eq!(c.fuse_options, expected);
    // Only block-device FUSE mounts take blksize=: ignored with a warning.
    assert_eq!(c.ignored_options, ["blksize=4096"]);
    // `ro` with an upper is kept: the mount is read-only, the layers are still validated.
    let c = cfg_extra("ro");
    assert_eq!(c.fuse_options, vec!["ro".to_owned()]);
    assert!(c.upperdir.is_some());
}

#[test]
fn fuse_option_errors() {
    err_extra("allow_other=1", &["allow_other", "takes no value"]);
    err_extra("max_read=abc", &["max_read", "\"abc\""]);
    err_extra("max_read=0", &["max_read"]);
    err_extra("blksize=-4", &["blksize"]);
    err_extra("fsname", &["fsname", "needs a value"]);
    err_extra("fsname=", &["fsname", "empty"]);
    err_extra("subtype=", &["subtype", "empty"]);
    for bad in ["a b", "a/b", r"a\,b", "a:b"] {
        err_extra(&format!("subtype={bad}"), &["subtype"]);
    }
    assert_eq!(
        cfg_extra("subtype=my-fs.2").fuse_options,
        ["subtype=my-fs.2"]
    );
}

// ---- unknown options ----

#[test]
fn unknown_options_are_ignored() {
    // As fuse-overlayfs does ("unknown argument ignored"), with a warning at mount time.
    let c = cfg_extra("volatile,bogus,max_threads=4,max_idle_threads=2,clone_fd,uid=0,index=off");
    assert_eq!(
        c.ignored_options,
        [
            "bogus",
            "max_threads=4",
            "max_idle_threads=2",
            "clone_fd",
            "uid=0",
            "index=off"
        ]
    );
    assert_eq!(c.threads, None);
}

#[test]
fn typos_are_errors() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let cases: &[(String, &[&str])] = &[
        (
            format!("lowerdir={l},uperdir={u},workdir={w}"),
            &["\"uperdir=", "did you mean \"upperdir\""],
        ),
        (
            format!("lowerdirs={l}"),
            &["\"lowerdirs=", "did you mean \"lowerdir\""],
        ),
        (
            format!("lowerdir={l},Workdir={w},upperdir={u}"),
            &["did you mean \"workdir\""],
        ),
        (
            format!("lowerdir={l},upper_layer={u}"),
            &["\"upper_layer=", "lowerdir=, upperdir= and workdir="],
        ),
        (
            format!("lowerdir={l},datadir={u}"),
            &["\"datadir=", "did you mean \"datadir+\""],
        ),
        (
            format!("lowerdir={l}, upperdir={u}, workdir={w}"),
            &["\" upperdir=", "spaces"],
        ),
        (
            format!("lowerdir={l},upperdir ={u},workdir={w}"),
            &["\"upperdir =", "spaces"],
        ),
        (
            format!("lowerdir={l},,  ,upperdir={u},workdir={w}"),
            &["\"  \"", "spaces"],
        ),
        (format!("lowerdir={l},=x"), &["\"=x\"", "no name"]),
        (
            format!("lowerdir={l},static_nlnk"),
            &["did you mean \"static_nlink\""],
        ),
        (
            format!("lowerdir={l},volatil"),
            &["did you mean \"volatile\""],
        ),
        (
            format!("lowerdir={l},squash_to_rot"),
            &["did you mean \"squash_to_root\""],
        ),
        (format!("lowerdir={l},RO"), &["did you mean \"ro\""]),
    ];
    for (opts, needles) in cases {
        err_contains(&["-o", opts, &m], needles);
    }
}

#[test]
fn unescaped_comma_in_a_path_is_an_error() {
    let t = Tree::new();
    let (l, _, w, m) = t.standard();
    let u = t.dir("x/u,v");
    let parent = t.path("x/u");
    fs::create_dir_all(&parent).unwrap();
    // The rest of the path after the comma, right after a path option.
    let e = err_contains(
        &["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), &m],
        &["\"v\"", "after", "upperdir=", "\"\\,\""],
    );
    assert!(e.contains(&parent), "{e}");
    err_contains(
        &["-o", &format!("upperdir={u},workdir={w},lowerdir={l}"), &m],
        &["\"v\""],
    );
    err_contains(
        &["-o", &format!("lowerdir={l}:{u},upperdir={parent}"), &m],
        &["\"v\""],
    );
    // A fragment holding a slash is part of a path wherever it is.
    let deep = t.dir("y/a,b/c");
    err_contains(
        &["-o", &format!("volatile,lowerdir={deep}"), &m],
        &["\"b/c\"", "part of a path"],
    );
    // Escaped, it works.
    let c = config(&[
        "-o",
        &format!(
            "lowerdir={l},upperdir={},workdir={w}",
            u.replace(',', "\\,")
        ),
        &m,
    ]);
    assert_eq!(c.upperdir, Some(PathBuf::from(&u)));
    // A known option after a path stays what it is; an unknown one with a value is ignored.
    let c = config(&[
        "-o",
        &format!("lowerdir={l},upperdir={parent},volatile,workdir={w},xyz=1"),
        &m,
    ]);
    assert!(c.volatile);
    assert_eq!(c.ignored_options, ["xyz=1"]);
    // Without such a path it is an unknown option, ignored as fuse-overlayfs does.
    let c = config(&["-o", &format!("lowerdir={l},bogus"), &m]);
    assert_eq!(c.ignored_options, ["bogus"]);
    // Separate -o arguments are no commas.
    let c = config(&["-o", &format!("lowerdir={l}"), "-o", "mystery", &m]);
    assert_eq!(c.ignored_options, ["mystery"]);
}

#[test]
fn xattr_permissions_values() {
    use super::XattrPermissions as X;
    assert_eq!(cfg_extra("xattr_permissions=0").xattr_permissions, X::Off);
    assert_eq!(
        cfg_extra("xattr_permissions=1").xattr_permissions,
        X::Privileged
    );
    assert_eq!(cfg_extra("xattr_permissions=2").xattr_permissions, X::User);
    assert!(cfg_extra("xattr_permissions=2").ignored_options.is_empty());
    err_extra("xattr_permissions=3", &["xattr_permissions", "\"3\""]);
    err_extra("xattr_permissions", &["xattr_permissions", "needs a value"]);
}
