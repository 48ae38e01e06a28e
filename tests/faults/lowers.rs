//! The lower layers are never modified by a random multi-threaded workload.

use super::*;
use common::rng::{Rng, env_u64};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The lower layers are never modified
// ---------------------------------------------------------------------------------------------

fn build_lowers(l1: &Path, l2: &Path, rng: &mut Rng) {
    for i in 0..24 {
        let p = l1.join(format!("f/file{i:02}"));
        write_random_file(&p, rng.below(96 << 10), rng);
        chmod(&p, [0o644, 0o600, 0o755, 0o666, 0o4755, 0o2775][i % 6]);
        chown(&p, [0, 1000, 1001][i % 3], [0, 1000, 100][i % 3]);
        if i % 2 == 0 {
            set_xattr(&p, "user.a", format!("va{i}").as_bytes());
        }
        if i % 3 == 0 {
            set_xattr(&p, "trusted.t", b"tv");
        }
    }
    for i in 0..12 {
        write_random_file(
            &l2.join(format!("f/file{:02}", i + 20)),
            rng.below(32 << 10),
            rng,
        );
    }
    write_random_file(&l1.join("hl/a"), 5000, rng);
    hardlink(&l1.join("hl/a"), &l1.join("hl/b"));
    hardlink(&l1.join("hl/a"), &l1.join("hl/c"));
    write_random_file(&l2.join("hl2/x"), 3000, rng);
    hardlink(&l2.join("hl2/x"), &l2.join("hl2/y"));
    for d in ["d/one", "d/two/deeper", "d/three"] {
        let dir = l1.join(d);
        mkdirs(&dir);
        for j in 0..4 {
            write_random_file(&dir.join(format!("g{j}")), rng.below(8192), rng);
        }
        set_xattr(&dir, "user.dirtag", d.as_bytes());
    }
    chmod(&l1.join("d/three"), 0o700);
    chown(&l1.join("d/two"), 1000, 1000);
    write_random_file(&l2.join("d/one/from_l2"), 100, rng);
    write_random_file(&l2.join("d/l2only/h"), 100, rng);
    symlink("f/file00", &l1.join("sym"));
    symlink("d", &l1.join("symdir"));
    // An absolute link the workload follows on the host (open, truncate, chmod of its path):
    // it must lead nowhere real, or the test would write to the host (it once named
    // /etc/passwd and overwrote it).
    let nowhere = l1
        .parent()
        .expect("scratch root")
        .join("outside/never-created");
    symlink(&nowhere, &l1.join("abs"));
    fifo(&l1.join("pipe"));
    for t in 0..16 {
        write_random_file(&l1.join(format!("mm/m{t}")), 20000 + t * 1000, rng);
    }
    set_xattr(&l1.join("f"), "trusted.dirx", b"1");
}

/// Known merged paths (relative), shared by the workload threads.
struct Pool {
    paths: Mutex<Vec<PathBuf>>,
}

impl Pool {
    fn pick(&self, rng: &mut Rng) -> PathBuf {
        let p = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        p[rng.below(p.len() as u64) as usize].clone()
    }

    fn forget(&self, p: &Path) {
        let mut v = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() > 20
            && let Some(i) = v.iter().position(|x| x == p)
        {
            v.swap_remove(i);
        }
    }

    fn add(&self, p: PathBuf) {
        let mut v = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 400 {
            v.push(p);
        }
    }
}

