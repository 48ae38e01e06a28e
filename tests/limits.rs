//! Resource limits: memory, and the open-file limit (docs/design.md, "Open-file limit"):
//!
//! - `memory_released_after_kernel_forgets_a_large_walk`: walk a generated lower tree (stat of
//!   every entry) through the mount, report the daemon's peak RSS (VmHWM) and descriptors, let
//!   the kernel forget the inodes (`echo 2 > /proc/sys/vm/drop_caches`) and require the
//!   daemon's RSS below 200 MiB and its per-node descriptors released; inode numbers must be
//!   the same after the forget.
//! - `fd_limit_many_upper_objects_within_a_small_limit`: under `RLIMIT_NOFILE` 512, create
//!   ten times that many upper files and directories that all stay in the kernel's cache;
//!   nothing may fail with EMFILE (the daemon has the kernel prune unused entries), and open
//!   files, inode numbers and contents survive the pruning.
//!
//! CI: `cargo test --test limits` (100,000 entries).
//! Long: `OVLFS_MEM_ENTRIES=1000000 cargo test --release --test limits -- --nocapture`

mod common;

use common::rng::env_u64;

use common::*;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Memory: forget after a walk of a large tree
// ---------------------------------------------------------------------------------------------

/// A tmpfs (unlimited inodes) unmounted on drop.
struct TmpfsGuard(PathBuf);

