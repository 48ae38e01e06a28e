//! What the podman and buildah end-to-end tests share: the prerequisites (and when a missing
//! one skips rather than fails), the unprivileged test user with its subordinate ids, running
//! podman or buildah on a private storage (as root, or as that user), a cleanup guard. The
//! images they use and save are in `images`.

use super::images::base_tarball;
use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use std::thread;
use std::time::Instant;

/// Flags of every `podman run`/`create`/`build`: no network (none is configured here), rlimits
/// no higher than ours (a rootful container may not raise them), and only local images.
pub(crate) const RUN_FLAGS: [&str; 4] = [
    "--network=none",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
    "--pull=never",
];

/// The unprivileged user the rootless scenarios run as (created once, kept afterwards).
pub(crate) const TEST_USER: &str = "ovlfs-e2e";
/// How many subordinate ids the test user needs: `--uidmap 0:1:65536` maps container ids
/// 0..65535 onto ids 1..65536 of its user namespace.
const SUBIDS: u32 = 65536;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    Rootful,
    Rootless,
}

/// The test user (it has subordinate uid and gid ranges).
#[derive(Debug)]
pub(crate) struct TestUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The uid and gid of `name` in /etc/passwd.
fn passwd_entry(name: &str) -> Option<(u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0] != name {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

/// Whether `name` has a range of at least `SUBIDS` ids in /etc/subuid or /etc/subgid, and where
/// a new range would start (after every existing one).
fn sub_range(file: &str, name: &str, id: u32) -> (bool, u32) {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut mine = false;
    let mut free = 100_000u32;
    for l in text.lines() {
        let f: Vec<&str> = l.trim().split(':').collect();
        let (Some(start), Some(count)) = (
            f.get(1).and_then(|s| s.parse::<u32>().ok()),
            f.get(2).and_then(|s| s.parse::<u32>().ok()),
        ) else {
            continue;
        };
        free = free.max(start.saturating_add(count));
        mine |= (f[0] == name || f[0] == id.to_string()) && count >= SUBIDS;
    }
    (mine, free)
}

fn group_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/group")
        .is_ok_and(|g| g.lines().any(|l| l.split(':').next() == Some(name)))
}

fn run_admin(prog: &str, args: &[String]) -> Result<(), String> {
    let mut c = Command::new(prog);
    c.args(args);
    let o = run_cmd(&mut c, CHILD).map_err(|e| format!("{prog}: {e}"))?;
    if o.success() {
        Ok(())
    } else {
        Err(format!("{prog} {args:?}: {}", o.stderr.trim()))
    }
}

fn ensure_test_user() -> Result<TestUser, String> {
    if passwd_entry(TEST_USER).is_none() {
        if !have("useradd") {
            return Err("useradd is not installed (cannot create the test user)".into());
        }
        // No home: every scenario gives the user a private HOME under its scratch directory.
        let mut args: Vec<String> = vec![
            "--no-create-home".into(),
            "--shell".into(),
            "/usr/sbin/nologin".into(),
            "--comment".into(),
            "ovlfs container tests".into(),
        ];
        // A group of that name left behind (the user removed by hand, say) is reused.
        if group_exists(TEST_USER) {
            args.extend(["--gid".into(), TEST_USER.into()]);
        }
        args.push(TEST_USER.into());
        let r = run_admin("useradd", &args);
        // Another test process may have created it meanwhile.
        if passwd_entry(TEST_USER).is_none() {
            r?;
        }
    }
    let (uid, gid) =
        passwd_entry(TEST_USER).ok_or_else(|| format!("{TEST_USER} missing in /etc/passwd"))?;
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        let (mine, free) = sub_range(file, TEST_USER, uid);
        if !mine {
            run_admin(
                "usermod",
                &[
                    flag.into(),
                    format!("{free}-{}", free + SUBIDS - 1),
                    TEST_USER.into(),
                ],
            )?;
            if !sub_range(file, TEST_USER, uid).0 {
                return Err(format!("usermod {flag} did not add a range to {file}"));
            }
        }
    }
    Ok(TestUser {
        name: TEST_USER.into(),
        uid,
        gid,
    })
}

