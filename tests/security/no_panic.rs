//! No panics: a storm of racing and malformed requests.

use super::swap_race::exchange;
use super::*;
use common::rng::{Rng, env_u64};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// No panics: racing and malformed requests
// ---------------------------------------------------------------------------------------------

fn odd_names() -> Vec<OsString> {
    let mut v: Vec<OsString> = [
        b"\xff\xfe".as_slice(),
        b"a\nb",
        b"\x01\x02\x7f",
        b" ",
        b"-",
        b"...",
        b".wh.foo",
        b".wh..wh..opq",
        b".wh.",
        b"#ovlfs.1.2",
        b"trusted.overlay.opaque",
        b"\\",
        b"\xc3\x28",
    ]
    .iter()
    .map(|b| OsString::from_vec(b.to_vec()))
    .collect();
    for len in [255usize, 256, 1024, 1025, 4096] {
        v.push(OsString::from_vec(vec![b'n'; len]));
    }
    v
}

/// One round of malformed / unusual requests in `dir` (errors are expected; EIO is recorded).
fn odd_requests(dir: &Path, rng: &mut Rng, eio: &EioLog) {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
    let rec = |what: &str, r: io::Result<()>| {
        eio.check(what, &r);
    };
    let names = odd_names();
    let name = &names[rng.below(names.len() as u64) as usize];
    let p = dir.join(name);
    let short = OsStr::new("short");
    let ps = dir.join(short);
    let lossy = name.to_string_lossy().chars().take(24).collect::<String>();
    rec(&format!("create {lossy}"), fs::write(&p, b"x"));
    rec(
        &format!("mkdir {lossy}"),
        fs::create_dir(p.with_extension("d")),
    );
    rec(&format!("stat {lossy}"), fs::symlink_metadata(&p).map(drop));
    rec(
        &format!("symlink {lossy}"),
        std::os::unix::fs::symlink(name, &ps),
    );
    rec(&format!("rename to {lossy}"), fs::rename(&ps, &p));
    rec(&format!("link {lossy}"), fs::hard_link(&p, dir.join("hl")));
    rec(&format!("unlink {lossy}"), fs::remove_file(&p));
    let _ = fs::remove_file(dir.join("hl"));
    let _ = fs::remove_file(&ps);
    // xattrs: huge values, long names, tiny buffers, private names.
    let f = dir.join("xfile");
    rec("create xfile", fs::write(&f, b"x"));
    let big = vec![b'v'; [4000usize, 65536, 70000][rng.below(3) as usize]];
    rec("setxattr huge", try_set_xattr(&f, "user.huge", &big));
    rec(
        "setxattr long name",
        try_set_xattr(&f, &format!("user.{}", "k".repeat(250)), b"1"),
    );
    rec(
        "setxattr private",
        try_set_xattr(&f, "trusted.overlay.opaque", b"y"),
    );
    rec(
        "setxattr user.overlay",
        try_set_xattr(&f, "user.overlay.whiteout", b"y"),
    );
    rec("setxattr empty name", try_set_xattr(&f, "user.", b"1"));
    rec(
        "getxattr tiny buffer",
        rustix::fs::lgetxattr(&f, "user.huge", &mut [0u8; 1][..])
            .map(drop)
            .map_err(io_err),
    );
    rec(
        "listxattr tiny buffer",
        rustix::fs::llistxattr(&f, &mut [0u8; 1][..])
            .map(drop)
            .map_err(io_err),
    );
    rec(
        "removexattr missing",
        rustix::fs::lremovexattr(&f, "user.missing").map_err(io_err),
    );
    // Special nodes: a 0/0 device (reads back as a whiteout), a block device, a FIFO, a socket.
    for (ft, dev) in [
        (FileType::CharacterDevice, 0),
        (FileType::BlockDevice, rustix::fs::makedev(7, 200)),
        (FileType::Fifo, 0),
        (FileType::Socket, 0),
    ] {
        rec(
            "mknod",
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join("node"),
                ft,
                Mode::from_raw_mode(0o600),
                dev,
            )
            .map_err(io_err),
        );
        let _ = fs::remove_file(dir.join("node"));
    }
    // RENAME_WHITEOUT and invalid flag combinations from a caller.
    rec("create rw", fs::write(dir.join("rw"), b"x"));
    for flags in [
        RenameFlags::WHITEOUT,
        RenameFlags::EXCHANGE | RenameFlags::NOREPLACE,
        RenameFlags::EXCHANGE,
        RenameFlags::NOREPLACE,
    ] {
        rec(
            "renameat2 flags",
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                dir.join("rw"),
                rustix::fs::CWD,
                dir.join("rw2"),
                flags,
            )
            .map_err(io_err),
        );
    }
    let _ = fs::remove_file(dir.join("rw"));
    let _ = fs::remove_file(dir.join("rw2"));
    // A directory into its own subdirectory, a directory over a file and vice versa.
    let _ = fs::create_dir_all(dir.join("loop/inner"));
    rec(
        "rename into self",
        fs::rename(dir.join("loop"), dir.join("loop/inner/x")),
    );
    rec("rename dir over file", fs::rename(dir.join("loop"), &f));
    rec("rename file over dir", fs::rename(&f, dir.join("loop")));
    // Huge offsets and sizes, fallocate modes, SEEK_DATA/HOLE past the end, locks.
    if let Ok(file) = fs::OpenOptions::new().read(true).write(true).open(&f) {
        let huge = [u64::MAX / 2, i64::MAX as u64, 1 << 62, (1 << 44) - 1];
        let off = huge[rng.below(huge.len() as u64) as usize];
        rec(
            "pwrite huge offset",
            rustix::io::pwrite(&file, b"x", off)
                .map(drop)
                .map_err(io_err),
        );
        rec(
            "ftruncate huge",
            rustix::fs::ftruncate(&file, off).map_err(io_err),
        );
        for mode in [
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            rustix::fs::FallocateFlags::COLLAPSE_RANGE,
            rustix::fs::FallocateFlags::ZERO_RANGE,
            rustix::fs::FallocateFlags::INSERT_RANGE,
            rustix::fs::FallocateFlags::PUNCH_HOLE,
        ] {
            rec(
                "fallocate",
                rustix::fs::fallocate(&file, mode, 4096, 4096).map_err(io_err),
            );
        }
        rec(
            "SEEK_DATA past end",
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(1 << 40))
                .map(drop)
                .map_err(io_err),
        );
        rec(
            "SEEK_HOLE",
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0))
                .map(drop)
                .map_err(io_err),
        );
        rec(
            "flock",
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .map_err(io_err),
        );
        // SAFETY: fcntl F_SETLK with a valid flock struct on an open fd.
        let r = unsafe {
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as i16;
            fl.l_whence = libc::SEEK_SET as i16;
            fl.l_len = 10;
            libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_SETLK, &fl)
        };
        rec(
            "fcntl lock",
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            },
        );
        rec(
            "copy_file_range overlapping",
            rustix::fs::copy_file_range(&file, Some(&mut 0), &file, Some(&mut 2), 100)
                .map(drop)
                .map_err(io_err),
        );
        // SAFETY: FS_IOC_GETFLAGS with a valid out pointer on an open fd.
        let r = unsafe {
            let mut flags: libc::c_long = 0;
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0x8008_6601, // FS_IOC_GETFLAGS
                &mut flags,
            )
        };
        rec(
            "ioctl",
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            },
        );
    }
    // Opened, then deleted: every fd operation on the deleted file.
    rec("create del", fs::write(dir.join("del"), b"deleted"));
    if let Ok(mut file) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("del"))
    {
        let _ = fs::remove_file(dir.join("del"));
        rec("fstat deleted", file.metadata().map(drop));
        let mut b = Vec::new();
        rec("read deleted", file.read_to_end(&mut b).map(drop));
        rec("write deleted", file.write_all(b"more"));
        rec(
            "fchmod deleted",
            rustix::fs::fchmod(&file, Mode::from_raw_mode(0o4755)).map_err(io_err),
        );
        rec(
            "fsetxattr deleted",
            rustix::fs::fsetxattr(&file, "user.d", b"1", rustix::fs::XattrFlags::empty())
                .map_err(io_err),
        );
        rec("ftruncate deleted", file.set_len(1));
        rec("fsync deleted", file.sync_all());
        rec(
            "linkat deleted",
            rustix::fs::linkat(
                &file,
                "",
                rustix::fs::CWD,
                dir.join("undead"),
                AtFlags::EMPTY_PATH,
            )
            .map_err(io_err),
        );
        let _ = fs::remove_file(dir.join("undead"));
    }
    // A directory fd whose directory is removed, then read.
    let _ = fs::create_dir(dir.join("gone"));
    if let Ok(dfd) = rustix::fs::open(
        dir.join("gone"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let _ = fs::remove_dir(dir.join("gone"));
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut it = rustix::fs::RawDir::new(&dfd, &mut buf);
        while let Some(e) = it.next() {
            if let Err(e) = e {
                rec("getdents removed dir", Err(io_err(e)));
                break;
            }
        }
        rec(
            "openat in removed dir",
            rustix::fs::openat(
                &dfd,
                "x",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
            .map_err(io_err),
        );
    }
    // O_TMPFILE, O_DIRECT, O_WRONLY on a directory.
    rec(
        "O_TMPFILE",
        rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::RDWR,
            Mode::from_raw_mode(0o600),
        )
        .map(drop)
        .map_err(io_err),
    );
    rec(
        "O_DIRECT",
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&f)
            .map(drop),
    );
    // Long symlink targets.
    for len in [4095usize, 4096, 5000] {
        let target = OsString::from_vec(vec![b't'; len]);
        rec(
            "long symlink",
            std::os::unix::fs::symlink(&target, dir.join("longlink")),
        );
        rec(
            "readlink long",
            fs::read_link(dir.join("longlink")).map(drop),
        );
        let _ = fs::remove_file(dir.join("longlink"));
    }
    // utimensat with omitted / now / negative times.
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: -1,
            tv_nsec: 999_999_999,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    };
    rec(
        "utimensat odd",
        rustix::fs::utimensat(rustix::fs::CWD, &f, &ts, AtFlags::empty()).map_err(io_err),
    );
    rec("statfs", rustix::fs::statfs(dir).map(drop).map_err(io_err));
    rec(
        "access odd mask",
        rustix::fs::access(dir, rustix::fs::Access::from_bits_retain(0o7)).map_err(io_err),
    );
}

