//! The supervisor (docs/design.md, "The supervisor"): a daemonized mount is served by a worker
//! process that its supervisor replaces when it dies. While a reader/writer workload runs
//! (several threads: create, write, read-verify, rename, unlink, readdir, files held open and
//! written through one fd across every kill), the worker is SIGKILLed at random moments: no
//! call may fail, no byte may change, the final tree must be what the same operations give
//! (each thread's model), through the mount and through a kernel overlay of the same layers
//! afterwards, and the supervisor's fd count and RSS must not grow with restarts.
//!
//! CI (default): 15 kills, 4 threads. Long: `OVLFS_SUPERVISOR_KILLS=100 cargo test --release
//! --test supervisor -- --nocapture` (also `OVLFS_SUPERVISOR_THREADS`, `OVLFS_SUPERVISOR_SEED`,
//! `OVLFS_SUPERVISOR_OPTS`).

#[path = "../common/mod.rs"]
mod common;
mod workload;

use common::rng::{Rng, env_u64};
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use workload::{Workload, compare, populate_lower};

/// The worker serving a supervisor: its child (scanned in /proc: the worker's command line
/// does not name the mount point).
fn worker_of(supervisor: u32) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let worker = cmdline.split(|b| *b == 0).any(|a| a == b"--ovlfs-worker");
        (ppid == supervisor && worker).then_some(pid)
    })
}