impl TmpfsGuard {
    fn mount(path: &Path) -> TmpfsGuard {
        let mut c = std::process::Command::new("mount");
        c.args(["-t", "tmpfs", "-o", "size=256m,nr_inodes=0", "tmpfs"])
            .arg(path);
        let o = run_cmd(&mut c, MOUNT_TIMEOUT).expect("run mount");
        let g = TmpfsGuard(path.to_path_buf());
        assert!(
            o.success() && find_mount(path).is_some(),
            "mount tmpfs: {}",
            o.stderr
        );
        g
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        if find_mount(&self.0).is_some() {
            let mut c = std::process::Command::new("umount");
            c.arg(&self.0);
            if !run_cmd_quiesced(&mut c, MOUNT_TIMEOUT).is_ok_and(|o| o.success()) {
                let mut c = std::process::Command::new("umount");
                c.arg("-l").arg(&self.0);
                let _ = run_cmd(&mut c, MOUNT_TIMEOUT);
            }
        }
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

#[test]
fn memory_released_after_kernel_forgets_a_large_walk() {
    const TEST: &str = "memory_released_after_kernel_forgets_a_large_walk";
    if !require_root(TEST) {
        return;
    }
    let entries = env_u64("OVLFS_MEM_ENTRIES", 100_000) as usize;
    let per_dir = 1000usize;
    let (_t, s) = scratch(&["fs", "mnt"]);
    // The layers on a tmpfs: generating the tree on a busy disk takes longer than the test.
    let _tmpfs = TmpfsGuard::mount(&s.join("fs"));
    let lower = s.join("fs/lower");
    mkdirs(&lower);
    mkdirs(&s.join("fs/upper"));
    mkdirs(&s.join("fs/work"));
    let t0 = Instant::now();
    let dirs = entries.div_ceil(per_dir + 1);
    let mut made = 0;
    'outer: for d in 0..dirs {
        let dir = lower.join(format!("d{d:05}"));
        fs::create_dir(&dir).expect("mkdir");
        made += 1;
        for f in 0..per_dir {
            if made >= entries {
                break 'outer;
            }
            fs::File::create(dir.join(format!("f{f:04}"))).expect("create");
            made += 1;
        }
    }
    let gen_time = t0.elapsed();
    let mnt = s.join("mnt");
    let m = Ovlfs::new([&lower])
        .upper(s.join("fs/upper"), s.join("fs/work"))
        .mount(&mnt);
    let pid = m.pid().expect("pid");
    let base_rss = proc_status_kib(pid, "VmRSS:");
    let base_fds = fd_count(pid);
    let mnt2 = mnt.clone();
    let walk = with_watchdog(900, &mnt, move || -> Result<_, String> {
        let t = Instant::now();
        let mut n = 0usize;
        let mut samples = Vec::new();
        let mut stack = vec![mnt2.clone()];
        while let Some(d) = stack.pop() {
            let rd = fs::read_dir(&d)
                .map_err(|e| format!("readdir {} after {n} entries: {e}", d.display()))?;
            for e in rd {
                let p = e
                    .map_err(|e| format!("readdir {} after {n} entries: {e}", d.display()))?
                    .path();
                let md = fs::symlink_metadata(&p)
                    .map_err(|e| format!("lstat {} after {n} entries: {e}", p.display()))?;
                n += 1;
                if n.is_multiple_of(997) {
                    samples.push((p.clone(), md.ino()));
                }
                if md.is_dir() {
                    stack.push(p);
                }
            }
        }
        Ok((n, samples, t.elapsed()))
    });
    let (walked, samples, walk_time) = walk.unwrap_or_else(|e| {
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        let nofile = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or("?");
        panic!(
            "walking {made} entries through the mount failed: {e}\n  the daemon holds {} \
             descriptors; its limit: {nofile}",
            fd_count(pid)
        )
    });
    assert_eq!(
        walked, made,
        "the walk saw {walked} entries, the lower has {made}"
    );
    let peak = proc_status_kib(pid, "VmHWM:");
    let rss_walk = proc_status_kib(pid, "VmRSS:");
    let fds_walk = fd_count(pid);
    // Let the kernel forget: drop dentries and inodes, repeat while the daemon catches up.
    let t1 = Instant::now();
    let limit_kib = 200 * 1024;
    let fd_limit = (made / 10).max(1000);
    let (mut rss_after, mut fds_after);
    loop {
        fs::write("/proc/sys/vm/drop_caches", b"2").expect("drop_caches");
        thread::sleep(Duration::from_millis(500));
        rss_after = proc_status_kib(pid, "VmRSS:");
        fds_after = fd_count(pid);
        if (rss_after < limit_kib && fds_after < fd_limit) || t1.elapsed() > Duration::from_secs(30)
        {
            break;
        }
    }
    visible(&format!(
        "{TEST}: {made} entries (generated in {gen_time:?}), walked in {walk_time:?}; daemon RSS \
         {base_rss} KiB at start, {rss_walk} KiB after the walk, peak (VmHWM) {peak} KiB; \
         descriptors {base_fds} -> {fds_walk}; after drop_caches ({:?}): RSS {rss_after} KiB, \
         {fds_after} descriptors",
        t1.elapsed()
    ));
    assert!(process_alive(pid), "the daemon died");
    assert!(
        rss_after < limit_kib,
        "daemon RSS {rss_after} KiB after the kernel forgot the walked inodes (limit 200 MiB; \
         peak {peak} KiB)"
    );
    assert!(
        fds_after < fd_limit,
        "the daemon still holds {fds_after} descriptors after the kernel forgot the walked \
         inodes ({fds_walk} after the walk): forgotten nodes are not freed"
    );
    // Nodes come back after the forget with the same inode numbers.
    for (p, ino) in &samples {
        let md = fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("lstat {} after forget: {e}", p.display()));
        assert_eq!(
            md.ino(),
            *ino,
            "{}: st_ino changed across a forget",
            p.display()
        );
    }
    drop(m);
}

/// The daemon's soft and hard `RLIMIT_NOFILE`.
fn fd_limits(pid: u32) -> (u64, u64) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
    )
}

