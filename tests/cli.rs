//! The command line contract for bad input, through the real binary: each malformed command
//! line or layer setup exits non-zero with exactly one line on stderr that names the problem,
//! and leaves the file system untouched. Nothing here ever mounts: every child runs under a
//! timeout (killed by PID), and a guard unmounts anything that shows up below the test's temp
//! dirs anyway. Some cases run as an unprivileged user (`setpriv`, needs root to start).

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

fn cases() -> Vec<Case> {
    vec![
        // ---- command line shape ----
        Case {
            name: "no arguments at all",
            setup: |_| run(&[], &["mountpoint"]),
        },
        Case {
            name: "options but no mountpoint",
            setup: |c| {
                run(
                    &["-o", &format!("lowerdir={}", c.dir("l"))],
                    &["mountpoint"],
                )
            },
        },
        Case {
            name: "unknown short flag",
            setup: |c| {
                let (l, _, _, m) = c.std();
                run(&["-x", "-o", &format!("lowerdir={l}"), &m], &["-x"])
            },
        },
        Case {
            name: "unknown long flag",
            setup: |c| {
                let (l, _, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l}"), "--frobnicate", &m],
                    &["--frobnicate"],
                )
            },
        },
        Case {
            name: "-o without its argument",
            setup: |c| run(&[&c.dir("m"), "-o"], &["-o"]),
        },
        Case {
            name: "three positionals",
            setup: |c| {
                let (l, u, w, m) = c.std();
                run(
                    &["src", &m, "extra-arg", "-o", &luw(&l, &u, &w)],
                    &["extra-arg"],
                )
            },
        },
        // ---- lowerdir ----
        Case {
            name: "no lowerdir option",
            setup: |c| {
                let (_, u, w, m) = c.std();
                run(
                    &["-o", &format!("upperdir={u},workdir={w}"), &m],
                    &["lowerdir"],
                )
            },
        },
        Case {
            name: "empty lowerdir",
            setup: |c| run(&["-o", "lowerdir=", &c.dir("m")], &["lowerdir"]),
        },
        Case {
            name: "lowerdir with an empty element",
            setup: |c| {
                let (l, m) = (c.dir("l"), c.dir("m"));
                let l2 = c.dir("l2");
                run(
                    &["-o", &format!("lowerdir={l}::{l2}"), &m],
                    &["lowerdir", "::"],
                )
            },
        },
        Case {
            name: "lowerdir with a leading colon",
            setup: |c| {
                let (l, m) = (c.dir("l"), c.dir("m"));
                run(
                    &["-o", &format!("lowerdir=:{l}"), &m],
                    &["lowerdir", "empty"],
                )
            },
        },
        Case {
            name: "lowerdir with a trailing colon",
            setup: |c| {
                let (l, m) = (c.dir("l"), c.dir("m"));
                run(
                    &["-o", &format!("lowerdir={l}:"), &m],
                    &["lowerdir", "empty"],
                )
            },
        },
        Case {
            name: "missing lower",
            setup: |c| {
                let (_, u, w, m) = c.std();
                let gone = c.path("no-such-lower");
                run(&["-o", &luw(&gone, &u, &w), &m], &[&gone, "No such file"])
            },
        },
        Case {
            name: "missing second lower",
            setup: |c| {
                let (l, u, w, m) = c.std();
                let gone = c.path("no-such-lower");
                let lowers = format!("{l}:{gone}");
                run(&["-o", &luw(&lowers, &u, &w), &m], &[&gone])
            },
        },
        Case {
            name: "lower is a file",
            setup: |c| {
                let (_, u, w, m) = c.std();
                let f = c.file("lower-file");
                run(&["-o", &luw(&f, &u, &w), &m], &[&f, "Not a directory"])
            },
        },
        Case {
            name: "lower is a dangling symlink",
            setup: |c| {
                let (_, u, w, m) = c.std();
                let link = c.path("dangling");
                std::os::unix::fs::symlink(c.path("nowhere"), &link).unwrap();
                run(&["-o", &luw(&link, &u, &w), &m], &[&link])
            },
        },
        Case {
            name: "501 lowers",
            setup: |c| {
                let m = c.dir("m");
                let lowers: Vec<String> = (0..501).map(|i| c.dir(&format!("l/{i}"))).collect();
                run(
                    &["-o", &format!("lowerdir={}", lowers.join(":")), &m],
                    &["501"],
                )
            },
        },
        Case {
            name: "data-only lower layers",
            setup: |c| with_opt(c, &format!("datadir+={}", c.dir("data")), &["datadir+"]),
        },
        // ---- upperdir / workdir ----
        Case {
            name: "upperdir without workdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l},upperdir={u}"), &m],
                    &["workdir"],
                )
            },
        },
        Case {
            name: "workdir without upperdir",
            setup: |c| {
                let (l, _, w, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l},workdir={w}"), &m],
                    &["upperdir"],
                )
            },
        },
        Case {
            name: "missing upper",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let gone = c.path("no-such-upper");
                run(&["-o", &luw(&l, &gone, &w), &m], &["upperdir", &gone])
            },
        },
        Case {
            name: "relative missing upper",
            setup: |c| {
                let (l, _, w, m) = c.std();
                run(
                    &["-o", &luw(&l, "rel-upper", &w), &m],
                    &["upperdir", "rel-upper"],
                )
            },
        },
        Case {
            name: "upper is a file",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let f = c.file("upper-file");
                run(&["-o", &luw(&l, &f, &w), &m], &["upperdir", &f])
            },
        },
        Case {
            name: "missing workdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let gone = c.path("no-such-work");
                run(&["-o", &luw(&l, &u, &gone), &m], &["workdir", &gone])
            },
        },
        Case {
            name: "workdir is a file",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let f = c.file("work-file");
                run(&["-o", &luw(&l, &u, &f), &m], &["workdir", &f])
            },
        },
        Case {
            name: "upperdir equals workdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                run(&["-o", &luw(&l, &u, &u), &m], &["upperdir", "workdir", &u])
            },
        },
        Case {
            name: "workdir inside upperdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let w = c.dir("u/work");
                run(&["-o", &luw(&l, &u, &w), &m], &["workdir", "upperdir", &w])
            },
        },
        Case {
            name: "upperdir inside workdir",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let u = c.dir("w/upper");
                run(&["-o", &luw(&l, &u, &w), &m], &["upperdir", "workdir", &u])
            },
        },
        Case {
            name: "workdir on another filesystem",
            setup: |c| {
                let Some(other) = &c.other else {
                    return Setup::Skip("/dev/shm is missing or on the same filesystem");
                };
                let (l, u, _, m) = c.std();
                let w = other.path().join("work");
                fs::create_dir(&w).unwrap();
                let w = w.to_str().unwrap();
                run(&["-o", &luw(&l, &u, w), &m], &["workdir", "filesystem", w])
            },
        },
        Case {
            name: "upperdir is a lower",
            setup: |c| {
                let (l, _, w, m) = c.std();
                run(&["-o", &luw(&l, &l, &w), &m], &["upperdir", "lowerdir", &l])
            },
        },
        Case {
            name: "upperdir inside a lower",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let u = c.dir("l/upper");
                run(&["-o", &luw(&l, &u, &w), &m], &["upperdir", "lowerdir", &u])
            },
        },
        Case {
            name: "lower inside the upperdir",
            setup: |c| {
                let (l, u, w, m) = c.std();
                let inner = c.dir("u/lower");
                let lowers = format!("{l}:{inner}");
                run(
                    &["-o", &luw(&lowers, &u, &w), &m],
                    &["lowerdir", "upperdir", &inner],
                )
            },
        },
        Case {
            name: "upperdir reached through a symlinked lower",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let link = c.path("lowerlink");
                std::os::unix::fs::symlink(&l, &link).unwrap();
                let u = c.dir("l/up");
                run(&["-o", &luw(&link, &u, &w), &m], &["upperdir", "lowerdir"])
            },
        },
        Case {
            name: "workdir inside a lower",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let w = c.dir("l/work");
                run(&["-o", &luw(&l, &u, &w), &m], &["workdir", "lowerdir", &w])
            },
        },
        // ---- mountpoint ----
        Case {
            name: "missing mountpoint",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let gone = c.path("no-such-mnt");
                run(&["-o", &luw(&l, &u, &w), &gone], &["mountpoint", &gone])
            },
        },
        Case {
            name: "mountpoint is a file",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let f = c.file("mnt-file");
                run(&["-o", &luw(&l, &u, &w), &f], &["mountpoint", &f])
            },
        },
        Case {
            name: "mountpoint inside the upperdir",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let m = c.dir("u/mnt");
                run(&["-o", &luw(&l, &u, &w), &m], &["mountpoint", "upperdir"])
            },
        },
        Case {
            name: "mount helper form with a missing mountpoint",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let gone = c.path("no-such-mnt");
                run(
                    &["overlay", &gone, "-o", &luw(&l, &u, &w)],
                    &["mountpoint", &gone],
                )
            },
        },
        // ---- id mappings ----
        Case {
            name: "uidmapping not in triples",
            setup: |c| with_opt(c, "uidmapping=0:1000", &["uidmapping", "0:1000"]),
        },
        Case {
            name: "gidmapping with a non-number",
            setup: |c| with_opt(c, "gidmapping=0:abc:1", &["gidmapping", "abc"]),
        },
        Case {
            name: "uidmapping with a negative id",
            setup: |c| with_opt(c, "uidmapping=:0:-1:1", &["uidmapping", "-1"]),
        },
        Case {
            name: "uidmapping with size 0",
            setup: |c| with_opt(c, "uidmapping=0:1000:0", &["uidmapping", "size 0"]),
        },
        Case {
            name: "gidmapping overflowing u32",
            setup: |c| {
                with_opt(
                    c,
                    "gidmapping=0:4294967000:1000",
                    &["gidmapping", "4294967000"],
                )
            },
        },
        Case {
            name: "uidmapping with an empty element",
            setup: |c| with_opt(c, "uidmapping=0:1000:1::1:2:3", &["uidmapping"]),
        },
        // ---- other option values ----
        Case {
            name: "unknown whiteout mode",
            setup: |c| with_opt(c, "whiteout=aufs", &["whiteout", "aufs"]),
        },
        Case {
            name: "whiteout without a value",
            setup: |c| with_opt(c, "whiteout", &["whiteout"]),
        },
        Case {
            name: "unknown passthrough mode",
            setup: |c| with_opt(c, "passthrough=sometimes", &["passthrough", "sometimes"]),
        },
        Case {
            name: "threads=0",
            setup: |c| with_opt(c, "threads=0", &["threads", "0"]),
        },
        Case {
            name: "threads not a number",
            setup: |c| with_opt(c, "threads=many", &["threads", "many"]),
        },
        Case {
            name: "threaded=2",
            setup: |c| with_opt(c, "threaded=2", &["threaded", "2"]),
        },
        Case {
            name: "fsync=yes",
            setup: |c| with_opt(c, "fsync=yes", &["fsync", "yes"]),
        },
        Case {
            name: "writeback=on",
            setup: |c| with_opt(c, "writeback=on", &["writeback", "on"]),
        },
        Case {
            name: "negative timeout",
            setup: |c| with_opt(c, "timeout=-1", &["timeout", "-1"]),
        },
        Case {
            name: "squash_to_uid not a u32",
            setup: |c| {
                with_opt(
                    c,
                    "squash_to_uid=4294967296",
                    &["squash_to_uid", "4294967296"],
                )
            },
        },
        Case {
            name: "unknown xino value",
            setup: |c| with_opt(c, "xino=sometimes", &["xino", "sometimes"]),
        },
        Case {
            name: "value on a flag option",
            setup: |c| with_opt(c, "squash_to_root=1", &["squash_to_root"]),
        },
        Case {
            name: "bad option in a second -o",
            setup: |c| {
                let (l, u, w, m) = c.std();
                run(
                    &["-o", &luw(&l, &u, &w), "-othreads=-3", &m],
                    &["threads", "-3"],
                )
            },
        },
        Case {
            name: "subtype with a slash",
            setup: |c| with_opt(c, "subtype=a/b", &["subtype", "a/b"]),
        },
        // ---- typos that would otherwise give another mount than asked for ----
        Case {
            name: "misspelt upperdir (would mount read-only)",
            setup: |c| {
                let (l, u, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l},uperdir={u}"), &m],
                    &["\"uperdir=", "did you mean \"upperdir\""],
                )
            },
        },
        Case {
            name: "lowerdirs",
            setup: |c| {
                let (l, _, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdirs={l}"), &m],
                    &["\"lowerdirs=", "did you mean \"lowerdir\""],
                )
            },
        },
        Case {
            name: "spaces after the commas",
            setup: |c| {
                let (l, u, w, m) = c.std();
                run(
                    &[
                        "-o",
                        &format!("lowerdir={l}, upperdir={u}, workdir={w}"),
                        &m,
                    ],
                    &["\" upperdir=", "spaces"],
                )
            },
        },
        Case {
            name: "unescaped comma in upperdir",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let cut = c.dir("x/u");
                let whole = c.dir("x/u,v");
                run(
                    &["-o", &luw(&l, &whole, &w), &m],
                    &["\"v\"", &cut, "\"\\,\""],
                )
            },
        },
        Case {
            name: "near-miss of a flag",
            setup: |c| with_opt(c, "static_nlnk", &["did you mean \"static_nlink\""]),
        },
        // ---- as an unprivileged user ----
        Case {
            name: "unreadable lower (unprivileged)",
            setup: |c| {
                let (_, u, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let secret = root_dir(c, "secret", 0o700);
                run_as_nobody(
                    &["-o", &luw(&secret, &u, &w), &m],
                    &["lowerdir", &secret, "Permission denied"],
                )
            },
        },
        Case {
            name: "lower without search permission (unprivileged)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let listed = root_dir(c, "listed", 0o744);
                let lowers = format!("{l}:{listed}");
                run_as_nobody(
                    &["-o", &luw(&lowers, &u, &w), &m],
                    &["lowerdir", &listed, "Permission denied"],
                )
            },
        },
        Case {
            name: "upper not writable (unprivileged)",
            setup: |c| {
                let (l, _, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let u = root_dir(c, "root-upper", 0o755);
                run_as_nobody(&["-o", &luw(&l, &u, &w), &m], &["upperdir", &u, "write"])
            },
        },
        Case {
            name: "workdir not writable (unprivileged)",
            setup: |c| {
                let (l, u, _, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let w = root_dir(c, "root-work", 0o755);
                run_as_nobody(&["-o", &luw(&l, &u, &w), &m], &["workdir", &w, "write"])
            },
        },
        Case {
            name: "auto_unmount of an owner-only mount (unprivileged)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                run_as_nobody(
                    &["-o", &format!("{},auto_unmount", luw(&l, &u, &w)), &m],
                    &["auto_unmount", "allow_other"],
                )
            },
        },
        Case {
            name: "allow_other refused by fusermount3 (unprivileged, late failure)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if user_allow_other() {
                    return Setup::Skip("/etc/fuse.conf has user_allow_other");
                }
                // A leftover of an earlier mount: only a mount that goes ahead may clear it.
                fs::create_dir(Path::new(&w).join("work")).unwrap();
                fs::write(Path::new(&w).join("work/#ovlfs.1.1"), b"partial").unwrap();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                run_as_nobody(
                    &["-o", &format!("{},allow_other", luw(&l, &u, &w)), &m],
                    &["cannot mount", "allow_other"],
                )
            },
        },
        Case {
            name: "allow_other refused by fusermount3, in the foreground (unprivileged)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if user_allow_other() {
                    return Setup::Skip("/etc/fuse.conf has user_allow_other");
                }
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                run_as_nobody(
                    &["-f", "-o", &format!("{},allow_other", luw(&l, &u, &w)), &m],
                    &["cannot mount", "allow_other"],
                )
            },
        },
    ]
}

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