/// A worker other than `old`, once there is one (bounded).
fn next_worker(supervisor: u32, old: u32, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(w) = worker_of(supervisor).filter(|w| *w != old) {
            return Some(w);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Blocks until a worker answers a lookup the kernel cannot answer from its cache.
fn wait_served(mnt: &Path, probe: u64) {
    let p = mnt.join(format!(".probe-{probe}"));
    match fs::symlink_metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => panic!("probe {}: {other:?}", p.display()),
    }
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |rd| rd.count())
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn oom_score_adj(pid: u32) -> i32 {
    fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

struct Layers {
    _t: tempfile::TempDir,
    root: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    mnt: PathBuf,
}

fn layers(threads: usize) -> Layers {
    dev_fuse_usable();
    let (t, root) = scratch(&["lower", "upper", "work", "m", "k"]);
    populate_lower(&root.join("lower"), threads);
    Layers {
        lower: root.join("lower"),
        upper: root.join("upper"),
        mnt: root.join("m"),
        root,
        _t: t,
    }
}

/// A daemonized mount (with its supervisor); `OVLFS_SUPERVISOR_OPTS` adds `-o` options
/// (e.g. `passthrough=off` for the writeback-cache data path).
fn mount(l: &Layers) -> OvlfsMount {
    mount_with(l, None)
}

fn mount_with(l: &Layers, opts: Option<&str>) -> OvlfsMount {
    let mut o = Ovlfs::new([&l.lower]).upper(&l.upper, l.root.join("work"));
    if let Ok(extra) = std::env::var("OVLFS_SUPERVISOR_OPTS") {
        o = o.opt(&extra);
    }
    if let Some(opts) = opts {
        o = o.opt(opts);
    }
    o.mount_daemon(&l.mnt)
}

/// After the ovlfs mount is gone: the kernel's overlayfs reads the same tree from the layers
/// (upper as the top lower: nothing is written).
fn check_with_kernel(l: &Layers, models: &[workload::Model]) {
    if !kernel_overlay_available() {
        visible("no kernel overlay: the on-disk check is skipped");
        return;
    }
    let k = KernelOverlay::mount(&[&l.upper, &l.lower], None, &[], &l.root.join("k"));
    let diffs = compare(k.path(), models);
    assert!(
        diffs.is_empty(),
        "kernel overlay view differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn killed_workers_are_replaced_without_errors() {
    kill_workers_under_load(None, env_u64("OVLFS_SUPERVISOR_KILLS", 15));
}

/// The same through the kernel's writeback cache (the data path of unprivileged mounts):
/// WRITEs of cached pages are in flight at every kill.
#[test]
fn killed_workers_are_replaced_without_errors_with_the_writeback_cache() {
    kill_workers_under_load(
        Some("passthrough=off"),
        env_u64("OVLFS_SUPERVISOR_KILLS", 10),
    );
}

fn kill_workers_under_load(opts: Option<&str>, kills: u64) {
    let threads = env_u64("OVLFS_SUPERVISOR_THREADS", 4) as usize;
    let seed = env_u64("OVLFS_SUPERVISOR_SEED", 7);
    let l = layers(threads);
    let m = mount_with(&l, opts);
    let supervisor = m.pid().expect("the supervisor's pid");
    let mnt = l.mnt.clone();
    let models = with_watchdog(60 + kills * 2, &l.mnt, move || {
        let mut worker = worker_of(supervisor).expect("a worker");
        assert!(
            oom_score_adj(worker) > oom_score_adj(supervisor),
            "the OOM killer must prefer the worker"
        );
        let work = Workload::start(&mnt, threads, seed);
        thread::sleep(Duration::from_millis(300));
        let (fds_before, rss_before) = (fd_count(supervisor), rss_kib(supervisor));
        let mut rng = Rng::new(seed);
        let started = Instant::now();
        let mut restart_ms = Vec::new();
        for i in 0..kills {
            thread::sleep(Duration::from_millis(30 + rng.below(220)));
            kill_pid(worker, rustix::process::Signal::KILL);
            let killed = Instant::now();
            worker = next_worker(supervisor, worker, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("no worker after kill {i}"));
            wait_served(&mnt, i);
            restart_ms.push(killed.elapsed().as_secs_f64() * 1000.0);
        }
        thread::sleep(Duration::from_millis(300));
        let (fds_after, rss_after) = (fd_count(supervisor), rss_kib(supervisor));
        let errors = work.error_list();
        let ops = work.ops.load(std::sync::atomic::Ordering::Relaxed);
        let models = work.finish();
        restart_ms.sort_by(f64::total_cmp);
        eprintln!(
            "{kills} kills in {:.1} s, {ops} operations; restart to first answer: median \
             {:.1} ms, max {:.1} ms; supervisor fds {fds_before} -> {fds_after}, RSS \
             {rss_before} -> {rss_after} KiB",
            started.elapsed().as_secs_f64(),
            restart_ms.get(restart_ms.len() / 2).copied().unwrap_or(0.0),
            restart_ms.last().copied().unwrap_or(0.0),
        );
        assert!(
            errors.is_empty(),
            "callers saw errors:\n{}",
            errors.join("\n")
        );
        assert_eq!(fds_after, fds_before, "the supervisor's fd count grew");
        assert!(
            rss_after <= rss_before + 1024,
            "the supervisor's RSS grew from {rss_before} to {rss_after} KiB"
        );
        let diffs = compare(&mnt, &models);
        assert!(
            diffs.is_empty(),
            "the merged tree differs:\n{}",
            diffs.join("\n")
        );
        models
    });
    m.assert_no_panic_logged("after the kills");
    drop(m);
    check_with_kernel(&l, &models);
}

#[test]
fn upgrade_under_load_changes_the_binary_without_errors() {
    let l = layers(3);
    let m = mount(&l);
    let supervisor = m.pid().expect("the supervisor's pid");
    let new_bin = l.root.join("ovlfs-new");
    fs::copy(ovlfs_bin(), &new_bin).unwrap();
    fs::set_permissions(&new_bin, fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = l.mnt.clone();
    let models = with_watchdog(60, &l.mnt, move || {
        let work = Workload::start(&mnt, 3, 11);
        let mut worker = worker_of(supervisor).expect("a worker");
        for (round, bin) in [new_bin.clone(), ovlfs_bin(), new_bin].iter().enumerate() {
            thread::sleep(Duration::from_millis(300));
            let out = run_cmd(
                Command::new(bin).arg("--upgrade").arg(&mnt),
                Duration::from_secs(20),
            )
            .unwrap();
            assert!(out.success(), "--upgrade failed: {}", out.stderr);
            worker = next_worker(supervisor, worker, Duration::from_secs(5))
                .expect("a new worker after the upgrade");
            let exe = fs::read_link(format!("/proc/{worker}/exe")).unwrap();
            assert_eq!(&exe, &fs::canonicalize(bin).unwrap(), "round {round}");
            wait_served(&mnt, round as u64);
        }
        thread::sleep(Duration::from_millis(300));
        let errors = work.error_list();
        let models = work.finish();
        assert!(
            errors.is_empty(),
            "callers saw errors:\n{}",
            errors.join("\n")
        );
        let diffs = compare(&mnt, &models);
        assert!(
            diffs.is_empty(),
            "the merged tree differs:\n{}",
            diffs.join("\n")
        );
        models
    });
    drop(m);
    check_with_kernel(&l, &models);
}

/// Kills the worker serving `supervisor` and waits until the next one serves (`probe`: a
/// name the kernel cannot answer from its cache).
fn kill_worker(supervisor: u32, mnt: &Path, probe: u64) {
    let worker = worker_of(supervisor).expect("a worker");
    kill_pid(worker, rustix::process::Signal::KILL);
    next_worker(supervisor, worker, Duration::from_secs(10)).expect("a worker after the kill");
    wait_served(mnt, probe);
}

/// A lower file held open (as root: passthrough to the lower file) is renamed, which copies
/// it up: its node is superseded and later opens get a successor node with the same inode
/// number (docs/design.md, "Copy-up with passthrough opens"). Renames of the successor, and
/// renames made by a worker that has not resolved the nodes yet, must keep both nodes
/// findable: after each kill the held fd reads on, and the file opens and reads by its name.
#[test]
fn a_held_lower_file_renamed_and_copied_up_survives_restarts() {
    let l = layers(1);
    let m = mount(&l);
    let supervisor = m.pid().expect("the supervisor's pid");
    let mnt = l.mnt.clone();
    with_watchdog(60, &l.mnt, move || {
        let dir = mnt.join("w0");
        let want = workload::lower_content(0, 0);
        let read_held = |f: &fs::File, when: &str| {
            let mut back = vec![0u8; want.len()];
            std::os::unix::fs::FileExt::read_exact_at(f, &mut back, 0)
                .unwrap_or_else(|e| panic!("read of the held fd {when}: {e}"));
            assert!(back == want, "the held fd reads other data {when}");
        };
        let read_name = |name: &str, when: &str| {
            let data =
                fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name} {when}: {e}"));
            assert!(data == want, "{name} holds other data {when}");
        };
        let held = fs::File::open(dir.join("l0")).unwrap();
        // The copy-up supersedes the node; the read opens the successor.
        fs::rename(dir.join("l0"), dir.join("a")).unwrap();
        read_name("a", "after the copy-up");
        // Renames the successor only: the superseded node must follow.
        fs::rename(dir.join("a"), dir.join("b")).unwrap();
        let held_b = fs::File::open(dir.join("b")).unwrap();
        kill_worker(supervisor, &mnt, 0);
        read_held(&held, "after the first kill");
        read_held(&held_b, "(opened after the copy-up) after the first kill");
        read_name("b", "after the first kill");
        // Renamed by a worker that may not have resolved the nodes yet.
        kill_worker(supervisor, &mnt, 1);
        fs::rename(dir.join("b"), dir.join("c")).unwrap();
        read_name("c", "after the second kill");
        kill_worker(supervisor, &mnt, 2);
        read_held(&held, "after the third kill");
        read_name("c", "after the third kill");
        drop(held_b);
        kill_worker(supervisor, &mnt, 3);
        read_name("c", "after the fourth kill");
        read_held(&held, "after the fourth kill");
        drop(held);
        kill_worker(supervisor, &mnt, 4);
        fs::rename(dir.join("c"), dir.join("d")).unwrap();
        read_name("d", "at last");
        let md = fs::metadata(dir.join("d")).unwrap();
        assert_eq!(md.len(), want.len() as u64);
        // A held lower file copied up, its successor held too, then its name deleted: both
        // node ids are kept (orphans) and served by the next worker.
        let held_l1 = fs::File::open(dir.join("l1")).unwrap();
        fs::rename(dir.join("l1"), dir.join("e")).unwrap();
        let held_e = fs::File::open(dir.join("e")).unwrap();
        fs::remove_file(dir.join("e")).unwrap();
        kill_worker(supervisor, &mnt, 5);
        let want_l1 = workload::lower_content(0, 1);
        for (f, what) in [
            (&held_l1, "the superseded node"),
            (&held_e, "its successor"),
        ] {
            let mut back = vec![0u8; want_l1.len()];
            std::os::unix::fs::FileExt::read_exact_at(f, &mut back, 0)
                .unwrap_or_else(|e| panic!("read through {what} after the delete: {e}"));
            assert!(back == want_l1, "{what} reads other data");
            let md = f
                .metadata()
                .unwrap_or_else(|e| panic!("fstat of {what} after the delete: {e}"));
            assert_eq!(md.len(), want_l1.len() as u64, "{what}");
        }
        assert!(!dir.join("e").exists());
    });
    m.assert_no_panic_logged("after the kills");
}

/// The same with a lower hard link: held open through one name, copied up through the other
/// (every name then shows the upper copy), then renamed, read by both names and killed, and
/// renamed again by each new worker.
#[test]
fn a_held_lower_hard_link_copied_up_survives_restarts() {
    let l = layers(1);
    fs::hard_link(l.lower.join("w0/l2"), l.lower.join("w0/link")).unwrap();
    let m = mount(&l);
    let supervisor = m.pid().expect("the supervisor's pid");
    let mnt = l.mnt.clone();
    with_watchdog(60, &l.mnt, move || {
        let dir = mnt.join("w0");
        let want = workload::lower_content(0, 2);
        let read_name = |name: &str, when: &str| {
            let data =
                fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name} {when}: {e}"));
            assert!(data == want, "{name} holds other data {when}");
        };
        let held = fs::File::open(dir.join("l2")).unwrap();
        fs::rename(dir.join("link"), dir.join("moved")).unwrap();
        read_name("l2", "after the copy-up");
        read_name("moved", "after the copy-up");
        // Renames the successor the reads made; the superseded node must follow.
        fs::rename(dir.join("moved"), dir.join("m")).unwrap();
        let mut name = "m".to_string();
        for i in 0..3 {
            kill_worker(supervisor, &mnt, i);
            let mut back = vec![0u8; want.len()];
            std::os::unix::fs::FileExt::read_exact_at(&held, &mut back, 0)
                .unwrap_or_else(|e| panic!("read of the held fd after kill {i}: {e}"));
            assert!(back == want, "the held fd reads other data after kill {i}");
            read_name("l2", &format!("after kill {i}"));
            read_name(&name, &format!("after kill {i}"));
            let next = format!("moved{i}");
            fs::rename(dir.join(&name), dir.join(&next)).unwrap();
            name = next;
        }
        kill_worker(supervisor, &mnt, 3);
        read_name(&name, "at last");
        let (a, b) = (
            fs::metadata(dir.join("l2")).unwrap(),
            fs::metadata(dir.join(&name)).unwrap(),
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "still one file");
    });
    m.assert_no_panic_logged("after the kills");
}

/// Without its supervisor the mount is gone as without one: the worker dies with it, users
/// get ENOTCONN, and the dead mount can be unmounted. An fd already open reads on only where
/// the kernel reads its backing file itself (passthrough, as root): such reads never reach
/// the daemon (docs/design.md, "The supervisor").
#[test]
fn supervisor_death_ends_the_mount() {
    let l = layers(1);
    let mut m = mount(&l);
    let supervisor = m.pid().expect("the supervisor's pid");
    let worker = worker_of(supervisor).expect("a worker");
    let held = fs::File::open(l.mnt.join("w0/l1")).unwrap();
    let mnt = l.mnt.clone();
    with_watchdog(30, &l.mnt, move || {
        kill_pid(supervisor, rustix::process::Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{worker}")).exists() {
            assert!(
                Instant::now() < deadline,
                "the worker outlived its supervisor"
            );
            thread::sleep(Duration::from_millis(10));
        }
        let mut buf = [0u8; 16];
        match std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0) {
            Ok(n) => {
                assert!(is_root(), "a read through a cached-mode fd must fail");
                let want = workload::lower_content(0, 1);
                assert_eq!(&buf[..n], &want[..n.min(want.len())], "a passthrough read");
            }
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOTCONN),
                "a read through an open file"
            ),
        }
        let reopen = fs::File::open(mnt.join("w0/l1"));
        assert_eq!(
            reopen.map_err(|e| e.raw_os_error()).map(|_| ()),
            Err(Some(libc::ENOTCONN)),
            "a new open of the held file"
        );
        let lookup = fs::symlink_metadata(mnt.join("not-cached"));
        assert_eq!(
            lookup.map_err(|e| e.raw_os_error()).map(|_| ()),
            Err(Some(libc::ENOTCONN)),
            "a lookup"
        );
    });
    let _ = m.wait_exit(Duration::from_secs(5));
    assert!(m.fusermount_u(), "the dead mount must be unmountable");
    assert!(!m.is_mounted());
}