/// One racing operation on the shared names `race/n0..n7`.
fn racing_op(race: &Path, rng: &mut Rng, eio: &EioLog) {
    let a = race.join(format!("n{}", rng.below(8)));
    let b = race.join(format!("n{}", rng.below(8)));
    let r: io::Result<()> = match rng.below(16) {
        0 => fs::rename(&a, &b),
        1 => exchange(&a, &b),
        2 => rustix::fs::renameat_with(
            rustix::fs::CWD,
            &a,
            rustix::fs::CWD,
            &b,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(io_err),
        3 => fs::rename(&a, b.join("inside")),
        4 => fs::remove_file(&a),
        5 => fs::remove_dir(&a),
        6 => rm_rf(&a),
        7 => fs::write(&a, b"file"),
        8 => fs::create_dir(&a).and_then(|_| fs::write(a.join("child"), b"c")),
        9 => std::os::unix::fs::symlink("n0", &a),
        10 => fs::hard_link(&a, &b),
        11 => fs::read_dir(race).map(|rd| {
            for e in rd.flatten() {
                let _ = fs::symlink_metadata(e.path());
                if let Ok(inner) = fs::read_dir(e.path()) {
                    inner.for_each(drop);
                }
            }
        }),
        12 => fs::read(&a).map(drop),
        13 => fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&a)
            .and_then(|mut f| {
                let _ = fs::remove_file(&a);
                f.write_all(b"after unlink")?;
                f.metadata().map(drop)
            }),
        14 => fs::set_permissions(&a, fs::Permissions::from_mode(0o700)),
        _ => try_set_xattr(&a, "user.r", b"1"),
    };
    eio.check(format_args!("race op on {}", a.display()), &r);
}

