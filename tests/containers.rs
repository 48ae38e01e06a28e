//! The containers/storage contract (issue 4, DESIGN.md §2): the exact argv shapes of a
//! `mount_program` (`[prog, "-o", OPTS, MERGED]`, no `-f`, the storage directory as cwd, 200+
//! lowers given as relative `l/` symlinks, trailing empty fields, `volatile`, a quoted
//! `context=` with commas, mapping options, read-only `lowerdir=A:B`), `--version`, AUFS
//! whiteouts in image layers, the rm -rf/mkdir trap, the mount-helper form
//! (`ovlfs SOURCE MERGED -o OPTS`, mount.fuse3, `mount -t fuse...`), and — where podman is
//! installed and can run containers — a podman end-to-end test with ovlfs as `mount_program`.

mod common;

use common::*;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BODY_SECS: u64 = 120;
const CHILD: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn quiet(prog: &str, args: &[&OsStr]) -> bool {
    let mut c = Command::new(prog);
    c.args(args);
    run_cmd(&mut c, MOUNT_TIMEOUT).is_ok_and(|o| o.success())
}

/// A mount made by a command we ran (the daemon is not our child). Dropping it unmounts
/// (fusermount3 -u, then umount -l) and ends, by PID, any daemon still serving the mountpoint.
struct Mounted {
    mnt: PathBuf,
}

impl Mounted {
    fn path(&self) -> &Path {
        &self.mnt
    }

    /// `fusermount3 -u` (or `umount` for mount(8) mounts); asserts the daemon exits by itself.
    fn unmount_with(&self, prog: &str, args: &[&str]) {
        let mut c = Command::new(prog);
        c.args(args).arg(&self.mnt);
        let o = run_cmd(&mut c, MOUNT_TIMEOUT).expect("run unmount");
        assert!(
            o.success() && !is_fuse_mounted(&self.mnt),
            "{prog} {args:?} {} failed: {o:?}",
            self.mnt.display()
        );
        assert!(
            daemons_gone(&self.mnt, EXIT_TIMEOUT),
            "the daemon for {} did not exit by itself after {prog}",
            self.mnt.display()
        );
    }

    fn fusermount_u(&self) {
        self.unmount_with("fusermount3", &["-u"]);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_fuse_mounted(&self.mnt)
            && !quiet("fusermount3", &["-u".as_ref(), self.mnt.as_os_str()])
        {
            quiet("umount", &["-l".as_ref(), self.mnt.as_os_str()]);
        }
        let pids = find_daemon_pids(&ovlfs_bin(), &self.mnt);
        for &p in &pids {
            kill_pid(p, rustix::process::Signal::TERM);
        }
        if !pids.is_empty() && !daemons_gone(&self.mnt, Duration::from_secs(2)) {
            for p in find_daemon_pids(&ovlfs_bin(), &self.mnt) {
                visible(&format!(
                    "guard: daemon {p} on {} still running; SIGKILL",
                    self.mnt.display()
                ));
                kill_pid(p, rustix::process::Signal::KILL);
            }
        }
        if is_fuse_mounted(&self.mnt) {
            visible(&format!(
                "guard: WARNING: {} still mounted",
                self.mnt.display()
            ));
        }
    }
}

struct Launch {
    status: Option<ExitStatus>,
    mounted_at_exit: bool,
    stderr: String,
    mount: Mounted,
}

impl Launch {
    /// Asserts exit 0 with the mount live at that moment.
    fn ok(self, what: &str) -> Mounted {
        assert!(
            self.status.is_some_and(|s| s.success()) && self.mounted_at_exit,
            "{what}: status {:?}, mounted when the launcher exited: {}, stderr:\n{}",
            self.status,
            self.mounted_at_exit,
            self.stderr
        );
        self.mount
    }
}