/// An upgrade to a binary that cannot serve leaves the mount on the running binary: the
/// request fails with the new worker's error and a worker of the old binary serves again.
#[test]
fn failed_upgrade_keeps_the_running_binary() {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let l = layers(1);
    let m = mount(&l);
    let supervisor = m.pid().expect("the supervisor's pid");
    let mnt = l.mnt.clone();
    with_watchdog(30, &l.mnt, move || {
        let worker = worker_of(supervisor).expect("a worker");
        let dev = fs::metadata(&mnt).unwrap().dev();
        let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        let addr =
            SocketAddr::from_abstract_name(format!("ovlfs-supervisor/{major}:{minor}")).unwrap();
        // What `ovlfs --upgrade` sends, naming a binary that exits at once.
        let mut s = UnixStream::connect_addr(&addr).expect("the supervisor's socket");
        s.write_all(b"/bin/false").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.contains("stays on the running binary"),
            "reply: {reply:?}"
        );
        let now = next_worker(supervisor, worker, Duration::from_secs(5)).expect("a worker");
        assert_eq!(
            fs::read_link(format!("/proc/{now}/exe")).unwrap(),
            fs::canonicalize(ovlfs_bin()).unwrap()
        );
        assert_eq!(
            fs::read(mnt.join("w0/l0")).unwrap(),
            workload::lower_content(0, 0)
        );
    });
}

