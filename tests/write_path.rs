//! Focused write-path tests: sparse copy-up keeps holes, an fd opened read-only
//! before copy-up sees the data written after it where lower files are served by the daemon
//! (without passthrough; with it, such an fd keeps the lower data: tests/lower_passthrough.rs),
//! a 0/0 device cannot be made through the
//! mount, and an upper written with `whiteout=xattr` serves as a middle lower layer of the
//! kernel's overlayfs; chardev whiteouts share one inode, as the kernel writes them; a second
//! writer that must clear setgid can open a file another process holds open.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

const BODY_SECS: u64 = 60;

fn layers(root: &Path) {
    for d in ["lower", "upper", "work", "mnt"] {
        mkdirs(&root.join(d));
    }
}

/// A scratch root with `lower`, `upper`, `work` and `mnt`, `lower` filled by `fill`, mounted
/// with `opts`.
fn mounted(fill: impl FnOnce(&Path), opts: &[&str]) -> (tempfile::TempDir, OvlfsMount) {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    fill(&root.join("lower"));
    let mut o = Ovlfs::new([root.join("lower")]).upper(root.join("upper"), root.join("work"));
    for opt in opts {
        o = o.opt(opt);
    }
    let m = o.mount(&root.join("mnt"));
    (t, m)
}

#[test]
fn sparse_file_stays_sparse_after_copy_up() {
    if !require_root("sparse_file_stays_sparse_after_copy_up") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    // 1 GiB apparent size, one 4 KiB data block in the middle.
    let lower = root.join("lower/sparse");
    let mut f = fs::File::create(&lower).expect("create sparse");
    f.seek(SeekFrom::Start(512 << 20)).unwrap();
    f.write_all(&[7u8; 4096]).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let m = Ovlfs::new([root.join("lower")])
        .upper(root.join("upper"), root.join("work"))
        .mount(&root.join("mnt"));
    let p = m.join("sparse");
    with_watchdog(BODY_SECS, m.path(), move || {
        let mut f = OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("open for append");
        f.write_all(b"!").expect("append one byte");
    });
    let upper = fs::metadata(root.join("upper/sparse")).expect("copied up");
    assert_eq!(upper.len(), (1 << 30) + 1, "size after append");
    // A full copy would allocate 1 GiB; the holes must stay holes.
    assert!(
        upper.blocks() * 512 < 1 << 20,
        "upper copy allocates {} bytes: holes were filled",
        upper.blocks() * 512
    );
    let mut data = vec![0u8; 4096];
    let mut f = fs::File::open(root.join("upper/sparse")).unwrap();
    f.seek(SeekFrom::Start(512 << 20)).unwrap();
    f.read_exact(&mut data).unwrap();
    assert!(data.iter().all(|b| *b == 7), "data block copied");
}

/// Without passthrough (every unprivileged mount) lower files are read through the daemon,
/// which reads the upper copy once there is one.
#[test]
fn fd_opened_before_copy_up_sees_later_writes_without_passthrough() {
    if !require_root("fd_opened_before_copy_up_sees_later_writes_without_passthrough") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    write_file(&root.join("lower/f"), "lower data\n");
    let m = Ovlfs::new([root.join("lower")])
        .upper(root.join("upper"), root.join("work"))
        .opt("passthrough=off")
        .mount(&root.join("mnt"));
    let p = m.join("f");
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        let mut ro = fs::File::open(&p).expect("open read-only");
        let mut before = String::new();
        ro.read_to_string(&mut before).unwrap();
        let mut w = OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open for write");
        w.write_all(b"UPPER").expect("write after copy-up");
        drop(w);
        ro.seek(SeekFrom::Start(0)).unwrap();
        let mut after = String::new();
        ro.read_to_string(&mut after).unwrap();
        (before, after)
    });
    assert_eq!(seen.0, "lower data\n");
    assert_eq!(
        seen.1, "UPPER data\n",
        "the old read-only fd must see the copy-up"
    );
    assert_eq!(
        fs::read_to_string(root.join("lower/f")).unwrap(),
        "lower data\n"
    );
}