/// Run `program args...` (which must return once the mount is live) with `cwd`, bounded.
fn launch(
    program: &OsStr,
    args: &[OsString],
    cwd: &Path,
    env_path: Option<&OsStr>,
    mnt: &Path,
) -> Launch {
    let mut c = Command::new(program);
    c.args(args)
        .current_dir(cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = env_path {
        c.env("PATH", p);
    }
    let guard = Mounted {
        mnt: mnt.to_path_buf(),
    };
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
    let err = Capture::spawn(child.stderr.take().expect("piped stderr"));
    let status = wait_child(&mut child, MOUNT_TIMEOUT);
    let mounted_at_exit = is_fuse_mounted(mnt);
    if status.is_none() {
        let _ = child.kill();
        let _ = wait_child(&mut child, EXIT_TIMEOUT);
    }
    Launch {
        status,
        mounted_at_exit,
        stderr: err.text(Duration::from_millis(300)),
        mount: guard,
    }
}

/// containers/storage's argv: `[prog, "-o", OPTS, MERGED]` from `cwd`, no `-f`.
fn storage_launch(cwd: &Path, opts: &str, mnt: &Path) -> Launch {
    launch(
        ovlfs_bin().as_os_str(),
        &["-o".into(), opts.into(), mnt.as_os_str().to_os_string()],
        cwd,
        None,
        mnt,
    )
}

/// A 26-character id in c/storage's `l/` link alphabet (deterministic).
fn short_id(i: usize) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..26)
        .map(|_| {
            x ^= x >> 29;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(x >> 58) as usize % 36] as char
        })
        .collect()
}

/// A containers/storage style overlay home: `overlay/<layer>/diff` for each layer,
/// `overlay/l/<SHORT> -> ../<layer>/diff`, and a container dir with diff/work/merged.
struct Storage {
    _t: tempfile::TempDir,
    root: PathBuf,
    /// Relative `l/SHORT` names, topmost first.
    links: Vec<String>,
}

impl Storage {
    fn new(layers: usize, fill: impl Fn(usize, &Path)) -> Storage {
        let (t, root) = scratch(&[
            "overlay/l",
            "overlay/ctr/diff",
            "overlay/ctr/work",
            "overlay/ctr/merged",
        ]);
        let home = root.join("overlay");
        let mut links = Vec::new();
        for i in 0..layers {
            let id = format!("{:064x}", (i as u128 + 1) * 0x1234_5678_9abc_def1);
            let diff = home.join(&id).join("diff");
            mkdirs(&diff);
            fill(i, &diff);
            let short = short_id(i);
            symlink(format!("../{id}/diff"), &home.join("l").join(&short));
            links.push(format!("l/{short}"));
        }
        Storage { _t: t, root, links }
    }

    fn home(&self) -> PathBuf {
        self.root.join("overlay")
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.home().join(rel)
    }

    fn lowerdir(&self) -> String {
        format!("lowerdir={}", self.links.join(":"))
    }

    fn upper_work(&self) -> String {
        format!(
            "upperdir={},workdir={}",
            self.p("ctr/diff").display(),
            self.p("ctr/work").display()
        )
    }

    fn merged(&self) -> PathBuf {
        self.p("ctr/merged")
    }
}

// ---------------------------------------------------------------------------------------------
// --version
// ---------------------------------------------------------------------------------------------