/// As on a kernel without `FUSE_NOTIFY_RESEND` (`OVLFS_NO_RESEND=1`): the requests a killed
/// worker had read fail once, with ECONNABORTED, and none hangs; the next worker serves the
/// rest.
#[test]
fn without_resend_requests_in_flight_fail_once() {
    let l = layers(2);
    let m = Ovlfs::new([&l.lower])
        .upper(&l.upper, l.root.join("work"))
        .wrapped(["env", "OVLFS_NO_RESEND=1"])
        .mount_daemon(&l.mnt);
    let supervisor = m.pid().expect("the supervisor's pid");
    let mnt = l.mnt.clone();
    with_watchdog(60, &l.mnt, move || {
        let work = Workload::start(&mnt, 2, 5);
        let mut worker = worker_of(supervisor).expect("a worker");
        let mut rng = Rng::new(5);
        for i in 0..5 {
            thread::sleep(Duration::from_millis(50 + rng.below(150)));
            kill_pid(worker, rustix::process::Signal::KILL);
            worker = next_worker(supervisor, worker, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("no worker after kill {i}"));
            wait_served(&mnt, i);
        }
        let errors = work.error_list();
        work.finish();
        eprintln!("{} calls failed over 5 kills: {errors:#?}", errors.len());
        for e in &errors {
            assert!(
                e.contains("os error 103") || e.contains("expected"),
                "not a connection abort (or its consequence): {e}"
            );
        }
        let names = fs::read_dir(mnt.join("w0")).expect("the mount still serves");
        assert!(names.count() > 0);
    });
}

