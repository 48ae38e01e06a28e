//! An upper without xattrs where mknod is refused: `whiteout=auto` falls back to AUFS whiteouts.

use super::*;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

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
    assert_tree_unchanged("lower", &lower_before, &lower);
}