#[test]
fn version_prints_one_line() {
    for flag in ["--version", "-V"] {
        let mut c = Command::new(ovlfs_bin());
        c.arg(flag);
        let o = run_cmd(&mut c, CHILD).expect("run ovlfs --version");
        assert!(o.success(), "ovlfs {flag}: {o:?}");
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "ovlfs {flag} must print one line: {:?}",
            o.stdout
        );
        assert!(
            !lines[0].trim().is_empty(),
            "ovlfs {flag} printed an empty line"
        );
        assert!(
            lines[0].contains(env!("CARGO_PKG_VERSION")),
            "ovlfs {flag} should name the version: {:?}",
            lines[0]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The exact argv shapes
// ---------------------------------------------------------------------------------------------

const LAYERS: usize = 250;
const HOST_ROOT: u32 = 100_000;

/// Layer i holds `fNNN`, `dir/fNNN` and a `shared` file saying which layer it comes from;
/// everything owned by host 100000 (container root under the mapping).
fn fill_layer(i: usize, diff: &Path) {
    write_file(&diff.join(format!("f{i:03}")), format!("file {i}\n"));
    write_file(
        &diff.join(format!("dir/f{i:03}")),
        format!("dir file {i}\n"),
    );
    write_file(&diff.join("shared"), format!("layer {i}\n"));
    for p in [
        diff.join(format!("f{i:03}")),
        diff.join(format!("dir/f{i:03}")),
        diff.join("dir"),
        diff.join("shared"),
        diff.to_path_buf(),
    ] {
        chown(&p, HOST_ROOT, HOST_ROOT);
    }
}

/// 250 symlinked lowers, trailing empty fields (`…/work,,volatile`, and a trailing `,`), a
/// quoted context with commas, mapping options with the stray leading `:`, daemon mode from
/// the storage directory as cwd.
#[test]
fn storage_argv_250_symlinked_lowers() {
    if !require_root("storage_argv_250_symlinked_lowers") {
        return;
    }
    let st = Storage::new(LAYERS, fill_layer);
    chown(&st.p("ctr/diff"), HOST_ROOT, HOST_ROOT);
    let opts = format!(
        "{},{},,volatile,context=\"system_u:object_r:container_file_t:s0:c1,c2\",\
         uidmapping=:0:{HOST_ROOT}:65536,gidmapping=:0:{HOST_ROOT}:65536,",
        st.lowerdir(),
        st.upper_work()
    );
    assert!(
        opts.len() > 7000,
        "the option string should be long ({})",
        opts.len()
    );
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("containers/storage argv");
    let mnt = m.path().to_path_buf();
    let upper = st.p("ctr/diff");
    with_watchdog(BODY_SECS, m.path(), move || {
        let top = names(&mnt);
        assert_eq!(top.len(), LAYERS + 2, "root entries: {top:?}");
        for i in [0, 1, 99, 200, LAYERS - 1] {
            assert_eq!(
                fs::read_to_string(mnt.join(format!("f{i:03}"))).expect("read fNNN"),
                format!("file {i}\n")
            );
        }
        assert_eq!(names(&mnt.join("dir")).len(), LAYERS, "merged dir/");
        // The leftmost lower is the top.
        assert_eq!(
            fs::read_to_string(mnt.join("shared")).expect("shared"),
            "layer 0\n"
        );
        let md = fs::metadata(mnt.join("f123")).expect("stat f123");
        assert_eq!(
            (md.uid(), md.gid()),
            (0, 0),
            "host 100000 shows as container root"
        );
        // Writes land in the upper, owned by the mapped host id.
        write_file(&mnt.join("created"), "new\n");
        let md = fs::metadata(upper.join("created")).expect("upper/created");
        assert_eq!((md.uid(), md.gid()), (HOST_ROOT, HOST_ROOT));
        fs::remove_file(mnt.join("f007")).expect("rm f007");
        assert_eq!(errno(&fs::metadata(mnt.join("f007"))), Some(libc::ENOENT));
    });
    m.fusermount_u();
    let wh = fs::symlink_metadata(st.p("ctr/diff/f007")).expect("whiteout of f007");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0/0 whiteout"
    );
}

/// `lowerdir=…,upperdir=…,workdir=…,` — the trailing empty field right after workdir.
#[test]
fn storage_argv_trailing_comma_after_workdir() {
    if !require_root("storage_argv_trailing_comma_after_workdir") {
        return;
    }
    let st = Storage::new(3, |i, d| write_file(&d.join(format!("f{i}")), "x\n"));
    let opts = format!("{},{},", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trailing comma");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&mnt), vec!["f0", "f1", "f2"]);
        write_file(&mnt.join("w"), "w\n");
    });
    m.fusermount_u();
    assert_eq!(
        fs::read_to_string(st.p("ctr/diff/w")).expect("upper/w"),
        "w\n"
    );
}

/// Read-only mounts arrive as `lowerdir=A:B` without an upper.
#[test]
fn storage_argv_read_only_two_lowers() {
    if !require_root("storage_argv_read_only_two_lowers") {
        return;
    }
    let st = Storage::new(2, |i, d| {
        write_file(&d.join(format!("only{i}")), format!("{i}\n"));
        write_file(&d.join("both"), format!("layer {i}\n"));
    });
    let opts = st.lowerdir();
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("read-only lowerdir=A:B");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&mnt), vec!["both", "only0", "only1"]);
        assert_eq!(
            fs::read_to_string(mnt.join("both")).expect("both"),
            "layer 0\n"
        );
        assert_eq!(
            errno(&fs::write(mnt.join("new"), "x")),
            Some(libc::EROFS),
            "creating in a read-only mount"
        );
        assert_eq!(
            errno(&fs::OpenOptions::new().append(true).open(mnt.join("both"))),
            Some(libc::EROFS)
        );
        assert_eq!(
            errno(&fs::remove_file(mnt.join("only1"))),
            Some(libc::EROFS)
        );
    });
    m.fusermount_u();
}

// ---------------------------------------------------------------------------------------------
// AUFS whiteouts in image layers
// ---------------------------------------------------------------------------------------------