/// An open file whose name was deleted survives worker restarts (its object is kept in the
/// workdir's orphans while the kernel holds it), and the kept link goes once it is closed.
#[test]
fn unlinked_open_file_survives_restarts() {
    use std::os::unix::fs::FileExt;
    let l = layers(1);
    let m = mount(&l);
    let supervisor = m.pid().expect("the supervisor's pid");
    let (mnt, orphans) = (l.mnt.clone(), l.root.join("work/work/#ovlfs.orphans"));
    with_watchdog(30, &l.mnt, move || {
        let path = mnt.join("w0/doomed");
        fs::write(&path, b"hello world").unwrap();
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        fs::remove_file(&path).unwrap();
        let mut worker = worker_of(supervisor).expect("a worker");
        for (i, (at, data)) in [(0u64, &b"HELLO"[..]), (6, b"WORLD")].iter().enumerate() {
            kill_pid(worker, rustix::process::Signal::KILL);
            worker = next_worker(supervisor, worker, Duration::from_secs(10)).expect("a worker");
            wait_served(&mnt, i as u64);
            f.write_all_at(data, *at).expect("write after the restart");
        }
        let mut back = [0u8; 11];
        f.read_exact_at(&mut back, 0)
            .expect("read after the restarts");
        assert_eq!(&back, b"HELLO WORLD");
        assert!(!path.exists());
        drop(f);
        // The kernel forgets the node soon after the last close; then the link goes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_dir(&orphans).map_or(0, |d| d.count()) > 0 {
            assert!(
                Instant::now() < deadline,
                "the orphan link stayed after the close"
            );
            thread::sleep(Duration::from_millis(20));
        }
    });
}