#[test]
fn zero_zero_device_is_refused_through_the_mount() {
    if !require_root("zero_zero_device_is_refused_through_the_mount") {
        return;
    }
    let (t, m) = mounted(|_| {}, &[]);
    let root = t.path();
    let p = m.join("wh");
    let err = with_watchdog(BODY_SECS, m.path(), move || {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
    });
    assert_eq!(err, Err(rustix::io::Errno::PERM), "0/0 mknod must be EPERM");
    assert!(fs::symlink_metadata(root.join("upper/wh")).is_err());
}

#[test]
fn xattr_whiteout_upper_serves_as_a_kernel_middle_lower() {
    if !require_root("xattr_whiteout_upper_serves_as_a_kernel_middle_lower")
        || !require_kernel_overlay("xattr_whiteout_upper_serves_as_a_kernel_middle_lower")
    {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    write_file(&root.join("lower/gone"), "x");
    write_file(&root.join("lower/d/gone"), "x");
    write_file(&root.join("lower/d/kept"), "k");
    {
        let m = Ovlfs::new([root.join("lower")])
            .upper(root.join("upper"), root.join("work"))
            .opt("whiteout=xattr")
            .mount(&root.join("mnt"));
        let (a, b) = (m.join("gone"), m.join("d/gone"));
        with_watchdog(BODY_SECS, m.path(), move || {
            fs::remove_file(&a).expect("rm gone");
            fs::remove_file(&b).expect("rm d/gone");
        });
    }
    // The ovlfs upper in the middle: a fresh top layer above it, the old lower below.
    let top = root.join("top");
    write_file(&top.join("top-file"), "t");
    let kmnt = root.join("kmnt");
    mkdirs(&kmnt);
    let upper = root.join("upper");
    let lower = root.join("lower");
    let _k = KernelOverlay::mount(&[&top, &upper, &lower], None, &[], &kmnt);
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&kmnt), vec!["d", "top-file"]);
    assert_eq!(names(&kmnt.join("d")), vec!["kept"]);
    assert!(fs::symlink_metadata(kmnt.join("gone")).is_err());
    assert!(fs::symlink_metadata(kmnt.join("d/gone")).is_err());
}