/// The test user, created (with subordinate id ranges) on first use.
pub(crate) fn test_user() -> Result<&'static TestUser, String> {
    static USER: OnceLock<Result<TestUser, String>> = OnceLock::new();
    USER.get_or_init(ensure_test_user)
        .as_ref()
        .map_err(|e| e.clone())
}

/// Fails unless other users can reach `p` (every ancestor searchable, `p` itself readable and
/// searchable or executable).
fn reachable_by_others(p: &Path) -> Result<(), String> {
    for a in p.ancestors() {
        let mode = fs::metadata(a)
            .map_err(|e| format!("{}: {e}", a.display()))?
            .permissions()
            .mode();
        let need = if a == p { 0o005 } else { 0o001 };
        if mode & need != need {
            return Err(format!(
                "{} is not accessible to other users (mode {mode:o})",
                a.display()
            ));
        }
    }
    Ok(())
}

/// Whether a scenario can run here: `None` to skip, else `Some` of the test user (`None` when
/// rootful). Missing tools print `SKIPPED` (and fail under CI=true,
/// which installs them); a machine where containers cannot run at all (probed with podman's
/// vfs driver, so without any FUSE mount) is skipped visibly even under CI: no package fixes a
/// kernel without user namespaces, a seccomp policy that forbids them, or a cgroup setup the
/// runtimes refuse.
pub(crate) fn setup(test: &str, mode: Mode, tools: &[&str]) -> Option<Option<&'static TestUser>> {
    if !require_root(test) {
        return None;
    }
    let mut need = vec!["podman", "tar", "busybox"];
    if mode == Mode::Rootless {
        need.extend([
            "setpriv",
            "newuidmap",
            "newgidmap",
            "nsenter",
            "fusermount3",
        ]);
    }
    need.extend(tools);
    for t in need {
        if !have(t) {
            skip_or_fail(test, &format!("{t} is not installed"));
            return None;
        }
    }
    if !Path::new("/dev/fuse").exists() {
        skip_or_fail(test, "/dev/fuse does not exist");
        return None;
    }
    let user = match mode {
        Mode::Rootful => None,
        Mode::Rootless => {
            dev_fuse_usable();
            let reach = reachable_by_others(&ovlfs_bin()).and_then(|()| {
                reachable_by_others(&canon(&std::env::temp_dir()))
                    .map_err(|e| format!("{e}; set TMPDIR to a directory other users can search"))
            });
            match reach.and_then(|()| test_user()) {
                Ok(u) => Some(u),
                Err(e) => {
                    skip_or_fail(test, &e);
                    return None;
                }
            }
        }
    };
    static PROBES: [OnceLock<Result<(), String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let probe = PROBES[mode as usize].get_or_init(|| containers_run_here(mode, user));
    if let Err(why) = probe {
        visible(&format!("SKIPPED: {test}: {why}"));
        return None;
    }
    Some(user)
}

/// Import the base image and run a container with the vfs driver (no mount program involved).
fn containers_run_here(mode: Mode, user: Option<&'static TestUser>) -> Result<(), String> {
    let (_t, root) = scratch(&[]);
    let tarball = base_tarball(&root, user.map_or((1000, 1000), |u| (u.uid, u.gid)))?;
    let pm = Engine::podman(user, &root.join("state"), &["--storage-driver=vfs".into()]);
    let _cleanup = Cleanup::new(&pm, &root);
    let o = pm.run(&["import", &tarball, "localhost/ovlfs-probe:1"], STEP);
    if !o.success() {
        return Err(format!(
            "{mode:?} podman cannot import an image even with the vfs driver: {}",
            o.stderr.trim()
        ));
    }
    let mut args = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-probe:1", "sh", "-c", "echo ok"]);
    let o = pm.run(&args, STEP);
    if !(o.success() && o.stdout.trim() == "ok") {
        return Err(format!(
            "{mode:?} podman cannot run containers here even with the vfs driver: {}",
            o.stderr.trim()
        ));
    }
    Ok(())
}

/// Upper bound of each podman/buildah command.
pub(crate) const STEP: Duration = Duration::from_secs(60);
/// Upper bound of a whole scenario: every command's timeout is cut to what is left of it.
pub(crate) const BUDGET: Duration = Duration::from_secs(100);

