//! The containers/storage contract (docs/options.md): the exact argv shapes of a
//! `mount_program` (`[prog, "-o", OPTS, MERGED]`, no `-f`, the storage directory as cwd, 200+
//! lowers given as relative `l/` symlinks, trailing empty fields, `volatile`, a quoted
//! `context=` with commas, mapping options, read-only `lowerdir=A:B`), `--version`, AUFS
//! whiteouts in image layers, the rm -rf/mkdir trap, the mount-helper form
//! (`ovlfs SOURCE MERGED -o OPTS`, mount.fuse3, `mount -t fuse...`), and — where podman is
//! installed and can run containers — a podman end-to-end test with ovlfs as `mount_program`.
//!
//! Submodules (in `tests/containers/`): `argv` (`--version` and the exact argv shapes, daemon
//! mode), `aufs_trap` (AUFS whiteouts in image layers, the rm -rf/mkdir trap), `mount_helper`
//! (the mount-helper forms), `podman` (the podman end-to-end test) and `podman_compat`
//! (podman and buildah scenarios run side by side with fuse-overlayfs: keep-id, uidmap,
//! force_mask, sparse writes, commit whiteouts); `engine` holds what the podman and buildah
//! tests share; the other shared helpers (`Mounted`, `Launch`, `Storage`, ...) are here.

mod argv;
mod aufs_trap;
#[path = "../common/mod.rs"]
mod common;
mod engine;
mod images;
mod mount_helper;
mod podman;
mod podman_compat;

use common::*;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

pub(crate) const BODY_SECS: u64 = 120;
pub(crate) const CHILD: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

pub(crate) fn quiet(prog: &str, args: &[&OsStr]) -> bool {
    let mut c = Command::new(prog);
    c.args(args);
    run_cmd(&mut c, MOUNT_TIMEOUT).is_ok_and(|o| o.success())
}

/// A mount made by a command we ran (the daemon is not our child). Dropping it unmounts
/// (fusermount3 -u, then umount -l) and ends, by PID, any daemon still serving the mountpoint.
pub(crate) struct Mounted {
    mnt: PathBuf,
}

impl Mounted {
    pub(crate) fn path(&self) -> &Path {
        &self.mnt
    }

    /// `fusermount3 -u` (or `umount` for mount(8) mounts); asserts the daemon exits by itself.
    pub(crate) fn unmount_with(&self, prog: &str, args: &[&str]) {
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

    pub(crate) fn fusermount_u(&self) {
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

pub(crate) struct Launch {
    status: Option<ExitStatus>,
    pub(crate) mounted_at_exit: bool,
    pub(crate) stderr: String,
    mount: Mounted,
}

impl Launch {
    /// The launcher's exit code (`None`: killed, or still running at the timeout).
    pub(crate) fn status_code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Asserts exit 0 with the mount live at that moment.
    pub(crate) fn ok(self, what: &str) -> Mounted {
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
pub(crate) fn launch(
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
pub(crate) fn storage_launch(cwd: &Path, opts: &str, mnt: &Path) -> Launch {
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
pub(crate) struct Storage {
    _t: tempfile::TempDir,
    root: PathBuf,
    /// Relative `l/SHORT` names, topmost first.
    links: Vec<String>,
}

impl Storage {
    pub(crate) fn new(layers: usize, fill: impl Fn(usize, &Path)) -> Storage {
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

    pub(crate) fn home(&self) -> PathBuf {
        self.root.join("overlay")
    }

    pub(crate) fn p(&self, rel: &str) -> PathBuf {
        self.home().join(rel)
    }

    pub(crate) fn lowerdir(&self) -> String {
        format!("lowerdir={}", self.links.join(":"))
    }

    pub(crate) fn upper_work(&self) -> String {
        format!(
            "upperdir={},workdir={}",
            self.p("ctr/diff").display(),
            self.p("ctr/work").display()
        )
    }

    pub(crate) fn merged(&self) -> PathBuf {
        self.p("ctr/merged")
    }
}