/// containers/storage extracts image layers for mount programs with AUFS whiteouts: `.wh.NAME`
/// hides NAME below, `.wh..wh..opq` hides everything below in that directory; neither shows.
#[test]
fn aufs_whiteouts_in_image_layers_hide_lower_entries() {
    if !require_root("aufs_whiteouts_in_image_layers_hide_lower_entries") {
        return;
    }
    // Layer 0 is the top. 2 = base image, 1 = a layer deleting things, 0 = adds on top.
    let st = Storage::new(3, |i, d| match i {
        2 => {
            write_file(&d.join("a"), "a\n");
            write_file(&d.join("b"), "b\n");
            write_file(&d.join("dir/x"), "x\n");
            write_file(&d.join("dir/y"), "y\n");
            write_file(&d.join("dir2/z"), "z\n");
            write_file(&d.join("dir2/keep"), "keep\n");
            write_file(&d.join("sub/deep/file"), "deep\n");
        }
        1 => {
            whiteout_aufs(d, "a");
            opaque(&d.join("dir"), Opaque::WhOpq);
            write_file(&d.join("dir/mid"), "mid\n");
            whiteout_aufs(&d.join("dir2"), "z");
            whiteout_aufs(d, "sub");
        }
        _ => {
            write_file(&d.join("dir/top"), "top\n");
            write_file(&d.join("sub/fresh"), "fresh\n");
        }
    });
    let opts = format!("{},{}", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("AUFS layers");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&mnt), vec!["b", "dir", "dir2", "sub"]);
        assert_eq!(names(&mnt.join("dir")), vec!["mid", "top"]);
        assert_eq!(names(&mnt.join("dir2")), vec!["keep"]);
        // `sub` was deleted in layer 1 and recreated in layer 0: only the new content.
        assert_eq!(names(&mnt.join("sub")), vec!["fresh"]);
        for hidden in [
            "a",
            "dir/x",
            "dir/y",
            "dir2/z",
            "sub/deep",
            ".wh.a",
            "dir/.wh..wh..opq",
            "dir2/.wh.z",
        ] {
            assert_eq!(
                errno(&fs::symlink_metadata(mnt.join(hidden))),
                Some(libc::ENOENT),
                "/{hidden} must not be visible"
            );
        }
        // A hidden name can be created again through the mount.
        write_file(&mnt.join("a"), "again\n");
        assert_eq!(fs::read_to_string(mnt.join("a")).expect("a"), "again\n");
        fs::create_dir(mnt.join("dir2/z")).expect("mkdir dir2/z over an AUFS whiteout");
        assert!(names(&mnt.join("dir2/z")).is_empty());
    });
    m.fusermount_u();
}

// ---------------------------------------------------------------------------------------------
// The rm -rf / mkdir trap
// ---------------------------------------------------------------------------------------------

fn sh(script: &str) -> CmdOutput {
    let mut c = Command::new("sh");
    c.args(["-c", script]).env("LC_ALL", "C");
    run_cmd(&mut c, CHILD).expect("run sh")
}

/// What must hold in `D` after `rm -rf D && mkdir D` (and the files created in it since).
fn check_trap(mnt: &Path, created: &[&str]) {
    let d = mnt.join("D");
    let mut want: Vec<String> = created.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names(&d), want, "readdir of the recreated D");
    for gone in ["a", "b", "sub", "sub/c"] {
        if created.contains(&gone) {
            continue;
        }
        assert_eq!(
            errno(&fs::symlink_metadata(d.join(gone))),
            Some(libc::ENOENT),
            "stat D/{gone} after rm -rf D && mkdir D && readdir D"
        );
        assert_eq!(
            errno(&fs::File::open(d.join(gone))),
            Some(libc::ENOENT),
            "open D/{gone}"
        );
    }
    // And from a fresh process (what a build step would do next).
    let o = sh(&format!(
        "cd '{}' && ls -la D >/dev/null && for n in a b sub sub/c; do stat D/$n >/dev/null 2>&1 && echo \"visible $n\"; done; true",
        mnt.display()
    ));
    let visible_names: Vec<&str> = o
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("visible "))
        .filter(|n| !created.contains(n))
        .collect();
    assert!(
        visible_names.is_empty(),
        "names of the old lower D visible again from a new process: {visible_names:?}"
    );
}