/// podman or buildah with a private storage under `state` (root, runroot, tmpdir, HOME,
/// XDG_RUNTIME_DIR), run as root or, rootless, as the test user. Nothing of the host's
/// container storage or configuration is used.
#[derive(Clone)]
pub(crate) struct Engine {
    program: &'static str,
    base: Vec<String>,
    state: PathBuf,
    user: Option<&'static TestUser>,
    deadline: Instant,
}

impl Engine {
    fn new(
        program: &'static str,
        user: Option<&'static TestUser>,
        state: &Path,
        driver_args: &[String],
    ) -> Engine {
        for d in ["root", "run", "tmp", "home", "xdg", "out"] {
            mkdirs(&state.join(d));
        }
        chmod(&state.join("xdg"), 0o700);
        if let Some(u) = user {
            // The scratch directory holding `state` is private to root until now.
            if let Some(parent) = state.parent() {
                chmod(parent, 0o755);
            }
            chown(state, u.uid, u.gid);
            for d in ["root", "run", "tmp", "home", "xdg", "out"] {
                chown(&state.join(d), u.uid, u.gid);
            }
        }
        let p = |d: &str| state.join(d).display().to_string();
        let mut base = vec![
            format!("--root={}", p("root")),
            format!("--runroot={}", p("run")),
        ];
        if program == "podman" {
            base.extend([
                format!("--tmpdir={}", p("tmp")),
                "--cgroup-manager=cgroupfs".into(),
                "--events-backend=file".into(),
            ]);
            if have("runc") {
                // crun refuses hybrid cgroup hierarchies; runc copes with them.
                base.push("--runtime=runc".into());
            }
        }
        base.extend(driver_args.iter().cloned());
        Engine {
            program,
            base,
            state: state.to_path_buf(),
            user,
            deadline: Instant::now() + BUDGET,
        }
    }

    /// podman as root (`user` None) or as the test user (rootless).
    pub(crate) fn podman(
        user: Option<&'static TestUser>,
        state: &Path,
        driver_args: &[String],
    ) -> Engine {
        Engine::new("podman", user, state, driver_args)
    }

    /// buildah as root (`user` None) or as the test user (rootless).
    pub(crate) fn buildah(
        user: Option<&'static TestUser>,
        state: &Path,
        driver_args: &[String],
    ) -> Engine {
        Engine::new("buildah", user, state, driver_args)
    }

    /// A directory the engine may write to (for `save`/`push` output).
    pub(crate) fn out_dir(&self) -> PathBuf {
        self.state.join("out")
    }

    pub(crate) fn storage_root(&self) -> PathBuf {
        self.state.join("root")
    }

    fn command(&self) -> Command {
        let mut c = match self.user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", u.uid))
                    .arg(format!("--regid={}", u.gid))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(self.program);
                c.env("USER", &u.name)
                    .env("LOGNAME", &u.name)
                    .env("XDG_RUNTIME_DIR", self.state.join("xdg"));
                c
            }
            None => Command::new(self.program),
        };
        c.env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("CONTAINERS_CONF")
            .env_remove("CONTAINERS_STORAGE_CONF")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("HOME", self.state.join("home"))
            .env("TMPDIR", self.state.join("tmp"))
            .env("LC_ALL", "C")
            .current_dir(&self.state)
            .args(&self.base);
        if self.user.is_none() {
            c.env_remove("XDG_RUNTIME_DIR");
        }
        c
    }

    /// Run with `args`, bounded by `timeout` and by what is left of the scenario's budget.
    pub(crate) fn run(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let left = self.deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the scenario used up its {BUDGET:?} before {} {args:?}",
            self.program
        );
        self.run_unbudgeted(args, timeout.min(left))
    }

    fn run_unbudgeted(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut c = self.command();
        c.args(args);
        run_cmd(&mut c, timeout).unwrap_or_else(|e| panic!("run {}: {e}", self.program))
    }

    /// `run`, asserting success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str], timeout: Duration) -> String {
        let o = self.run(args, timeout);
        assert!(
            o.success(),
            "{} {args:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.program,
            match o.status {
                Some(s) => s.to_string(),
                None => format!("timed out after {timeout:?}"),
            },
            o.stdout.trim_end(),
            o.stderr.trim_end()
        );
        o.stdout
    }
}

