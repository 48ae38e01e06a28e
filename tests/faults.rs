//! Faults of the upper filesystem and the integrity of the lower layers (issue 6 §2, §3):
//!
//! - `enospc_*`: the upper lives on an 8 MiB tmpfs. A copy-up larger than the free space, a tree
//!   copy-up (directory rename) that runs out of space half-way, and writes into a full upper
//!   fail with ENOSPC to the caller; the daemon keeps serving (reads, stats, listings, deletions);
//!   nothing partial becomes visible (the merged files still show the lower content, no temp
//!   object stays in `WORKDIR/work`); once space is freed everything works, and a remount shows
//!   the same tree.
//! - `no_xattr_no_mknod_upper_*`: an upper where mknod is refused and setxattr is not supported
//!   (the conditions of a vfat upper; this kernel has no vfat driver, so a seccomp filter on the
//!   daemon produces them): with `whiteout=auto` deletions fall back to AUFS `.wh.NAME` entries,
//!   stay deleted across a remount, and names (files and directories) can be re-created over
//!   their whiteouts.
//! - `lowers_never_modified_*`: snapshot two lower layers (content, mode, owner, nlink, inode,
//!   mtime, ctime, every xattr including `trusted.*`), run a random multi-threaded workload
//!   through the mount (writes through fds opened before copy-up, fchmod/fchown/fsetxattr/
//!   futimens through such fds, hard links, renames, chmod/chown, setxattr, truncates, O_TRUNC,
//!   copy_file_range, fallocate, shared mmap writes, deletions), unmount and compare: 0 changes.
//!
//! CI: `cargo test --test faults`.
//! Long: `OVLFS_LOWER_SECS=300 OVLFS_LOWER_SEED=7 cargo test --test faults -- --nocapture`
//! (`OVLFS_LOWER_SECS`: workload duration per variant, default 6; `OVLFS_LOWER_THREADS`, default 3).

mod common;

use common::rng::{Rng, env_u64};

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Utilities
// ---------------------------------------------------------------------------------------------

fn write_random_file(path: &Path, len: u64, rng: &mut Rng) {
    if let Some(p) = path.parent() {
        mkdirs(p);
    }
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write fixture");
        left -= n as u64;
    }
}

fn same_content(a: &Path, b: &Path) -> Result<(), String> {
    let x = fs::read(a).map_err(|e| format!("read {}: {e}", a.display()))?;
    let y = fs::read(b).map_err(|e| format!("read {}: {e}", b.display()))?;
    if x == y {
        Ok(())
    } else {
        Err(format!(
            "{} ({} bytes) differs from {} ({} bytes)",
            a.display(),
            x.len(),
            b.display(),
            y.len()
        ))
    }
}

fn errno_of(e: &io::Error) -> String {
    errno_name(e.raw_os_error())
}

