//! The command line contract for bad input, through the real binary: each malformed command
//! line or layer setup exits non-zero with exactly one line on stderr that names the problem,
//! and leaves the file system untouched. Nothing here ever mounts: every child runs under a
//! timeout (killed by PID), and a guard unmounts anything that shows up below the test's temp
//! dirs anyway. Some cases run as an unprivileged user (`setpriv`, needs root to start).

mod cases;
#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Fields, TreeSnapshot, diff_trees, have, in_ci, ovlfs_bin, snapshot_tree_with};
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(20);
/// The unprivileged user of the `setpriv` cases.
const NOBODY: u32 = 65534;

/// The temp trees of one case: `root` on the temp dir's filesystem, `other` on /dev/shm (tmpfs)
/// when that is a different filesystem.
struct Ctx {
    root: TempDir,
    other: Option<TempDir>,
}

impl Ctx {
    fn new() -> Ctx {
        let root = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir_in("/dev/shm")
            .ok()
            .filter(|o| dev(o.path()) != dev(root.path()));
        Ctx { root, other }
    }

    fn path(&self, name: &str) -> String {
        self.root.path().join(name).to_str().unwrap().to_owned()
    }

    fn dir(&self, name: &str) -> String {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn file(&self, name: &str) -> String {
        let p = self.path(name);
        fs::write(&p, b"not a directory").unwrap();
        p
    }

    /// Lower `l`, upper `u`, work `w`, mountpoint `m`, all created.
    fn std(&self) -> (String, String, String, String) {
        (self.dir("l"), self.dir("u"), self.dir("w"), self.dir("m"))
    }

    fn roots(&self) -> Vec<&Path> {
        let mut r = vec![self.root.path()];
        r.extend(self.other.as_ref().map(TempDir::path));
        r
    }
}

fn dev(p: &Path) -> u64 {
    fs::metadata(p).unwrap().dev()
}

/// What a case runs (as root, or as `user`) and what its one stderr line must mention.
enum Setup {
    Run {
        args: Vec<String>,
        needles: Vec<String>,
        user: Option<u32>,
    },
    Skip(&'static str),
}

fn run(args: &[&str], needles: &[&str]) -> Setup {
    Setup::Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        needles: needles.iter().map(|s| s.to_string()).collect(),
        user: None,
    }
}

/// Gives the whole temp tree to [`NOBODY`] (so only what a case changes afterwards is in its
/// way), or says why the unprivileged cases cannot run; under CI=true that fails instead.
fn nobody_tree(c: &Ctx) -> Result<(), Setup> {
    let missing = if !rustix::process::geteuid().is_root() {
        Some("needs root (to switch to an unprivileged user)")
    } else if !have("setpriv") || !have("fusermount3") {
        Some("needs setpriv and fusermount3")
    } else {
        None
    };
    if let Some(why) = missing {
        assert!(!in_ci(), "{why} (CI=true: failing instead of skipping)");
        return Err(Setup::Skip(why));
    }
    // Distributions ship /dev/fuse usable by everyone; make sure it is.
    let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666));
    fs::set_permissions(c.root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fn give(p: &Path) {
        std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        if fs::symlink_metadata(p).unwrap().is_dir() {
            for e in fs::read_dir(p).unwrap() {
                give(&e.unwrap().path());
            }
        }
    }
    give(c.root.path());
    Ok(())
}

/// `run`, as [`NOBODY`].
fn run_as_nobody(args: &[&str], needles: &[&str]) -> Setup {
    match run(args, needles) {
        Setup::Run { args, needles, .. } => Setup::Run {
            args,
            needles,
            user: Some(NOBODY),
        },
        skip => skip,
    }
}