/// Chardev whiteouts are hard links of one 0/0 device, as the kernel's overlayfs writes them;
/// the kernel reads such an upper (fresh workdir) with the names still deleted.
#[test]
fn chardev_whiteouts_share_one_inode_and_the_kernel_reads_them() {
    const TEST: &str = "chardev_whiteouts_share_one_inode_and_the_kernel_reads_them";
    if !require_root(TEST) || !require_kernel_overlay(TEST) {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    for name in ["a", "b", "d/c", "d/kept"] {
        write_file(&root.join("lower").join(name), name);
    }
    {
        let m = Ovlfs::new([root.join("lower")])
            .upper(root.join("upper"), root.join("work"))
            .mount(&root.join("mnt"));
        let mnt = m.path().to_path_buf();
        with_watchdog(BODY_SECS, m.path(), move || {
            for name in ["a", "b", "d/c"] {
                fs::remove_file(mnt.join(name)).expect("rm");
            }
        });
    }
    let upper = root.join("upper");
    let whiteouts: Vec<fs::Metadata> = ["a", "b", "d/c"]
        .iter()
        .map(|n| fs::symlink_metadata(upper.join(n)).expect("whiteout in the upper"))
        .collect();
    for (n, md) in ["a", "b", "d/c"].iter().zip(&whiteouts) {
        assert_eq!(
            md.mode() & libc::S_IFMT,
            libc::S_IFCHR,
            "{n}: not a chardev"
        );
        assert_eq!(md.rdev(), 0, "{n}: not a 0/0 device");
    }
    assert!(
        whiteouts.iter().all(|md| md.ino() == whiteouts[0].ino()),
        "whiteouts are separate inodes"
    );
    assert!(whiteouts[0].nlink() >= 3, "nlink {}", whiteouts[0].nlink());
    let kmnt = root.join("kmnt");
    let kwork = root.join("kwork");
    mkdirs(&kmnt);
    mkdirs(&kwork);
    let lower = root.join("lower");
    let _k = KernelOverlay::mount(&[&lower], Some((&upper, &kwork)), &[], &kmnt);
    assert_eq!(sorted_names(&kmnt), vec!["d"]);
    assert_eq!(sorted_names(&kmnt.join("d")), vec!["kept"]);
}

/// While one process has an upper file open (FUSE passthrough as root), another user who
/// must not keep its setgid bit (a non-member writing a setgid file without group-execute)
/// opens it for writing too. The kernel accepts only passthrough opens sharing the first
/// backing file while it is open, so this open must join them: it succeeds, the write lands,
/// and setgid is cleared as ext4 would.
#[test]
fn write_open_by_non_member_while_the_file_is_open_elsewhere() {
    const TEST: &str = "write_open_by_non_member_while_the_file_is_open_elsewhere";
    if !require_root(TEST) {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    layers(root);
    let lower_file = root.join("lower/f");
    write_file(&lower_file, "data ");
    fs::set_permissions(&lower_file, fs::Permissions::from_mode(0o2666)).expect("chmod");
    let m = Ovlfs::new([root.join("lower")])
        .upper(root.join("upper"), root.join("work"))
        .mount(&root.join("mnt"));
    let f = m.join("f");
    let out = with_watchdog(BODY_SECS, m.path(), move || {
        let mut held = OpenOptions::new()
            .append(true)
            .open(&f)
            .expect("open as root");
        held.write_all(b"root ").expect("write as root");
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"])
            .args(["sh", "-c", "printf user >> \"$0\""])
            .arg(&f);
        let out = run_cmd(&mut c, std::time::Duration::from_secs(30)).expect("setpriv");
        drop(held);
        (
            out,
            fs::read(&f),
            fs::metadata(&f).map(|md| md.mode() & 0o7777),
        )
    });
    let (user, content, mode) = out;
    assert!(
        user.success(),
        "the second writer's open failed while the file was open: {}",
        user.stderr.trim()
    );
    assert_eq!(content.expect("read back"), b"data root user");
    assert_eq!(mode.expect("stat"), 0o666, "setgid not cleared");
}

/// With the writeback cache (root with `passthrough=off`), a file created write-only, grown,
/// then written one byte into a page that holds data: the kernel reads the page through the
/// creating handle, which must therefore be readable by the daemon.
#[test]
fn partial_write_through_a_write_only_create_handle() {
    if !require_root("partial_write_through_a_write_only_create_handle") {
        return;
    }
    let (_t, m) = mounted(|_| {}, &["passthrough=off"]);
    let p = m.join("f");
    with_watchdog(BODY_SECS, m.path(), move || {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .expect("create write-only");
        f.set_len(8192).expect("ftruncate 8192");
        f.write_at(b"x", 100).expect("one byte at offset 100");
        drop(f);
        let data = fs::read(&p).expect("read back");
        assert_eq!(data.len(), 8192);
        assert_eq!(data[100], b'x');
        assert!(data[..100].iter().all(|&b| b == 0));
    });
}

/// A copy-up of a big file does not hold up the node's other requests: attributes (with
/// `timeout=0`, so every stat reaches the daemon) and reads through an fd opened before the
/// copy-up answer while the data is still being copied.
#[test]
fn stat_and_reads_do_not_wait_for_a_copy_up() {
    if !require_root("stat_and_reads_do_not_wait_for_a_copy_up") {
        return;
    }
    // Real data (not holes), so the copy takes a while.
    let fill = |lower: &Path| {
        let mut f = fs::File::create(lower.join("big")).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..768 {
            f.write_all(&chunk).unwrap();
        }
    };
    let (_t, m) = mounted(fill, &["timeout=0"]);
    let p = m.join("big");
    with_watchdog(BODY_SECS, m.path(), move || {
        use std::os::unix::fs::FileExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        let reader = fs::File::open(&p).expect("open for reading before the copy-up");
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let f = OpenOptions::new().append(true).open(&p);
                let took = start.elapsed();
                done.store(true, Ordering::SeqCst);
                f.expect("open for append (copy-up)");
                took
            })
        };
        let mut slowest = Duration::ZERO;
        let mut probes = 0;
        let mut buf = [0u8; 4096];
        while !done.load(Ordering::SeqCst) {
            let start = Instant::now();
            fs::metadata(&p).expect("stat during the copy-up");
            reader
                .read_at(&mut buf, 0)
                .expect("read during the copy-up");
            slowest = slowest.max(start.elapsed());
            probes += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        let copy = writer.join().expect("writer");
        assert!(
            copy > Duration::from_millis(150),
            "the copy-up took only {copy:?}: too fast to tell anything"
        );
        assert!(
            probes >= 3 && slowest < copy / 2,
            "a stat or read waited {slowest:?} during a {copy:?} copy-up ({probes} probes)"
        );
    });
}