fn open_fd(p: &Path, flags: rustix::fs::OFlags) -> io::Result<std::os::fd::OwnedFd> {
    rustix::fs::open(
        p,
        flags | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .map_err(io::Error::from)
}

/// One random operation; errors are normal (racing threads), only hard failures matter.
fn random_op(
    mnt: &Path,
    pool: &Pool,
    rng: &mut Rng,
    tid: usize,
    n: u64,
) -> (usize, PathBuf, io::Result<()>) {
    use rustix::fs::{Mode, OFlags};
    let rel = pool.pick(rng);
    let p = mnt.join(&rel);
    let dir = mnt.join(["f", "d/one", "d/two", "hl", "hl2", "d/l2only", ""][rng.below(7) as usize]);
    let fresh = dir.join(format!("new{tid}_{n}"));
    let kind = rng.below(16) as usize;
    let r = (|| -> io::Result<()> {
        match kind {
            0 => {
                // Descriptors opened before the copy-up: a read-only fd and a directory-less path.
                let ro = open_fd(&p, OFlags::RDONLY)?;
                let mut w = fs::OpenOptions::new().append(true).open(&p)?;
                let n = rng.below(3000) as usize;
                w.write_all(&rng.bytes(n))?;
                let _ = rustix::fs::fchmod(&ro, Mode::from_raw_mode(rng.below(0o7777) as u32));
                let _ = rustix::fs::fchown(
                    &ro,
                    Some(rustix::fs::Uid::from_raw(rng.below(1003) as u32)),
                    None,
                );
                let _ =
                    rustix::fs::fsetxattr(&ro, "user.viafd", b"v", rustix::fs::XattrFlags::empty());
                let ts = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 12345,
                        tv_nsec: 0,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: 23456,
                        tv_nsec: 0,
                    },
                };
                let _ = rustix::fs::futimens(&ro, &ts);
                let mut buf = [0u8; 4096];
                let _ = rustix::io::read(&ro, &mut buf);
                let _ = rustix::fs::ftruncate(&ro, 1);
                w.sync_data()
            }
            1 => {
                let mut f = fs::OpenOptions::new().read(true).write(true).open(&p)?;
                f.seek(SeekFrom::Start(rng.below(70000)))?;
                let n = rng.below(5000) as usize + 1;
                f.write_all(&rng.bytes(n))?;
                f.set_len(rng.below(80000))
            }
            2 => {
                let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
                // SAFETY: a valid NUL-terminated path.
                let r = unsafe { libc::truncate(c.as_ptr(), rng.below(100_000) as libc::off_t) };
                if r == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            3 => {
                fs::hard_link(&p, &fresh)?;
                pool.add(fresh.strip_prefix(mnt).expect("in mnt").to_path_buf());
                let mut f = fs::OpenOptions::new().append(true).open(&fresh)?;
                f.write_all(b"through a new hard link")
            }
            4 => {
                fs::rename(&p, &fresh)?;
                pool.add(fresh.strip_prefix(mnt).expect("in mnt").to_path_buf());
                Ok(())
            }
            5 => rustix::fs::chmodat(
                rustix::fs::CWD,
                &p,
                Mode::from_raw_mode(rng.below(0o7777) as u32),
                rustix::fs::AtFlags::empty(),
            )
            .map_err(Into::into),
            6 => std::os::unix::fs::lchown(
                &p,
                Some(rng.below(1003) as u32),
                Some(rng.below(1003) as u32),
            ),
            7 => {
                if rng.below(2) == 0 {
                    let n = rng.below(300) as usize;
                    try_set_xattr(&p, "user.new", &rng.bytes(n))?;
                    try_set_xattr(&p, "trusted.new", b"t")
                } else {
                    rustix::fs::lremovexattr(&p, "user.a").map_err(Into::into)
                }
            }
            8 => {
                let ts = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 1000,
                        tv_nsec: 5,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: 2000,
                        tv_nsec: 7,
                    },
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &p,
                    &ts,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(Into::into)
            }
            9 => {
                if fs::symlink_metadata(&p)?.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                }
            }
            10 => {
                let mut f = fs::OpenOptions::new().write(true).truncate(true).open(&p)?;
                f.write_all(b"after O_TRUNC")
            }
            11 => {
                let src = fs::File::open(mnt.join(pool.pick(rng)))?;
                let dst = fs::OpenOptions::new().write(true).open(&p)?;
                let mut off_in = 0u64;
                let mut off_out = rng.below(5000);
                rustix::fs::copy_file_range(
                    &src,
                    Some(&mut off_in),
                    &dst,
                    Some(&mut off_out),
                    20000,
                )?;
                Ok(())
            }
            12 => {
                if rng.below(2) == 0 {
                    fs::create_dir(&fresh)?;
                    fs::write(fresh.join("inner"), b"inner")?;
                } else {
                    fs::write(&fresh, rng.bytes(100))?;
                }
                pool.add(fresh.strip_prefix(mnt).expect("in mnt").to_path_buf());
                Ok(())
            }
            13 => {
                let f = fs::OpenOptions::new().read(true).write(true).open(&p)?;
                let mode = if rng.below(2) == 0 {
                    rustix::fs::FallocateFlags::KEEP_SIZE | rustix::fs::FallocateFlags::PUNCH_HOLE
                } else {
                    rustix::fs::FallocateFlags::empty()
                };
                rustix::fs::fallocate(&f, mode, rng.below(50000), rng.below(50000) + 1)
                    .map_err(Into::into)
            }
            14 => {
                // A directory fd opened before the copy-up of the directory.
                let d = open_fd(&dir, OFlags::RDONLY | OFlags::DIRECTORY)?;
                let _ = rustix::fs::fchmod(&d, Mode::from_raw_mode(0o750));
                let _ =
                    rustix::fs::fsetxattr(&d, "user.dfd", b"1", rustix::fs::XattrFlags::empty());
                rustix::fs::fchown(&d, Some(rustix::fs::Uid::from_raw(1000)), None)
                    .map_err(Into::into)
            }
            _ => {
                // A shared writable mapping of a (copied-up) lower file. Only this thread
                // touches mm/mTID (a concurrent truncate would make the store fault).
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(mnt.join(format!("mm/m{tid}")))?;
                let len = f.metadata()?.len().min(65536) as usize;
                if len == 0 {
                    return Ok(());
                }
                // SAFETY: a fresh shared mapping of `len` bytes of an open file, written and
                // unmapped here; nothing else refers to it.
                unsafe {
                    let ptr = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        0,
                    );
                    if ptr == libc::MAP_FAILED {
                        return Err(io::Error::last_os_error());
                    }
                    std::ptr::write_bytes(ptr as *mut u8, 0x5a, len.min(100));
                    libc::msync(ptr, len, libc::MS_SYNC);
                    libc::munmap(ptr, len);
                }
                Ok(())
            }
        }
    })();
    (kind, rel, r)
}