/// After `rm -rf D && mkdir D` through the mount and a readdir of D, a name that used to be in
/// the lower D must be ENOENT (fuse-overlayfs gets this wrong, and podman's layer then misses
/// the whiteout) — also after a remount, and after re-creating one of the old names.
#[test]
fn rm_rf_mkdir_trap() {
    if !require_root("rm_rf_mkdir_trap") {
        return;
    }
    let st = Storage::new(2, |i, d| {
        if i == 1 {
            write_file(&d.join("D/a"), "a\n");
            write_file(&d.join("D/sub/c"), "c\n");
        } else {
            write_file(&d.join("D/b"), "b\n");
        }
    });
    let opts = format!("{},{}", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trap mount");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        // Look everything up first, so the kernel has the old names cached.
        assert_eq!(names(&mnt.join("D")), vec!["a", "b", "sub"]);
        assert!(fs::metadata(mnt.join("D/sub/c")).is_ok());
        let o = sh(&format!("cd '{}' && rm -rf D && mkdir D", mnt.display()));
        assert!(o.success(), "rm -rf D && mkdir D: {o:?}");
        check_trap(&mnt, &[]);
        write_file(&mnt.join("D/new"), "new\n");
        check_trap(&mnt, &["new"]);
        // One old name recreated: the new file, not the lower one.
        write_file(&mnt.join("D/a"), "fresh a\n");
        assert_eq!(
            fs::read_to_string(mnt.join("D/a")).expect("D/a"),
            "fresh a\n"
        );
        check_trap(&mnt, &["a", "new"]);
    });
    m.fusermount_u();
    let opq = get_xattr(&st.p("ctr/diff/D"), "trusted.overlay.opaque")
        .or_else(|_| get_xattr(&st.p("ctr/diff/D"), "user.overlay.opaque"));
    assert_eq!(
        opq.ok().as_deref(),
        Some(&b"y"[..]),
        "upper D must be opaque"
    );

    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trap remount");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        check_trap(&mnt, &["a", "new"]);
        assert_eq!(
            fs::read_to_string(mnt.join("D/a")).expect("D/a"),
            "fresh a\n"
        );
    });
    m.fusermount_u();
}

/// The same trap with every step a separate short-lived process, as a RUN line does it.
#[test]
fn rm_rf_mkdir_trap_separate_processes() {
    if !require_root("rm_rf_mkdir_trap_separate_processes") {
        return;
    }
    let st = Storage::new(1, |_, d| {
        for n in 0..50 {
            write_file(&d.join(format!("D/f{n}")), "x\n");
        }
        write_file(&d.join("D/sub/c"), "c\n");
    });
    let opts = format!("{},{}", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trap mount");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let q = mnt.display();
        let o = sh(&format!(
            "ls -la '{q}/D' >/dev/null; rm -rf '{q}/D' && mkdir '{q}/D' && ls '{q}/D'; \
             for n in f0 f49 sub sub/c; do stat '{q}/D'/$n >/dev/null 2>&1 && echo \"visible $n\"; done; \
             echo done"
        ));
        assert!(o.success(), "{o:?}");
        assert_eq!(
            o.stdout, "done\n",
            "old names visible after rm -rf/mkdir: {o:?}"
        );
    });
    m.fusermount_u();
}

// ---------------------------------------------------------------------------------------------
// The mount helper form
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// podman end-to-end
// ---------------------------------------------------------------------------------------------

fn podman_skip(why: &str) {
    // Not fatal under CI either: CI does not install podman.
    visible(&format!(
        "SKIPPED: podman_end_to_end_with_ovlfs_mount_program: {why}"
    ));
}

/// Build a tiny root filesystem from the host's sh and a few coreutils (with their libraries).
fn build_rootfs(root: &Path) -> Result<(), String> {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "run", "var"] {
        mkdirs(&root.join(d));
    }
    let tools = [
        "sh", "ls", "cat", "mkdir", "rm", "touch", "stat", "echo", "tr",
    ];
    for t in tools {
        let src = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(t))
            .find(|p| p.exists())
            .ok_or_else(|| format!("{t} not found on the host"))?;
        let real = fs::canonicalize(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        fs::copy(&real, root.join("bin").join(t)).map_err(|e| format!("copy {t}: {e}"))?;
        let mut c = Command::new("ldd");
        c.arg(&real);
        let o = run_cmd(&mut c, CHILD).map_err(|e| format!("ldd: {e}"))?;
        for lib in o.stdout.split_whitespace().filter(|w| w.starts_with('/')) {
            let dst = root.join(lib.trim_start_matches('/'));
            if dst.exists() {
                continue;
            }
            if let Some(parent) = dst.parent() {
                mkdirs(parent);
            }
            let real = fs::canonicalize(lib).map_err(|e| format!("{lib}: {e}"))?;
            fs::copy(&real, &dst).map_err(|e| format!("copy {lib}: {e}"))?;
        }
    }
    Ok(())
}