/// Waits until the filesystem of `path` has `want` bytes free; Ok(elapsed) or Err(free bytes).
fn wait_free_space(path: &Path, want: u64, timeout: Duration) -> Result<Duration, u64> {
    let start = std::time::Instant::now();
    loop {
        let st = rustix::fs::statvfs(path).expect("statvfs");
        let free = st.f_bavail * st.f_frsize;
        if free >= want {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(free);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn assert_alive(m: &OvlfsMount, what: &str) {
    let pid = m.pid().expect("daemon pid");
    assert!(
        process_alive(pid),
        "the daemon died ({what}); stderr:\n{}",
        m.stderr()
    );
    assert!(m.is_mounted(), "the mount disappeared ({what})");
    fs::metadata(m.path()).unwrap_or_else(|e| panic!("stat of the mount root fails ({what}): {e}"));
}

fn assert_no_panic_logged(m: &OvlfsMount) {
    let err = m.stderr();
    assert!(
        !err.contains("panicked"),
        "the daemon logged a panic:\n{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// ENOSPC
// ---------------------------------------------------------------------------------------------

#[test]
fn enospc_upper_full_fails_cleanly_and_keeps_serving() {
    const TEST: &str = "enospc_upper_full_fails_cleanly_and_keeps_serving";
    if !require_root(TEST) {
        return;
    }
    let (_t, root) = scratch(&["lower", "upfs", "mnt"]);
    let lower = root.join("lower");
    let mut rng = Rng::new(42);
    write_random_file(&lower.join("big"), 16 << 20, &mut rng);
    write_random_file(&lower.join("small"), 8 << 10, &mut rng);
    write_random_file(&lower.join("tree/a"), 4 << 10, &mut rng);
    write_random_file(&lower.join("tree/b"), 12 << 20, &mut rng);
    write_random_file(&lower.join("tree/c"), 4 << 10, &mut rng);
    write_random_file(&lower.join("victim"), 4 << 10, &mut rng);
    write_random_file(&lower.join("dir/x"), 100, &mut rng);
    let lower_before = snapshot_tree(&lower);

    let fsdir = root.join("upfs");
    let _tmpfs = MountGuard::mount(&["-t", "tmpfs", "-o", "size=8m,mode=755", "tmpfs"], &fsdir)
        .unwrap_or_else(|e| panic!("{e}"));
    let (upper, work) = (fsdir.join("upper"), fsdir.join("work"));
    mkdirs(&upper);
    mkdirs(&work);
    let ov = Ovlfs::new([&lower]).upper(&upper, &work);
    let mnt = root.join("mnt");
    let m = ov.mount(&mnt);
    let workwork = work.join("work");
    let enospc = Some(libc::ENOSPC);

    // 1. Copy-up of a 16 MiB file into 8 MiB.
    let r = fs::OpenOptions::new().append(true).open(mnt.join("big"));
    assert_eq!(
        errno(&r),
        enospc,
        "append to a 16 MiB lower file on an 8 MiB upper: {} instead of ENOSPC",
        errno_name(errno(&r))
    );
    drop(r);
    assert_alive(&m, "after the failed copy-up");
    same_content(&mnt.join("big"), &lower.join("big"))
        .unwrap_or_else(|e| panic!("after the failed copy-up: {e}"));
    assert!(
        !upper.join("big").exists(),
        "a partial copy of big is in the upper"
    );
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "temp leftovers after the failed copy-up"
    );

    // 2. Directory rename whose tree copy-up runs out of space half-way (tree/b is 12 MiB).
    let r = fs::rename(mnt.join("tree"), mnt.join("tree2"));
    assert_eq!(
        errno(&r),
        enospc,
        "rename of a lower directory holding 12 MiB on an 8 MiB upper: {}",
        errno_name(errno(&r))
    );
    assert_alive(&m, "after the failed tree copy-up");
    assert!(
        !mnt.join("tree2").exists(),
        "tree2 appeared although the rename failed"
    );
    assert_eq!(
        sorted_names(&mnt.join("tree")),
        ["a", "b", "c"],
        "merged tree/ after the failed rename"
    );
    for f in ["a", "b", "c"] {
        same_content(&mnt.join("tree").join(f), &lower.join("tree").join(f))
            .unwrap_or_else(|e| panic!("after the failed tree copy-up: {e}"));
    }
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "temp leftovers after the failed rename"
    );

    // 3. Fill the upper through the mount: the writer must see ENOSPC (on write or fsync).
    let mut fill = fs::File::create(mnt.join("fill")).expect("create fill");
    let chunk = rng.bytes(256 << 10);
    let mut written = 0u64;
    let fill_err = loop {
        match fill.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break Some(e),
        }
        if written > 64 << 20 {
            break None;
        }
    };
    let fill_err = match fill_err {
        Some(e) => e,
        None => panic!("wrote {written} bytes into an 8 MiB upper without an error"),
    };
    let sync = fill.sync_all();
    drop(fill);
    assert_eq!(
        fill_err.raw_os_error(),
        enospc,
        "filling the upper failed with {} instead of ENOSPC (after {written} bytes)",
        errno_of(&fill_err)
    );
    if let Err(e) = &sync {
        assert_eq!(e.raw_os_error(), enospc, "fsync of the full file: {e}");
    }
    assert_alive(&m, "with the upper full");

    // 4. With the upper full: a small copy-up fails with ENOSPC and leaves the lower view.
    let r = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("small"))
        .and_then(|mut f| {
            f.write_all(b"appended")?;
            f.sync_all()
        });
    assert_eq!(
        errno(&r),
        enospc,
        "appending to a lower file with the upper full: {}",
        errno_name(errno(&r))
    );
    let small_now = fs::read(mnt.join("small")).expect("read small");
    let small_lower = fs::read(lower.join("small")).expect("read lower small");
    assert!(
        small_now == small_lower,
        "after the failed append, small has {} bytes (lower {}): a partial copy-up or write shows",
        small_now.len(),
        small_lower.len()
    );
    // ... and the daemon keeps serving everything that needs no space.
    assert_eq!(
        sorted_names(&mnt),
        ["big", "dir", "fill", "small", "tree", "victim"]
    );
    same_content(&mnt.join("big"), &lower.join("big")).expect("read big with the upper full");
    same_content(&mnt.join("dir/x"), &lower.join("dir/x")).expect("read dir/x with the upper full");
    fs::remove_file(mnt.join("victim"))
        .expect("unlink of a lower file (whiteout) with the upper full");
    assert!(!mnt.join("victim").exists());
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "temp leftovers with the upper full"
    );

    // 5. Free the space: everything works again.
    fs::remove_file(mnt.join("fill")).expect("unlink fill");
    // The daemon releases the deleted file's last descriptor when the kernel's RELEASE and
    // FORGET arrive (asynchronously): the space must come back promptly, not only at unmount.
    let freed_in = wait_free_space(&fsdir, 4 << 20, Duration::from_secs(5)).unwrap_or_else(|free| {
        panic!(
            "5 s after unlinking the file that filled the upper, the upper still has only {free} \
             bytes free: the daemon keeps the deleted file open"
        )
    });
    visible(&format!(
        "{TEST}: space of the deleted file released after {freed_in:?}"
    ));
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("small"))
        .expect("append to small after freeing space");
    f.write_all(b"appended").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    let mut expect_small = small_lower.clone();
    expect_small.extend_from_slice(b"appended");
    assert!(fs::read(mnt.join("small")).expect("read small") == expect_small);
    fs::write(mnt.join("newfile"), b"new").expect("create after freeing space");
    assert_alive(&m, "after freeing space");
    assert_no_panic_logged(&m);
    drop(m);

    // 6. Remount: the same tree, no leftovers.
    let m = ov.mount(&mnt);
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "WORKDIR/work after the remount"
    );
    assert_eq!(
        sorted_names(&mnt),
        ["big", "dir", "newfile", "small", "tree"]
    );
    same_content(&mnt.join("big"), &lower.join("big")).expect("big after remount");
    for f in ["a", "b", "c"] {
        same_content(&mnt.join("tree").join(f), &lower.join("tree").join(f))
            .unwrap_or_else(|e| panic!("after remount: {e}"));
    }
    assert!(fs::read(mnt.join("small")).expect("read small") == expect_small);
    drop(m);
    assert_trees_equal(
        "lower before",
        &lower_before,
        "lower after",
        &snapshot_tree(&lower),
    );
}