/// On drop: removes every container of the engine's storage, unmounts whatever is still
/// mounted under `root` (in our mount namespace, and in the rootless podman's), ends the mount
/// program daemons whose arguments are under `root` and the rootless pause process, each by PID.
pub(crate) struct Cleanup {
    engine: Engine,
    root: PathBuf,
}

impl Cleanup {
    pub(crate) fn new(engine: &Engine, root: &Path) -> Cleanup {
        Cleanup {
            engine: engine.clone(),
            root: root.to_path_buf(),
        }
    }

    /// The rootless podman's pause processes (they hold its user and mount namespaces).
    fn pause_pids(&self) -> Vec<u32> {
        let Some(u) = self.engine.user else {
            return Vec::new();
        };
        let st = &self.engine.state;
        [
            st.join("tmp/pause.pid"),
            st.join("xdg/libpod/tmp/pause.pid"),
        ]
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok()?.trim().parse::<u32>().ok())
        .filter(|&pid| {
            // The pid file may be stale: only a live process of the test user counts.
            fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.strip_prefix("Uid:")
                        .and_then(|r| r.split_whitespace().next())
                        .is_some_and(|x| x == u.uid.to_string())
                })
            }) && process_alive(pid)
        })
        .collect()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let e = &self.engine;
        let long = Duration::from_secs(60);
        if e.program == "podman" {
            let _ = e.run_unbudgeted(&["rm", "--all", "--force", "--time=0"], long);
        } else {
            let _ = e.run_unbudgeted(&["rm", "--all"], long);
        }
        let pauses = self.pause_pids();
        for m in mountinfo().into_iter().rev() {
            if m.mount_point.starts_with(&self.root) {
                visible(&format!(
                    "cleanup: unmounting leftover {}",
                    m.mount_point.display()
                ));
                quiet("umount", &["-l".as_ref(), m.mount_point.as_os_str()]);
            }
        }
        for &pid in &pauses {
            for m in mountinfo_of(&pid.to_string()).into_iter().rev() {
                if m.mount_point.starts_with(&self.root) {
                    visible(&format!(
                        "cleanup: unmounting leftover {} in the mount namespace of {pid}",
                        m.mount_point.display()
                    ));
                    let target = format!("--target={pid}");
                    quiet(
                        "nsenter",
                        &[
                            target.as_ref(),
                            "--mount".as_ref(),
                            "--".as_ref(),
                            "umount".as_ref(),
                            "-l".as_ref(),
                            m.mount_point.as_os_str(),
                        ],
                    );
                }
            }
        }
        let mut daemons = mount_program_daemons_under(&self.root);
        if !daemons.is_empty() {
            for &p in &daemons {
                kill_pid(p, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while !daemons.is_empty() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
                daemons = mount_program_daemons_under(&self.root);
            }
            for p in daemons {
                visible(&format!(
                    "cleanup: mount program {p} still running; SIGKILL"
                ));
                kill_pid(p, rustix::process::Signal::KILL);
            }
        }
        for pid in pauses {
            kill_pid(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Live processes of the mount program under test with an argument under `root`.
pub(crate) fn mount_program_daemons_under(root: &Path) -> Vec<u32> {
    let bin = fs::canonicalize(ovlfs_bin()).unwrap_or_else(|_| ovlfs_bin());
    let bin = bin.to_string_lossy();
    let prefix = format!("{}/", root.display());
    let me = std::process::id();
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A rebuilt binary shows as "PATH (deleted)".
        let exe_is_bin = fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|x| {
            let x = x.to_string_lossy();
            x.strip_suffix(" (deleted)").unwrap_or(&x) == bin
        });
        if pid != me && exe_is_bin && cmdline(pid).contains(&prefix) && process_alive(pid) {
            v.push(pid);
        }
    }
    v
}

/// The command line (arguments joined by spaces) of a process.
pub(crate) fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}