fn lowers_never_modified(test: &str, options: &[&str]) {
    if !require_root(test) {
        return;
    }
    let seed = env_u64("OVLFS_LOWER_SEED", 3);
    let secs = env_u64("OVLFS_LOWER_SECS", 6);
    let threads = env_u64("OVLFS_LOWER_THREADS", 3) as usize;
    let (_t, root) = scratch(&["l1", "l2", "upper", "work", "mnt"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    let mut rng = Rng::new(seed);
    build_lowers(&l1, &l2, &mut rng);
    // Everything about both layers but atimes (reads legitimately update those).
    let before = snapshot_layers(&[&l1, &l2]);
    let mut ov = Ovlfs::new([&l1, &l2]).upper(root.join("upper"), root.join("work"));
    for o in options {
        ov = ov.opt(o);
    }
    let mnt = root.join("mnt");
    let m = ov.mount(&mnt);
    let mut initial = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(mnt.join(&rel)).expect("read merged") {
            let e = e.expect("entry");
            let crel = rel.join(e.file_name());
            if e.file_type().expect("type").is_dir() && !crel.starts_with("mm") {
                stack.push(crel.clone());
            }
            if crel.as_os_str().as_bytes() != b"pipe" && !crel.starts_with("mm") {
                initial.push(crel);
            }
        }
    }
    let pool = Arc::new(Pool {
        paths: Mutex::new(initial),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mnt2 = mnt.clone();
    let (pool2, stop2, stats2) = (pool.clone(), stop.clone(), stats.clone());
    // Errors that mean a broken daemon rather than a lost race.
    let hard = EioLog::new();
    let hard2 = hard.clone();
    with_watchdog(secs + 120, &mnt, move || {
        let mut hs = Vec::new();
        for tid in 0..threads {
            let (pool, stop, stats, mnt) =
                (pool2.clone(), stop2.clone(), stats2.clone(), mnt2.clone());
            let hard = hard2.clone();
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(seed * 1000 + tid as u64);
                let mut n = 0;
                let mut local = BTreeMap::<String, u64>::new();
                while !stop.load(Ordering::Relaxed) {
                    let (kind, rel, r) = random_op(&mnt, &pool, &mut rng, tid, n);
                    n += 1;
                    let key = match &r {
                        Ok(()) => format!("op{kind:02} ok"),
                        Err(e) => format!("op{kind:02} {}", errno_of(e)),
                    };
                    *local.entry(key).or_default() += 1;
                    if let Err(e) = &r
                        && e.raw_os_error() == Some(libc::ENOENT)
                    {
                        pool.forget(&rel);
                    }
                    hard.check(format_args!("op{kind:02} on /{}", rel.display()), &r);
                }
                let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                for (k, v) in local {
                    *s.entry(k).or_default() += v;
                }
            }));
        }
        thread::sleep(Duration::from_secs(secs));
        stop2.store(true, Ordering::Relaxed);
        for h in hs {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    drop(stop);
    let total: u64 = stats.lock().map(|s| s.values().sum()).unwrap_or(0);
    let oks: u64 = stats
        .lock()
        .map(|s| {
            s.iter()
                .filter(|(k, _)| k.ends_with(" ok"))
                .map(|(_, v)| v)
                .sum()
        })
        .unwrap_or(0);
    assert_alive(&m, "after the workload");
    hard.assert_none(test, 10, &m.stderr());
    m.assert_no_panic_logged(test);
    drop(m);
    let d = diff_layers(&before, &snapshot_layers(&[&l1, &l2]));
    let per_op: BTreeMap<String, u64> = stats
        .lock()
        .map(|s| {
            s.iter()
                .filter(|(k, _)| k.ends_with(" ok"))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        })
        .unwrap_or_default();
    visible(&format!(
        "{test}: {total} operations ({oks} succeeded: {per_op:?}) in {secs} s on {threads} \
         threads; lower changes: {}",
        d.len()
    ));
    assert!(
        oks > 200,
        "{test}: only {oks} operations succeeded: the workload did not exercise the overlay; {:?}",
        stats.lock().map(|s| s.clone()).unwrap_or_default()
    );
    assert!(
        d.is_empty(),
        "{test}: the lower layers changed:\n  {}",
        d.join("\n  ")
    );
}

#[test]
fn lowers_never_modified_by_random_workload() {
    lowers_never_modified("lowers_never_modified_by_random_workload", &[]);
}

#[test]
fn lowers_never_modified_without_passthrough() {
    lowers_never_modified(
        "lowers_never_modified_without_passthrough",
        &["passthrough=off"],
    );
}