struct Podman {
    base: Vec<String>,
    cwd: PathBuf,
}

impl Podman {
    fn new(state: &Path, driver_args: &[String]) -> Podman {
        let mut base = vec![
            format!("--root={}", state.join("root").display()),
            format!("--runroot={}", state.join("run").display()),
            format!("--tmpdir={}", state.join("tmp").display()),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
        ];
        if have("runc") {
            // crun refuses hybrid cgroup hierarchies; runc copes with them.
            base.push("--runtime=runc".into());
        }
        base.extend(driver_args.iter().cloned());
        Podman {
            base,
            cwd: state.to_path_buf(),
        }
    }

    fn run(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut c = Command::new("podman");
        c.args(&self.base)
            .args(args)
            .current_dir(&self.cwd)
            .env("LC_ALL", "C");
        run_cmd(&mut c, timeout).expect("run podman")
    }

    fn ok(&self, args: &[&str], timeout: Duration) -> String {
        let o = self.run(args, timeout);
        assert!(o.success(), "podman {args:?} failed: {o:?}");
        o.stdout
    }
}

const RUN_FLAGS: [&str; 4] = [
    "--network=none",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
    "--pull=never",
];

/// Tears podman state down and makes sure nothing stays mounted under `root` and no ovlfs
/// daemon serves a mountpoint there.
struct PodmanCleanup {
    pm: Podman,
    root: PathBuf,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        let _ = self.pm.run(&["rm", "-a", "-f"], Duration::from_secs(60));
        let _ = self.pm.run(&["rmi", "-a", "-f"], Duration::from_secs(60));
        let under: Vec<PathBuf> = mountinfo()
            .into_iter()
            .rev()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.root))
            .collect();
        for p in under {
            visible(&format!(
                "podman cleanup: unmounting leftover {}",
                p.display()
            ));
            quiet("umount", &["-l".as_ref(), p.as_os_str()]);
        }
        for pid in ovlfs_daemons_under(&self.root) {
            visible(&format!("podman cleanup: killing leftover ovlfs {pid}"));
            kill_pid(pid, rustix::process::Signal::KILL);
        }
    }
}

/// PIDs of ovlfs processes with an argument under `root`.
fn ovlfs_daemons_under(root: &Path) -> Vec<u32> {
    let bin = fs::canonicalize(ovlfs_bin()).unwrap_or_else(|_| ovlfs_bin());
    let mut v = Vec::new();
    let me = std::process::id();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|x| x == bin) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let r = root.to_string_lossy();
        if String::from_utf8_lossy(&cmdline).contains(&*r) {
            v.push(pid);
        }
    }
    v
}