#[test]
fn no_panic_under_racing_and_malformed_requests() {
    const TEST: &str = "no_panic_under_racing_and_malformed_requests";
    if !require_root(TEST) {
        return;
    }
    let secs = env_u64("OVLFS_STORM_SECS", 8);
    let (_t, s) = scratch(&["lower", "upper", "work", "mnt"]);
    let lower = s.join("lower");
    for i in 0..8 {
        if i % 2 == 0 {
            write_file(&lower.join(format!("race/n{i}")), b"lower file");
        } else {
            write_file(&lower.join(format!("race/n{i}/child")), b"lower child");
        }
    }
    write_file(&lower.join("odd/lowerfile"), b"x");
    let mnt = s.join("mnt");
    let mut m = Ovlfs::new([&lower])
        .upper(s.join("upper"), s.join("work"))
        .mount(&mnt);
    let eio = EioLog::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (eio2, stop2, mnt2) = (eio.clone(), stop.clone(), mnt.clone());
    let rounds = with_watchdog(secs + 120, &mnt, move || {
        let mut hs = Vec::new();
        for tid in 0..4u64 {
            let (eio, stop, race) = (eio2.clone(), stop2.clone(), mnt2.join("race"));
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(tid + 100);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    racing_op(&race, &mut rng, &eio);
                    n += 1;
                }
                n
            }));
        }
        {
            let (eio, stop, odd) = (eio2.clone(), stop2.clone(), mnt2.join("odd"));
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(7);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    odd_requests(&odd, &mut rng, &eio);
                    n += 1;
                }
                n
            }));
        }
        thread::sleep(Duration::from_secs(secs));
        stop2.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<u64>>()
    });
    drop(stop);
    visible(&format!(
        "{TEST}: {secs} s: racing operations per thread {:?}, rounds of malformed requests {}",
        &rounds[..4],
        rounds[4]
    ));
    assert_daemon_healthy(&m, TEST);
    // Still fully serving.
    fs::write(mnt.join("after"), b"after the storm").expect("create after the storm");
    assert_eq!(
        fs::read(mnt.join("after")).expect("read"),
        b"after the storm"
    );
    fs::remove_file(mnt.join("after")).expect("unlink after the storm");
    rm_rf(&mnt.join("race")).expect("rm -rf race after the storm");
    eio.assert_none(TEST, 15, &m.stderr());
    // A clean exit at unmount.
    assert!(m.fusermount_u(), "fusermount3 -u after the storm failed");
    let st = m.wait_exit(EXIT_TIMEOUT);
    assert!(
        matches!(st, Some(Some(s)) if s.success()),
        "the daemon did not exit cleanly after the storm: {st:?}; stderr:\n{}",
        m.stderr()
    );
}