// ---------------------------------------------------------------------------------------------
// An upper without xattrs where mknod is refused: whiteout=auto falls back to .wh.NAME
// ---------------------------------------------------------------------------------------------

/// A seccomp filter making the daemon see an upper filesystem that refuses mknod (EPERM, as for
/// an unprivileged user or a filesystem without device files) and has no xattr support
/// (EOPNOTSUPP for every setxattr). This kernel has no vfat driver, and the FUSE FAT
/// implementations lack renameat2 flags, so this is how the conditions of a vfat upper are
/// produced here: deterministic, without packages or loop devices.
#[cfg(target_arch = "x86_64")]
fn refusing_filter() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const SYS_SETXATTRAT: u32 = 463;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mknods = [libc::SYS_mknod as u32, libc::SYS_mknodat as u32];
    let setx = [
        libc::SYS_setxattr as u32,
        libc::SYS_lsetxattr as u32,
        libc::SYS_fsetxattr as u32,
        SYS_SETXATTRAT,
    ];
    let mut p = vec![
        ins(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(RET_K, 0, 0, RET_ALLOW),
        ins(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    // Layout after the load: mknod checks, setxattr checks, ALLOW, ERRNO(EPERM), ERRNO(ENOTSUP).
    let n_checks = mknods.len() + setx.len();
    for (i, nr) in mknods.iter().enumerate() {
        let to_eperm = (n_checks - i) as u8; // skip the remaining checks and ALLOW
        p.push(ins(JEQ_K, to_eperm, 0, *nr));
    }
    for (i, nr) in setx.iter().enumerate() {
        let to_enotsup = (setx.len() - i + 1) as u8;
        p.push(ins(JEQ_K, to_enotsup, 0, *nr));
    }
    p.push(ins(RET_K, 0, 0, RET_ALLOW));
    p.push(ins(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32));
    p.push(ins(RET_K, 0, 0, RET_ERRNO | libc::EOPNOTSUPP as u32));
    p
}

/// An ovlfs daemon started by this test (under the seccomp filter), unmounted on drop.
struct FilteredDaemon {
    child: std::process::Child,
    mnt: PathBuf,
    stderr: Capture,
}

impl FilteredDaemon {
    #[cfg(target_arch = "x86_64")]
    fn start(ov: &Ovlfs, mnt: &Path) -> FilteredDaemon {
        use std::os::unix::process::CommandExt;
        let filter = refusing_filter();
        let mut cmd = ov.command(mnt, true);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // SAFETY: between fork and exec only prctl(2) runs, on memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let prog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                if libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &prog as *const libc::sock_fprog as libc::c_ulong,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = spawn_gated(&mut cmd).expect("spawn ovlfs under seccomp");
        let stderr = Capture::spawn(child.stderr.take().expect("stderr"));
        let d = FilteredDaemon {
            child,
            mnt: mnt.to_path_buf(),
            stderr,
        };
        let deadline = std::time::Instant::now() + MOUNT_TIMEOUT;
        let mut d = d;
        while !is_fuse_mounted(mnt) {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!(
                    "ovlfs under the seccomp filter exited ({st}) before mounting:\n{}",
                    d.stderr.text(Duration::from_millis(500))
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ovlfs did not mount under seccomp"
            );
            thread::sleep(Duration::from_millis(10));
        }
        d
    }
}

impl Drop for FilteredDaemon {
    fn drop(&mut self) {
        if is_fuse_mounted(&self.mnt) {
            let mut c = Command::new("fusermount3");
            c.arg("-u").arg(&self.mnt);
            let ok = run_cmd_quiesced(&mut c, MOUNT_TIMEOUT).is_ok_and(|o| o.success());
            if !ok {
                let mut c = Command::new("umount");
                c.arg("-l").arg(&self.mnt);
                let _ = run_cmd_quiesced(&mut c, MOUNT_TIMEOUT);
            }
        }
        if wait_child(&mut self.child, EXIT_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = wait_child(&mut self.child, EXIT_TIMEOUT);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn no_xattr_no_mknod_upper_whiteout_auto_falls_back_to_aufs_whiteouts() {
    const TEST: &str = "no_xattr_no_mknod_upper_whiteout_auto_falls_back_to_aufs_whiteouts";
    if !require_root(TEST) {
        return;
    }
    let (_t, root) = scratch(&["lower", "upper", "work", "mnt"]);
    let (lower, upper, work) = (root.join("lower"), root.join("upper"), root.join("work"));
    write_file(&lower.join("gone.txt"), b"lower gone");
    write_file(&lower.join("keep.txt"), b"lower keep");
    write_file(&lower.join("d/x"), b"x");
    write_file(&lower.join("d/y"), b"y");
    write_file(&lower.join("e/z"), b"z");
    write_file(&lower.join("e/sub/w"), b"w");
    let lower_before = snapshot_tree(&lower);
    let ov = Ovlfs::new([&lower])
        .upper(&upper, &work)
        .opt("whiteout=auto");
    let mnt = root.join("mnt");

    let d = FilteredDaemon::start(&ov, &mnt);
    // The filter works: the daemon refuses a FIFO (mknod) and user xattrs.
    let fifo_r = rustix::fs::mknodat(
        rustix::fs::CWD,
        mnt.join("probe_fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    );
    assert!(
        fifo_r.is_err(),
        "mkfifo through the filtered daemon succeeded: the filter is not active"
    );
    fs::remove_file(mnt.join("gone.txt")).expect("unlink gone.txt (a lower file)");
    fs::remove_file(mnt.join("d/x")).expect("unlink d/x (needs a directory copy-up)");
    fs::remove_dir_all(mnt.join("e")).expect("rm -r e (a lower directory)");
    let check = |when: &str| {
        assert_eq!(sorted_names(&mnt), ["d", "keep.txt"], "merged root {when}");
        assert_eq!(sorted_names(&mnt.join("d")), ["y"], "merged d/ {when}");
        assert!(
            fs::symlink_metadata(mnt.join("gone.txt")).is_err(),
            "gone.txt is visible {when}"
        );
        assert!(
            fs::symlink_metadata(mnt.join("e")).is_err(),
            "e is visible {when}"
        );
        assert_eq!(
            fs::read(mnt.join("keep.txt")).expect("read keep"),
            b"lower keep"
        );
    };
    check("after the deletions");
    for (dir, name) in [("", "gone.txt"), ("", "e"), ("d", "x")] {
        let wh = upper.join(dir).join(format!(".wh.{name}"));
        assert!(
            wh.exists(),
            "no AUFS whiteout {} in the upper (upper/{dir} holds {:?})",
            wh.display(),
            sorted_names(&upper.join(dir))
        );
    }
    drop(d);

    let d = FilteredDaemon::start(&ov, &mnt);
    check("after a remount");
    // Names come back over their AUFS whiteouts, and stay back.
    fs::write(mnt.join("gone.txt"), b"new content")
        .expect("re-create gone.txt over its .wh. whiteout");
    // A new directory in a merged directory (the kernel makes it opaque; here that needs the
    // AUFS marker `.wh..wh..opq` since there are no xattrs).
    fs::create_dir(mnt.join("newdir")).expect("mkdir of a new name in a merged directory");
    fs::remove_dir(mnt.join("newdir")).expect("rmdir newdir");
    fs::create_dir(mnt.join("e")).expect("re-create directory e over its .wh. whiteout");
    fs::write(mnt.join("e/fresh"), b"f").expect("create e/fresh");
    assert_eq!(
        fs::read(mnt.join("gone.txt")).expect("read"),
        b"new content"
    );
    assert_eq!(
        sorted_names(&mnt.join("e")),
        ["fresh"],
        "re-created e/ must not show the old lower e/"
    );
    drop(d);
    let d = FilteredDaemon::start(&ov, &mnt);
    assert_eq!(
        fs::read(mnt.join("gone.txt")).expect("read"),
        b"new content",
        "after a remount"
    );
    assert_eq!(
        sorted_names(&mnt.join("e")),
        ["fresh"],
        "re-created e/ after a remount"
    );
    assert_eq!(sorted_names(&mnt), ["d", "e", "gone.txt", "keep.txt"]);
    fs::remove_file(mnt.join("gone.txt")).expect("delete gone.txt again");
    drop(d);
    let d = FilteredDaemon::start(&ov, &mnt);
    assert_eq!(
        sorted_names(&mnt),
        ["d", "e", "keep.txt"],
        "after the second deletion and a remount"
    );
    let err = d.stderr.text(Duration::ZERO);
    assert!(
        !err.contains("panicked"),
        "the daemon logged a panic:\n{err}"
    );
    drop(d);
    assert_trees_equal(
        "lower before",
        &lower_before,
        "lower after",
        &snapshot_tree(&lower),
    );
}

// ---------------------------------------------------------------------------------------------
// The lower layers are never modified
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Clone)]
struct LowerEntry {
    file_type: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    ino: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Option<u64>,
    link: Option<PathBuf>,
    /// Every xattr (trusted.* included), sorted.
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Everything about a layer but atimes (reads legitimately update those).
fn snapshot_layer(root: &Path) -> BTreeMap<PathBuf, LowerEntry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.mode() & libc::S_IFMT;
        let mut xattrs: Vec<(String, Vec<u8>)> = list_xattrs(&p)
            .unwrap_or_default()
            .into_iter()
            .map(|n| {
                let v = get_xattr(&p, &n).unwrap_or_default();
                (n, v)
            })
            .collect();
        xattrs.sort();
        if md.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir") {
                stack.push(rel.join(e.expect("entry").file_name()));
            }
        }
        out.insert(
            rel,
            LowerEntry {
                file_type: ft,
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                size: if md.is_dir() { 0 } else { md.size() },
                nlink: md.nlink(),
                ino: md.ino(),
                rdev: md.rdev(),
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                content: md.is_file().then(|| fnv64(&fs::read(&p).expect("read"))),
                link: md
                    .file_type()
                    .is_symlink()
                    .then(|| fs::read_link(&p).expect("readlink")),
                xattrs,
            },
        );
    }
    out
}

fn diff_layers(
    a: &BTreeMap<PathBuf, LowerEntry>,
    b: &BTreeMap<PathBuf, LowerEntry>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, x) in a {
        match b.get(k) {
            None => d.push(format!("removed: /{}", k.display())),
            Some(y) if x != y => d.push(format!(
                "changed: /{}\n      before {x:?}\n      after  {y:?}",
                k.display()
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("added: /{}", k.display()));
        }
    }
    d
}

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
    symlink("/etc/passwd", &l1.join("abs"));
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
    let before = (snapshot_layer(&l1), snapshot_layer(&l2));
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
    // Errors that mean a broken daemon rather than a lost race (EIO is also what a caught
    // panic answers).
    let hard = Arc::new(Mutex::new(Vec::<String>::new()));
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
                    if let Err(e) = &r
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EIO) | Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
                        )
                    {
                        hard.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("op{kind:02} on /{}: {e}", rel.display()));
                    }
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
    let hard = hard.lock().map(|h| h.clone()).unwrap_or_default();
    assert!(
        hard.is_empty(),
        "{test}: {} operations failed with EIO/ENOTCONN (first: {:?}); daemon stderr:\n{}",
        hard.len(),
        &hard[..hard.len().min(10)],
        m.stderr()
    );
    assert_no_panic_logged(&m);
    drop(m);
    let after = (snapshot_layer(&l1), snapshot_layer(&l2));
    let mut d = diff_layers(&before.0, &after.0);
    d.extend(
        diff_layers(&before.1, &after.1)
            .into_iter()
            .map(|s| format!("lower2 {s}")),
    );
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