/// Apply the image's saved layers (OCI dir) in order, honouring AUFS whiteouts, into `out`.
fn apply_oci_layers(oci: &Path, out: &Path) -> Vec<String> {
    let index = fs::read_to_string(oci.join("index.json")).expect("index.json");
    let digest_after = |text: &str, from: usize| -> Vec<String> {
        let mut v = Vec::new();
        let mut rest = &text[from..];
        while let Some(i) = rest.find("\"digest\":\"sha256:") {
            rest = &rest[i + "\"digest\":\"sha256:".len()..];
            v.push(rest[..64].to_string());
        }
        v
    };
    let manifest_digest = digest_after(&index, 0)
        .into_iter()
        .next()
        .expect("manifest digest in index.json");
    let manifest =
        fs::read_to_string(oci.join("blobs/sha256").join(&manifest_digest)).expect("manifest blob");
    let layers_at = manifest.find("\"layers\"").expect("layers in manifest");
    let layers = digest_after(&manifest, layers_at);
    assert!(!layers.is_empty(), "no layers in {manifest}");
    mkdirs(out);
    let mut listings = Vec::new();
    for l in &layers {
        let blob = oci.join("blobs/sha256").join(l);
        let mut c = Command::new("tar");
        c.arg("-tf").arg(&blob);
        let o = run_cmd(&mut c, CHILD).expect("tar -t");
        assert!(o.success(), "tar -tf {}: {o:?}", blob.display());
        listings.push(o.stdout.clone());
        for entry in o.stdout.lines() {
            let e = entry.trim_start_matches("./").trim_end_matches('/');
            let (dir, base) = match e.rsplit_once('/') {
                Some((d, b)) => (out.join(d), b),
                None => (out.to_path_buf(), e),
            };
            if base == ".wh..wh..opq" {
                for k in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let p = k.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            } else if let Some(name) = base.strip_prefix(".wh.") {
                let p = dir.join(name);
                let _ = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
        let mut c = Command::new("tar");
        c.arg("-xf")
            .arg(&blob)
            .arg("-C")
            .arg(out)
            .arg("--exclude=.wh.*")
            .arg("--no-same-owner");
        let o = run_cmd(&mut c, CHILD).expect("tar -x");
        assert!(o.success(), "tar -xf {}: {o:?}", blob.display());
    }
    listings
}

/// Rootful podman with ovlfs as `mount_program`: import a local base image from a tarball,
/// build an image whose RUN steps delete and recreate lower directories, run containers
/// (`--network=none`), check files, and check the saved layers reproduce the tree.
#[test]
fn podman_end_to_end_with_ovlfs_mount_program() {
    if !have("podman") {
        podman_skip("podman is not installed");
        return;
    }
    if !is_root() {
        podman_skip("needs root (rootful podman)");
        return;
    }
    for t in ["tar", "ldd"] {
        if !have(t) {
            podman_skip(&format!("{t} is not installed"));
            return;
        }
    }
    let (_t, root) = scratch(&["rootfs", "ctx", "vfs", "ovl", "saved_tree"]);
    if let Err(e) = build_rootfs(&root.join("rootfs")) {
        podman_skip(&format!("cannot build a root filesystem: {e}"));
        return;
    }
    let tarball = root.join("base.tar");
    let mut c = Command::new("tar");
    c.arg("-C")
        .arg(root.join("rootfs"))
        .arg("-cf")
        .arg(&tarball)
        .arg(".");
    let o = run_cmd(&mut c, CHILD).expect("tar -c");
    assert!(o.success(), "tar: {o:?}");
    let tarball_s = tarball.to_string_lossy().into_owned();

    // Can podman run containers here at all? Try with the vfs driver (no ovlfs involved).
    let vfs = Podman::new(&root.join("vfs"), &["--storage-driver=vfs".to_string()]);
    let _vfs_cleanup = PodmanCleanup {
        pm: Podman::new(&root.join("vfs"), &["--storage-driver=vfs".to_string()]),
        root: root.clone(),
    };
    let o = vfs.run(
        &["import", &tarball_s, "localhost/ovlfs-e2e-base:1"],
        Duration::from_secs(120),
    );
    if !o.success() {
        podman_skip(&format!(
            "podman import fails even with the vfs driver: {}",
            o.stderr.trim()
        ));
        return;
    }
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e-base:1", "sh", "-c", "echo ok"]);
    let o = vfs.run(&args, Duration::from_secs(120));
    if !(o.success() && o.stdout.trim() == "ok") {
        podman_skip(&format!(
            "podman cannot run containers here even with the vfs driver: {}",
            o.stderr.trim()
        ));
        return;
    }

    // The real thing: overlay driver with ovlfs as mount_program.
    let pm = Podman::new(
        &root.join("ovl"),
        &[
            "--storage-driver=overlay".to_string(),
            format!(
                "--storage-opt=overlay.mount_program={}",
                ovlfs_bin().display()
            ),
        ],
    );
    let _cleanup = PodmanCleanup {
        pm: Podman::new(
            &root.join("ovl"),
            &[
                "--storage-driver=overlay".to_string(),
                format!(
                    "--storage-opt=overlay.mount_program={}",
                    ovlfs_bin().display()
                ),
            ],
        ),
        root: root.clone(),
    };
    let long = Duration::from_secs(300);
    let info = pm.ok(&["info", "--format", "{{.Store.GraphOptions}}"], long);
    assert!(
        info.contains("mount_program") && info.contains(&*ovlfs_bin().to_string_lossy()),
        "podman does not use ovlfs as mount_program: {info}"
    );
    pm.ok(&["import", &tarball_s, "localhost/ovlfs-e2e-base:1"], long);

    // RUN steps that delete and recreate lower directories.
    let containerfile = "FROM localhost/ovlfs-e2e-base:1\n\
        RUN mkdir -p /data/sub /keep /nest/a/b && echo a > /data/sub/f && echo b > /data/g \
            && echo old > /data/old && echo k > /keep/k && echo k2 > /keep/k2 && echo deep > /nest/a/b/c\n\
        RUN rm -rf /data && mkdir /data && echo new > /data/n && rm /keep/k \
            && rm -rf /nest/a && mkdir -p /nest/a && echo fresh > /nest/a/fresh \
            && ls -la /data /nest/a >/dev/null && for p in /data/old /data/g /data/sub /nest/a/b; do if stat $p >/dev/null 2>&1; then echo \"STILL THERE: $p\"; exit 1; fi; done\n\
        RUN echo appended >> /keep/k2 && rm -rf /data && mkdir /data && echo newer > /data/m\n";
    write_file(&root.join("ctx/Containerfile"), containerfile);
    let ctx = root.join("ctx").to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec![
        "build",
        "--network=none",
        "--ulimit=nofile=1024:1024",
        "--ulimit=nproc=1024:1024",
        "-t",
        "localhost/ovlfs-e2e:1",
        "-f",
    ];
    let cf = format!("{ctx}/Containerfile");
    args.push(&cf);
    args.push(&ctx);
    let o = pm.run(&args, long);
    assert!(
        o.success(),
        "podman build with ovlfs failed:\n{}\n{}",
        o.stdout,
        o.stderr
    );

    // Run a container: the final tree, and that its root is an ovlfs mount.
    let check = "ls -A /data | tr '\\n' ' '; echo '|'; ls -A /keep | tr '\\n' ' '; echo '|'; \
                 cat /data/m /keep/k2 /nest/a/fresh; ls -A /nest/a | tr '\\n' ' '; echo '|'; \
                 for p in /data/n /data/old /keep/k /nest/a/b; do stat $p >/dev/null 2>&1 && echo \"visible $p\"; done; \
                 cat /proc/self/mountinfo";
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e:1", "sh", "-c", check]);
    let out = pm.ok(&args, long);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("m |"), "/data in the container:\n{out}");
    assert_eq!(lines.next(), Some("k2 |"), "/keep in the container:\n{out}");
    assert_eq!(lines.next(), Some("newer"));
    assert_eq!(lines.next(), Some("k2"));
    assert_eq!(lines.next(), Some("appended"));
    assert_eq!(lines.next(), Some("fresh"));
    assert_eq!(
        lines.next(),
        Some("fresh |"),
        "/nest/a in the container:\n{out}"
    );
    assert!(
        !out.contains("visible "),
        "deleted paths visible in the container:\n{out}"
    );
    let root_line = out
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in the container's mountinfo:\n{out}"));
    assert!(
        root_line.contains(" - fuse"),
        "the container's root is not a FUSE (ovlfs) mount: {root_line}"
    );

    // rm -rf / mkdir at container run time, on the image's lower layers.
    let trap = "rm -rf /data /nest && mkdir /data /nest && ls -A /data /nest; \
                for p in /data/m /nest/a /nest/a/fresh; do stat $p >/dev/null 2>&1 && echo \"visible $p\"; done; echo done";
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e:1", "sh", "-c", trap]);
    let out = pm.ok(&args, long);
    assert!(
        !out.contains("visible "),
        "rm -rf/mkdir trap in a container:\n{out}"
    );
    assert!(out.contains("done"), "{out}");

    // The saved layers reproduce the same tree.
    let saved = root.join("saved");
    let saved_s = saved.to_string_lossy().into_owned();
    pm.ok(
        &[
            "save",
            "--format",
            "oci-dir",
            "-o",
            &saved_s,
            "localhost/ovlfs-e2e:1",
        ],
        long,
    );
    let tree = root.join("saved_tree");
    let listings = apply_oci_layers(&saved, &tree);
    let got = |rel: &str| names(&tree.join(rel));
    assert_eq!(
        got("data"),
        vec!["m"],
        "/data from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        got("keep"),
        vec!["k2"],
        "/keep from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        got("nest/a"),
        vec!["fresh"],
        "/nest/a from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        fs::read_to_string(tree.join("keep/k2")).expect("keep/k2"),
        "k2\nappended\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("data/m")).expect("data/m"),
        "newer\n"
    );

    // No ovlfs daemon outlives the containers.
    pm.ok(&["rm", "-a", "-f"], long);
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while !ovlfs_daemons_under(&root).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left = ovlfs_daemons_under(&root);
    assert!(
        left.is_empty(),
        "ovlfs daemons still running after the containers ended: {left:?}"
    );
}