/// Every directory and upper object holds an fd while the kernel keeps its inode, and the
/// kernel keeps inodes until memory runs short. Under an open-file limit of 512, creating ten
/// times that many upper files and directories (all staying in the kernel's cache) must not
/// fail: the daemon has the kernel prune unused entries when its fds near the limit. Open
/// files, inode numbers and contents must survive the pruning.
#[test]
fn fd_limit_many_upper_objects_within_a_small_limit() {
    const TEST: &str = "fd_limit_many_upper_objects_within_a_small_limit";
    if !require_root(TEST) {
        return;
    }
    const LIMIT: u64 = 512;
    let (_t, s) = scratch(&["lower", "upper", "work", "mnt"]);
    let lower = s.join("lower");
    for d in 0..20 {
        write_file(&lower.join(format!("l{d}/base")), format!("lower {d}"));
    }
    let lower_before = snapshot_tree(&lower);
    let mnt = s.join("mnt");
    // Without CAP_SYS_RESOURCE the daemon cannot lift the hard limit.
    let m = Ovlfs::new([&lower])
        .upper(s.join("upper"), s.join("work"))
        .wrapped([
            "prlimit".to_string(),
            format!("--nofile={LIMIT}:{LIMIT}"),
            "setpriv".into(),
            "--inh-caps=-sys_resource".into(),
            "--bounding-set=-sys_resource".into(),
        ])
        .mount(&mnt);
    let pid = m.pid().expect("pid");
    let (soft, hard) = fd_limits(pid);
    assert_eq!(
        (soft, hard),
        (LIMIT, LIMIT),
        "the daemon's open-file limit is not the test's"
    );
    let mnt2 = mnt.clone();
    let result = with_watchdog(300, &mnt, move || -> Result<(usize, usize), String> {
        let err = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
        // Files kept open through the whole run: pruning must leave them working.
        let mut kept = Vec::new();
        let mut inos = Vec::new();
        let mut max_fds = 0;
        for i in 0..5000usize {
            // New upper directories, and names in copied-up lower ones.
            let dir = if i % 2 == 0 {
                mnt2.join(format!("l{}", i % 20))
            } else {
                mnt2.join(format!("new{}", i % 500))
            };
            if i < 500 && i % 2 == 1 {
                fs::create_dir(&dir).map_err(|e| err("mkdir", &dir, e))?;
            }
            let p = dir.join(format!("f{i}"));
            let mut f = fs::File::create(&p).map_err(|e| err("create", &p, e))?;
            f.write_all(format!("data {i}").as_bytes())
                .map_err(|e| err("write", &p, e))?;
            let md = fs::symlink_metadata(&p).map_err(|e| err("lstat", &p, e))?;
            inos.push((p, md.ino()));
            if i % 100 == 0 {
                kept.push((f, i));
                max_fds = max_fds.max(fd_count(pid));
            }
        }
        // Deep chains of new directories: more directories than the limit, each level in
        // use while the one below it is cached.
        for c in 0..40 {
            let mut p = mnt2.join(format!("deep{c}"));
            for d in 0..30 {
                fs::create_dir(&p).map_err(|e| err("mkdir", &p, e))?;
                let md = fs::symlink_metadata(&p).map_err(|e| err("lstat", &p, e))?;
                inos.push((p.clone(), md.ino()));
                p = p.join(format!("d{d}"));
            }
            max_fds = max_fds.max(fd_count(pid));
        }
        for (p, ino) in &inos {
            let md = fs::symlink_metadata(p).map_err(|e| err("lstat again", p, e))?;
            if md.ino() != *ino {
                return Err(format!(
                    "{}: st_ino {} became {}",
                    p.display(),
                    ino,
                    md.ino()
                ));
            }
        }
        for (p, _) in inos.iter().take(5000).step_by(37) {
            let i: usize = p.file_name().unwrap().to_str().unwrap()[1..]
                .parse()
                .unwrap();
            let data = fs::read(p).map_err(|e| err("read", p, e))?;
            if data != format!("data {i}").as_bytes() {
                return Err(format!("{}: content changed", p.display()));
            }
        }
        for (f, i) in &mut kept {
            f.write_all(b" more")
                .map_err(|e| format!("write to kept fd {i}: {e}"))?;
            let mut back = String::new();
            f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            fs::File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))
                .and_then(|mut r| r.read_to_string(&mut back))
                .map_err(|e| format!("read kept fd {i}: {e}"))?;
            if back != format!("data {i} more") {
                return Err(format!("kept fd {i} reads {back:?}"));
            }
        }
        Ok((inos.len(), max_fds.max(fd_count(pid))))
    });
    let (files, max_fds) = result.unwrap_or_else(|e| {
        panic!(
            "{TEST}: {e}\n  the daemon holds {} descriptors (limit {LIMIT})",
            fd_count(pid)
        )
    });
    visible(&format!(
        "{TEST}: {files} upper files and directories (1,450 new directories) under an open-file limit of {LIMIT}; \
         the daemon held at most {max_fds} descriptors (sampled)"
    ));
    assert!(process_alive(pid), "the daemon died");
    drop(m);
    assert_tree_unchanged("lower", &lower_before, &lower);
    // The upper holds what was written, as ordinary files.
    let upper_file = s.join("upper/new7/f7");
    assert_eq!(fs::read(&upper_file).expect("read upper"), b"data 7");
}
