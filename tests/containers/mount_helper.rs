//! The mount helper form (`ovlfs SOURCE MERGED -o OPTS`, mount.fuse3, `mount -t fuse...`).

use super::*;
use std::fs;

struct Plain {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Plain {
    fn new() -> Plain {
        let (t, root) = scratch(&["lower", "upper", "work", "mnt", "bin"]);
        write_file(&root.join("lower/f"), "lower\n");
        write_file(&root.join("lower/d/x"), "x\n");
        Plain { _t: t, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn layer_opts(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.p("lower").display(),
            self.p("upper").display(),
            self.p("work").display()
        )
    }

    /// Reads, writes, then the write is in the upper.
    fn exercise(&self, mnt: &Path, tag: &str) {
        let mnt = mnt.to_path_buf();
        let tag = tag.to_string();
        let upper = self.p("upper");
        with_watchdog(BODY_SECS, &mnt.clone(), move || {
            assert_eq!(fs::read_to_string(mnt.join("f")).expect("f"), "lower\n");
            write_file(&mnt.join(&tag), "w\n");
            assert_eq!(fs::read_to_string(upper.join(&tag)).expect("upper"), "w\n");
        });
    }
}

/// `ovlfs SOURCE MERGED -o rw,dev,suid,…` — what mount.fuse3 runs — daemonizes and mounts.
#[test]
fn mount_helper_form_source_merged_opts() {
    if !require_root("mount_helper_form_source_merged_opts") {
        return;
    }
    let pl = Plain::new();
    let mnt = pl.p("mnt");
    let args: Vec<OsString> = vec![
        "ovlfs".into(),
        mnt.clone().into(),
        "-o".into(),
        format!("rw,dev,suid,{},nodiratime,noatime", pl.layer_opts()).into(),
    ];
    let m = launch(ovlfs_bin().as_os_str(), &args, &pl.root, None, &mnt)
        .ok("ovlfs ovlfs MNT -o rw,dev,suid,…");
    pl.exercise(m.path(), "helper_form");
    m.fusermount_u();
}

/// mount.fuse3 exactly as mount(8) calls it (`mount.fuse3 SOURCE MNT -o OPTS -t fuse.ovlfs`)
/// with `ovlfs` found through PATH; `mount -t fuse 'BIN#SOURCE'`; and `mount -t fuse.ovlfs`.
#[test]
fn mount_fuse3_and_mount_t_fuse() {
    let test = "mount_fuse3_and_mount_t_fuse";
    if !require_root(test) {
        return;
    }
    let helper = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(helper) = helper else {
        visible(&format!("SKIPPED: {test}: mount.fuse3 not installed"));
        return;
    };
    let pl = Plain::new();
    let mnt = pl.p("mnt");
    let bindir = pl.p("bin");
    symlink(ovlfs_bin(), &bindir.join("ovlfs"));
    let path = {
        let mut v = vec![bindir.clone()];
        if let Some(p) = std::env::var_os("PATH") {
            v.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(v).expect("join PATH")
    };
    let opts = format!("rw,dev,suid,{}", pl.layer_opts());

    // 1. mount.fuse3 directly, PATH prepended.
    let args: Vec<OsString> = vec![
        "ovlfs".into(),
        mnt.clone().into(),
        "-o".into(),
        opts.clone().into(),
        "-t".into(),
        "fuse.ovlfs".into(),
    ];
    let m = launch(helper.as_os_str(), &args, &pl.root, Some(&path), &mnt)
        .ok("mount.fuse3 ovlfs MNT -o … -t fuse.ovlfs");
    pl.exercise(m.path(), "via_mount_fuse3");
    m.unmount_with("umount", &[]);

    // 2. mount(8) with the program named in the source (works whatever PATH mount(8) keeps).
    let args: Vec<OsString> = vec![
        "-t".into(),
        "fuse".into(),
        format!("{}#ovlfs", ovlfs_bin().display()).into(),
        mnt.clone().into(),
        "-o".into(),
        opts.clone().into(),
    ];
    let m = launch("mount".as_ref(), &args, &pl.root, None, &mnt).ok("mount -t fuse BIN#ovlfs");
    pl.exercise(m.path(), "via_mount_t_fuse");
    m.unmount_with("umount", &[]);

    // 3. mount -t fuse.ovlfs with PATH prepended. libmount runs helpers without PATH (then
    // /bin/sh's default search path applies), so this finds `ovlfs` only once it is installed
    // in a standard directory.
    let args: Vec<OsString> = vec![
        "-t".into(),
        "fuse.ovlfs".into(),
        "ovlfs".into(),
        mnt.clone().into(),
        "-o".into(),
        opts.into(),
    ];
    let l = launch("mount".as_ref(), &args, &pl.root, Some(&path), &mnt);
    let installed = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .any(|d| Path::new(d).join("ovlfs").exists());
    if !installed && l.stderr.contains("not found") && !l.mounted_at_exit {
        visible(&format!(
            "NOTE: {test}: `mount -t fuse.ovlfs` did not find ovlfs: mount(8) drops PATH for \
             its helpers, so ovlfs must be installed in a standard directory (e.g. \
             /usr/local/bin) for this form; the two forms above passed"
        ));
        return;
    }
    let m = l.ok("mount -t fuse.ovlfs ovlfs MNT");
    pl.exercise(m.path(), "via_mount_t_fuse_ovlfs");
    m.unmount_with("umount", &[]);
}

/// Started as `mount.fuse.ovlfs` (what mount(8) runs for `-t fuse.ovlfs`, found as
/// /sbin/mount.fuse.ovlfs), ovlfs takes mount(8)'s helper flags: `-n`, `-s` (sloppy) and `-v`
/// are ignored, `-f` (fake) checks the command line and mounts nothing, `-N` is refused.
#[test]
fn started_as_mount_helper_takes_mount_flags() {
    let test = "started_as_mount_helper_takes_mount_flags";
    if !require_root(test) {
        return;
    }
    let pl = Plain::new();
    let mnt = pl.p("mnt");
    let helper = pl.p("bin/mount.fuse.ovlfs");
    symlink(ovlfs_bin(), &helper);
    let opts = format!("rw,{}", pl.layer_opts());
    let args = |flags: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["ovlfs".into(), mnt.clone().into()];
        v.extend(flags.iter().map(OsString::from));
        v.extend(["-o".into(), OsString::from(&opts)]);
        v
    };
    // Fake: exit 0, nothing mounted, nothing left running.
    let l = launch(
        helper.as_os_str(),
        &args(&["-f", "-v"]),
        &pl.root,
        None,
        &mnt,
    );
    assert!(
        l.status_code() == Some(0) && !l.mounted_at_exit,
        "mount.fuse.ovlfs -f: {:?} mounted {}; {}",
        l.status_code(),
        l.mounted_at_exit,
        l.stderr
    );
    // Refused: one line, non-zero.
    let bad = args(&["-N", "/proc/1/ns/mnt"]);
    let l = launch(helper.as_os_str(), &bad, &pl.root, None, &mnt);
    assert!(
        l.status_code().is_some_and(|c| c != 0) && !l.mounted_at_exit,
        "{}",
        l.stderr
    );
    assert_eq!(l.stderr.trim().lines().count(), 1, "{:?}", l.stderr);
    // -n -s -v: a normal daemon mount.
    let m = launch(
        helper.as_os_str(),
        &args(&["-n", "-s", "-v"]),
        &pl.root,
        None,
        &mnt,
    )
    .ok("mount.fuse.ovlfs SOURCE MNT -n -s -v -o …");
    pl.exercise(m.path(), "via_helper_name");
    m.unmount_with("umount", &[]);
}