/// Reads answered by the daemon (lower files, and every file with `passthrough=off`) return
/// the file's bytes at every size and offset: whole files at and around page and request
/// sizes, reads that cross the end of the file, and `O_DIRECT` reads as large as a request
/// can be (spliced replies fall back to copying where a pipe cannot hold them); `O_DIRECT`
/// writes land.
#[test]
fn daemon_reads_return_the_file_bytes() {
    if !require_root("daemon_reads_return_the_file_bytes") {
        return;
    }
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let sizes = [0usize, 1, 4095, 4096, 4097, 131_077, 1 << 20, (3 << 20) + 7];
    let body = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 + i / 4096) as u8).collect() };
    for opts in [&["passthrough=off"][..], &[][..]] {
        let (_t, m) = mounted(
            |lower| {
                for n in sizes {
                    fs::write(lower.join(format!("f{n}")), body(n)).unwrap();
                }
            },
            opts,
        );
        let dir = m.path().to_path_buf();
        with_watchdog(BODY_SECS, m.path(), move || {
            for n in sizes {
                let p = dir.join(format!("f{n}"));
                let want = body(n);
                assert_eq!(fs::read(&p).unwrap(), want, "{opts:?}: whole f{n}");
                let f = fs::File::open(&p).unwrap();
                for (off, len) in [(0, 10), (n.saturating_sub(3), 4096), (n / 2, 200_000)] {
                    let mut buf = vec![0u8; len];
                    let got = f.read_at(&mut buf, off as u64).unwrap();
                    let end = (off + len).min(n);
                    assert_eq!(
                        &buf[..got],
                        &want[off.min(n)..end],
                        "{opts:?}: f{n} at {off}"
                    );
                }
                // O_DIRECT: page-aligned buffer and offsets, reads up to the request limit.
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&p)
                    .unwrap();
                let mut raw = vec![0u8; (4 << 20) + 4096];
                let start = raw.as_ptr().align_offset(4096);
                let buf = &mut raw[start..start + (4 << 20)];
                let got = f.read_at(buf, 0).unwrap();
                assert_eq!(&buf[..got], &want[..got], "{opts:?}: O_DIRECT f{n}");
                assert!(
                    got == n || got >= 1 << 20,
                    "{opts:?}: O_DIRECT f{n}: {got} bytes"
                );
            }
            // O_DIRECT writes, to a new file and over a lower one (a copy-up).
            for name in ["new", "f4097"] {
                let p = dir.join(name);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&p)
                    .unwrap();
                let mut raw = vec![0u8; (1 << 20) + 4096];
                let start = raw.as_ptr().align_offset(4096);
                let buf = &mut raw[start..start + (1 << 20)];
                buf.iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = (i % 251) as u8);
                f.write_all_at(buf, 0).unwrap();
                drop(f);
                assert_eq!(
                    fs::read(&p).unwrap(),
                    *buf,
                    "{opts:?}: O_DIRECT write of {name}"
                );
            }
        });
    }
}
