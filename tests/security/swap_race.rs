//! Races: layer directories and files swapped for symlinks while operations run through the mount.

use super::*;
use common::rng::{Rng, env_u64};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Races: layer directories and files swapped for symlinks while operations run
// ---------------------------------------------------------------------------------------------

pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(io_err)
}

/// Worker operations through the mount on `rel` (errors are expected while the layers change
/// under the daemon; only a daemon escape or death matters). Returns EIO-like failures.
fn race_op(mnt: &Path, rng: &mut Rng, tid: usize, n: u64, eio: &EioLog) {
    let i = rng.below(4);
    let k = rng.below(8);
    let targets = [
        format!("d{i}"),
        format!("ld{i}"),
        format!("p{}", rng.below(64)),
    ];
    let dir = mnt.join(&targets[rng.below(3) as usize]);
    let file = mnt.join(format!("f{i}"));
    let fresh = dir.join(format!("t{tid}_{n}"));
    let r: io::Result<()> = match rng.below(14) {
        0 => fs::write(&fresh, b"data"),
        1 => fs::create_dir(&fresh),
        2 => fs::read_dir(&dir).map(|rd| rd.for_each(drop)),
        3 => fs::OpenOptions::new()
            .append(true)
            .open(dir.join("x"))
            .and_then(|mut f| f.write_all(b"appended")),
        4 => fs::set_permissions(dir.join("x"), fs::Permissions::from_mode(0o600)),
        5 => std::os::unix::fs::lchown(dir.join("x"), Some(1000), None),
        6 => try_set_xattr(&dir.join("x"), "user.race", b"1"),
        7 => fs::rename(
            dir.join(format!("m{k}")),
            dir.join(format!("m{}", (k + 1) % 8)),
        ),
        8 => fs::remove_file(dir.join(format!("m{k}")))
            .and_then(|_| fs::write(dir.join(format!("m{k}")), b"m")),
        9 => fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|mut f| f.write_all(b"file write")),
        10 => fs::set_permissions(&file, fs::Permissions::from_mode(0o640)),
        11 => {
            let c = std::ffi::CString::new(file.as_os_str().as_bytes()).expect("path");
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::truncate(c.as_ptr(), 3) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        12 => try_set_xattr(&file, "user.race", b"2"),
        _ => fs::read(dir.join("x")).map(drop),
    };
    eio.check(dir.display(), &r);
}