/// A directory of root's with `mode`, which the unprivileged user is not allowed into.
fn root_dir(c: &Ctx, name: &str, mode: u32) -> String {
    let p = c.dir(name);
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Whether /etc/fuse.conf lets users ask for allow_other.
fn user_allow_other() -> bool {
    fs::read_to_string("/etc/fuse.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == "user_allow_other")
}

/// `-o lowerdir=L,upperdir=U,workdir=W` with the given values.
fn luw(l: &str, u: &str, w: &str) -> String {
    format!("lowerdir={l},upperdir={u},workdir={w}")
}

/// The standard layers plus `extra` options; the error must mention every needle.
fn with_opt(c: &Ctx, extra: &str, needles: &[&str]) -> Setup {
    let (l, u, w, m) = c.std();
    run(
        &["-o", &format!("{},{extra}", luw(&l, &u, &w)), &m],
        needles,
    )
}

struct Case {
    name: &'static str,
    setup: fn(&Ctx) -> Setup,
}

use cases::cases;

/// Everything about every object below `roots` but atimes.
fn snapshot(roots: &[&Path]) -> Vec<TreeSnapshot> {
    roots
        .iter()
        .map(|r| snapshot_tree_with(r, Fields::LAYER))
        .collect()
}

/// Unmounts anything mounted at or below the given roots when dropped (there should be nothing;
/// this only keeps a broken binary from leaving stale mounts behind).
struct MountGuard(Vec<PathBuf>);

impl MountGuard {
    fn mounted(&self) -> Vec<String> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|mp| self.0.iter().any(|r| Path::new(mp).starts_with(r)))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        for mp in self.mounted().iter().rev() {
            let quiet = |cmd: &mut Command| {
                cmd.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !quiet(Command::new("fusermount3").args(["-u", mp])) {
                quiet(Command::new("umount").args(["-l", mp]));
            }
        }
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` in `cwd` (as `user` if given), output to files (a daemonized
/// grandchild holding a pipe open cannot hang us), killed by PID after [`TIMEOUT`].
fn run_binary(args: &[String], cwd: &Path, user: Option<u32>) -> Result<Output, String> {
    let out_dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut command = match user {
        // setpriv execs the binary: the PID stays the one to kill.
        Some(id) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={id}"))
                .arg(format!("--regid={id}"))
                .arg("--clear-groups")
                .arg(ovlfs_bin());
            c
        }
        None => Command::new(ovlfs_bin()),
    };
    let mut child = command
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", ovlfs_bin().display()))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "did not exit within {TIMEOUT:?}; killed pid {}",
                child.id()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: fs::read_to_string(&out_path).unwrap(),
        stderr: fs::read_to_string(&err_path).unwrap(),
    })
}

/// Runs one case; `Err` describes how it broke the contract.
fn check(case: &Case) -> Result<bool, String> {
    let ctx = Ctx::new();
    let (args, needles, user) = match (case.setup)(&ctx) {
        Setup::Run {
            args,
            needles,
            user,
        } => (args, needles, user),
        Setup::Skip(why) => {
            eprintln!("skipped {:?}: {why}", case.name);
            return Ok(false);
        }
    };
    let guard = MountGuard(ctx.roots().iter().map(|p| p.to_path_buf()).collect());
    let before = snapshot(&ctx.roots());
    let out = run_binary(&args, ctx.root.path(), user)?;
    let mounted = guard.mounted();
    drop(guard);
    let after = snapshot(&ctx.roots());

    let mut problems = Vec::new();
    if !mounted.is_empty() {
        problems.push(format!("mounted something: {mounted:?}"));
    }
    match out.status.code() {
        Some(0) => problems.push("exit status 0".into()),
        Some(_) => {}
        None => problems.push(format!("killed by a signal: {:?}", out.status)),
    }
    let stderr = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    if stderr.is_empty() || stderr.contains('\n') {
        problems.push(format!("stderr is not exactly one line: {:?}", out.stderr));
    }
    for needle in &needles {
        if !stderr.contains(needle.as_str()) {
            problems.push(format!("stderr {stderr:?} does not mention {needle:?}"));
        }
    }
    if !out.stdout.is_empty() {
        problems.push(format!("unexpected stdout: {:?}", out.stdout));
    }
    let changed: Vec<String> = ctx
        .roots()
        .iter()
        .zip(before.iter().zip(&after))
        .flat_map(|(root, (b, a))| {
            diff_trees("before", b, "after", a)
                .into_iter()
                .map(move |d| format!("{}: {d}", root.display()))
        })
        .collect();
    if !changed.is_empty() {
        problems.push(format!("the temp tree changed: {changed:?}"));
    }
    if problems.is_empty() {
        Ok(true)
    } else {
        Err(format!("args {args:?}: {}", problems.join("; ")))
    }
}

#[test]
fn bad_command_lines_fail_cleanly() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        match check(case) {
            Ok(true) => ran += 1,
            Ok(false) => {}
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(ran >= 25, "only {ran} cases ran");
}

/// `--version`: first the line podman shows first under `mount_program` (fuse-overlayfs's
/// shape, `NAME: version X`), then one item per line: the commit (in a checkout), the FUSE
/// protocol, the target, the features.
#[test]
fn version_names_version_commit_protocol_and_features() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--version", "-V"] {
        let out = run_binary(&[flag.to_owned()], dir.path(), None).unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}: {:?}", out.stderr);
        assert_eq!(out.stderr, "", "{flag}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(concat!("ovlfs: version ", env!("CARGO_PKG_VERSION"))),
            "{flag}: {:?}",
            out.stdout
        );
        assert!(out.stdout.ends_with('\n'), "{flag}: {:?}", out.stdout);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("FUSE kernel interface version 7.")
                    && l.contains("(fuser 0.")),
            "{flag}: no FUSE protocol line: {:?}",
            out.stdout
        );
        assert!(
            lines.iter().any(|l| l.starts_with("feature: ")),
            "{flag}: no feature lines: {:?}",
            out.stdout
        );
        // Built in this checkout: the commit it was built from.
        let head = std::process::Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ])
            .output();
        if let Ok(h) = head
            && h.status.success()
            && std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(".git")
                .exists()
        {
            let head = String::from_utf8_lossy(&h.stdout).trim().to_owned();
            let commit = lines.iter().find_map(|l| l.strip_prefix("commit: "));
            assert!(
                commit.is_some_and(|c| c == head || c == format!("{head}-dirty")),
                "{flag}: commit line {commit:?}, HEAD is {head}"
            );
        }
    }
}

#[test]
fn help_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h"] {
        let out = run_binary(&[flag.to_owned()], dir.path(), None).unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}: {:?}", out.stderr);
        for word in [
            "lowerdir=",
            "upperdir=",
            "workdir=",
            "uidmapping=",
            "whiteout=",
        ] {
            assert!(out.stdout.contains(word), "{flag}: help lacks {word}");
        }
        assert_eq!(out.stderr, "", "{flag}");
    }
}