#[test]
fn layer_symlink_swap_race_never_redirects_the_daemon() {
    const TEST: &str = "layer_symlink_swap_race_never_redirects_the_daemon";
    if !require_root(TEST) {
        return;
    }
    let secs = env_u64("OVLFS_RACE_SECS", 5);
    let (_t, s) = scratch(&["l1", "upper", "work", "stash", "a/b/mnt", "a/b/out"]);
    let outside = Outside::new(&s.join("out"));
    caller_side(&s.join("a/b/out"));
    let (l1, upper, stash) = (s.join("l1"), s.join("upper"), s.join("stash"));
    let mut swaps: Vec<(PathBuf, PathBuf)> = Vec::new();
    for i in 0..4 {
        // An upper directory and a lower directory, each with a symlink twin in the stash.
        for (layer, name) in [(&upper, format!("d{i}")), (&l1, format!("ld{i}"))] {
            write_file(&layer.join(&name).join("x"), b"x");
            for k in 0..8 {
                write_file(&layer.join(&name).join(format!("m{k}")), b"m");
            }
            symlink("../out", &stash.join(format!("{name}_link")));
            swaps.push((layer.join(&name), stash.join(format!("{name}_link"))));
        }
        write_file(&upper.join(format!("f{i}")), b"upper file");
        symlink("../out/secret", &stash.join(format!("f{i}_link")));
        swaps.push((
            upper.join(format!("f{i}")),
            stash.join(format!("f{i}_link")),
        ));
    }
    // Lower directories the daemon has to copy up (the planting thread races it).
    for i in 0..64 {
        write_file(&l1.join(format!("p{i}/x")), b"p");
    }
    let mnt = s.join("a/b/mnt");
    let m = Ovlfs::new([&l1]).upper(&upper, s.join("work")).mount(&mnt);
    let stop = Arc::new(AtomicBool::new(false));
    let eio = EioLog::new();
    let swaps = Arc::new(swaps);
    let (stop2, eio2, swaps2, mnt2, upper2) = (
        stop.clone(),
        eio.clone(),
        swaps.clone(),
        mnt.clone(),
        upper.clone(),
    );
    let counts = with_watchdog(secs + 120, &mnt, move || {
        let swapped = Arc::new(AtomicU64::new(0));
        let planted = Arc::new(AtomicU64::new(0));
        let mut hs = Vec::new();
        {
            let (stop, swaps, swapped) = (stop2.clone(), swaps2.clone(), swapped.clone());
            hs.push(thread::spawn(move || {
                let mut parity = vec![false; swaps.len()];
                while !stop.load(Ordering::Relaxed) {
                    for (i, (a, b)) in swaps.iter().enumerate() {
                        if exchange(a, b).is_ok() {
                            parity[i] = !parity[i];
                            swapped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    thread::yield_now();
                }
                // Put every real object back in place.
                for (i, (a, b)) in swaps.iter().enumerate() {
                    if parity[i] {
                        exchange(a, b).expect("swap back");
                    }
                }
            }));
        }
        {
            let (stop, planted, upper) = (stop2.clone(), planted.clone(), upper2.clone());
            hs.push(thread::spawn(move || {
                // Plant symlinks where not-yet-copied-up lower directories will go, leave
                // them a few milliseconds (copy-ups meanwhile find the name taken), remove.
                let mut rng = Rng::new(99);
                while !stop.load(Ordering::Relaxed) {
                    let mut mine = Vec::new();
                    for _ in 0..8 {
                        let p = upper.join(format!("p{}", rng.below(64)));
                        if std::os::unix::fs::symlink("../out", &p).is_ok() {
                            planted.fetch_add(1, Ordering::Relaxed);
                            mine.push(p);
                        }
                    }
                    thread::sleep(Duration::from_millis(rng.below(5) + 1));
                    for p in mine {
                        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                            let _ = fs::remove_file(&p);
                        }
                    }
                }
            }));
        }
        for tid in 0..3 {
            let (stop, eio, mnt) = (stop2.clone(), eio2.clone(), mnt2.clone());
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(tid as u64 + 1);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    race_op(&mnt, &mut rng, tid, n, &eio);
                    n += 1;
                }
            }));
        }
        // Evict the kernel's dentries now and then, so that the kernel looks the swapped
        // names up again (from the daemon) while they are symlinks.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            thread::sleep(Duration::from_millis(250));
            let _ = fs::write("/proc/sys/vm/drop_caches", b"2");
        }
        stop2.store(true, Ordering::Relaxed);
        for h in hs {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
        (
            swapped.load(Ordering::Relaxed),
            planted.load(Ordering::Relaxed),
        )
    });
    drop(stop);
    visible(&format!(
        "{TEST}: {} exchanges, {} planted symlinks in {secs} s",
        counts.0, counts.1
    ));
    assert!(counts.0 > 100, "the swapping thread barely ran");
    assert_daemon_healthy(&m, TEST);
    // EIO is an acceptable answer while the layers are changed under the daemon (a caught
    // panic would also answer EIO, but shows in the log checked above); ENOTCONN is not.
    let broken = eio.disconnects();
    let unreadable = (0..64)
        .filter(|i| fs::read_dir(mnt.join(format!("p{i}"))).is_err())
        .count();
    visible(&format!(
        "{TEST}: {} operations answered EIO during the race; {unreadable} of 64 copied-up \
         directories unreadable afterwards",
        eio.len()
    ));
    drop(m);
    outside.assert_untouched(TEST);
    assert!(
        broken.is_empty(),
        "{TEST}: {} operations failed with ENOTCONN/ECONNABORTED: {:?}",
        broken.len(),
        &broken[..broken.len().min(10)]
    );
}
