//! Lower files read through FUSE passthrough (as root), and what happens to their open files
//! when the file is copied up (docs/design.md, "Copy-up"; docs/comparison.md):
//!
//! - a read-only fd opened before the copy-up keeps reading the lower data (as an mmap of it
//!   does under the kernel's overlayfs), while every later open sees the new data;
//! - the copy-up may come from an open for writing, chmod, truncate, utimes (by path) or
//!   fchmod/futimens/fsetxattr through the old fd itself: all succeed, and the change shows
//!   through the path;
//! - hard-linked lower files stay one file with one inode number through all their names;
//! - a shared mmap of the lower file keeps the lower data, a rename keeps the open fd working;
//! - `st_ino` never changes across the copy-up.
//!
//! Needs root (FUSE passthrough needs CAP_SYS_ADMIN; unprivileged mounts keep the old
//! semantics, tested in tests/write_path.rs).

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

const BODY_SECS: u64 = 60;
const LOWER: &str = "lower data\n";

/// Root, and a kernel with FUSE passthrough (Linux 6.9); else a visible skip.
fn require_passthrough(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 9) {
        skip_or_fail(test, "the kernel has no FUSE passthrough (Linux < 6.9)");
        return false;
    }
    true
}

/// A scratch root whose lower holds `f` (and the hard link `g` of it), mounted as root.
fn mounted() -> (tempfile::TempDir, OvlfsMount) {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    for d in ["lower", "upper", "work", "mnt"] {
        mkdirs(&root.join(d));
    }
    write_file(&root.join("lower/f"), LOWER);
    fs::hard_link(root.join("lower/f"), root.join("lower/g")).expect("lower hard link");
    let m = Ovlfs::new([root.join("lower")])
        .upper(root.join("upper"), root.join("work"))
        .opt("passthrough=on")
        .mount(&root.join("mnt"));
    (t, m)
}

fn read_at_start(f: &mut fs::File) -> String {
    f.seek(SeekFrom::Start(0)).expect("seek");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    s
}

fn write_through_new_fd(p: &Path, data: &[u8]) {
    let mut w = OpenOptions::new()
        .write(true)
        .open(p)
        .expect("open for write while a reader is open");
    w.write_all(data).expect("write");
}

fn truncate_path(p: &Path, len: i64) -> std::io::Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::truncate(c.as_ptr(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn reader_keeps_lower_data_across_a_write_copy_up() {
    if !require_passthrough("reader_keeps_lower_data_across_a_write_copy_up") {
        return;
    }
    let (t, m) = mounted();
    let p = m.join("f");
    let ino_before = fs::metadata(&p).expect("stat").ino();
    let (old, new, ino_path, ino_fd, again) = with_watchdog(BODY_SECS, m.path(), move || {
        let mut ro = fs::File::open(&p).expect("open read-only");
        assert_eq!(read_at_start(&mut ro), LOWER);
        write_through_new_fd(&p, b"UPPER");
        let old = read_at_start(&mut ro);
        let new = fs::read_to_string(&p).expect("read through a new open");
        let ino_path = fs::metadata(&p).expect("stat path").ino();
        let ino_fd = ro.metadata().expect("fstat old fd").ino();
        drop(ro);
        // Once the old fd is gone, everything reads the upper copy.
        write_through_new_fd(&p, b"AGAIN");
        let again = fs::read_to_string(&p).expect("read after the reader closed");
        (old, new, ino_path, ino_fd, again)
    });
    assert_eq!(
        old, LOWER,
        "an fd opened before the copy-up reads the lower data"
    );
    assert_eq!(new, "UPPER data\n", "a new open reads the upper copy");
    assert_eq!(again, "AGAIN data\n");
    assert_eq!(
        ino_path, ino_before,
        "st_ino must not change across the copy-up"
    );
    assert_eq!(ino_fd, ino_before, "the old fd shows the same st_ino");
    assert_eq!(
        fs::read_to_string(t.path().join("lower/f")).unwrap(),
        LOWER,
        "the lower file is untouched"
    );
    m.assert_no_panic_logged("write copy-up with a reader open");
}

#[test]
fn path_chmod_truncate_utimes_with_a_reader_open() {
    if !require_passthrough("path_chmod_truncate_utimes_with_a_reader_open") {
        return;
    }
    let (_t, m) = mounted();
    let p = m.join("f");
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        let mut ro = fs::File::open(&p).expect("open read-only");
        assert_eq!(read_at_start(&mut ro), LOWER);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod by path");
        let mode = fs::metadata(&p).expect("stat").mode() & 0o7777;
        truncate_path(&p, 5).expect("truncate by path");
        let size = fs::metadata(&p).expect("stat").len();
        let new = fs::read_to_string(&p).expect("read through a new open");
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::open(&p)
            .and_then(|f| f.set_modified(mtime))
            .expect("utimes through a new fd");
        let mtime_seen = fs::metadata(&p).expect("stat").mtime();
        let old = read_at_start(&mut ro);
        (mode, size, new, mtime_seen, old)
    });
    assert_eq!(seen.0, 0o600, "chmod by path shows");
    assert_eq!(seen.1, 5, "truncate by path shows");
    assert_eq!(seen.2, "lower", "a new open reads the truncated upper copy");
    assert_eq!(seen.3, 1_000_000, "utimes shows");
    assert_eq!(seen.4, LOWER, "the old fd keeps reading the lower data");
}

#[test]
fn fd_based_setattr_through_the_old_fd() {
    if !require_passthrough("fd_based_setattr_through_the_old_fd") {
        return;
    }
    let (t, m) = mounted();
    let p = m.join("f");
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        let mut ro = fs::File::open(&p).expect("open read-only");
        assert_eq!(read_at_start(&mut ro), LOWER);
        // fchmod through the fd opened before: copies the file up.
        ro.set_permissions(fs::Permissions::from_mode(0o640))
            .expect("fchmod through the old fd");
        let mode_path = fs::metadata(&p).expect("stat").mode() & 0o7777;
        let mode_fd = ro.metadata().expect("fstat").mode() & 0o7777;
        rustix::fs::fsetxattr(&ro, "user.viafd", b"v", rustix::fs::XattrFlags::empty())
            .expect("fsetxattr through the old fd");
        let xattr = get_xattr(&p, "user.viafd").expect("getxattr by path");
        write_through_new_fd(&p, b"UPPER");
        // A later fchmod through the old fd still reaches the (now written) upper copy.
        ro.set_permissions(fs::Permissions::from_mode(0o604))
            .expect("second fchmod through the old fd");
        let mode_after = fs::metadata(&p).expect("stat").mode() & 0o7777;
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000);
        ro.set_modified(mtime).expect("futimens through the old fd");
        let mtime_path = fs::metadata(&p).expect("stat").mtime();
        let new = fs::read_to_string(&p).expect("read through a new open");
        let old = read_at_start(&mut ro);
        (mode_path, mode_fd, xattr, mode_after, mtime_path, new, old)
    });
    assert_eq!(seen.0, 0o640, "fchmod shows through the path");
    assert_eq!(seen.1, 0o640, "fchmod shows through the fd");
    assert_eq!(seen.2, b"v", "fsetxattr shows through the path");
    assert_eq!(seen.3, 0o604, "a later fchmod shows through the path");
    assert_eq!(seen.4, 2_000_000, "futimens shows through the path");
    assert_eq!(seen.5, "UPPER data\n");
    assert_eq!(seen.6, LOWER, "the old fd keeps reading the lower data");
    let upper = fs::metadata(t.path().join("upper/f")).expect("copied up");
    assert_eq!(upper.mode() & 0o7777, 0o604);
}

#[test]
fn hard_linked_lower_file_stays_one_file() {
    if !require_passthrough("hard_linked_lower_file_stays_one_file") {
        return;
    }
    let (t, m) = mounted();
    let (f, g) = (m.join("f"), m.join("g"));
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        let ino = fs::metadata(&f).expect("stat f").ino();
        assert_eq!(fs::metadata(&g).expect("stat g").ino(), ino);
        let mut ro_f = fs::File::open(&f).expect("open f");
        let mut ro_g = fs::File::open(&g).expect("open g");
        assert_eq!(read_at_start(&mut ro_f), LOWER);
        // Copy-up through the other name.
        write_through_new_fd(&g, b"UPPER");
        let via_f = fs::read_to_string(&f).expect("read f");
        let via_g = fs::read_to_string(&g).expect("read g");
        // And through the first name again: the two names stay linked.
        write_through_new_fd(&f, b"FFFFF");
        let via_g2 = fs::read_to_string(&g).expect("read g again");
        let (mf, mg) = (fs::metadata(&f).unwrap(), fs::metadata(&g).unwrap());
        let old = (read_at_start(&mut ro_f), read_at_start(&mut ro_g));
        (
            via_f,
            via_g,
            via_g2,
            (ino, mf.ino(), mg.ino()),
            (mf.nlink(), mg.nlink()),
            (mf.len(), mg.len()),
            old,
        )
    });
    assert_eq!(seen.0, "UPPER data\n", "the other name shows the write");
    assert_eq!(seen.1, "UPPER data\n");
    assert_eq!(seen.2, "FFFFF data\n", "the names stay linked");
    assert_eq!(seen.3.1, seen.3.0, "st_ino of f unchanged");
    assert_eq!(seen.3.2, seen.3.0, "st_ino of g unchanged");
    assert_eq!(seen.4, (2, 2), "link counts");
    assert_eq!(seen.5, (11, 11), "sizes");
    assert_eq!(seen.6, (LOWER.to_string(), LOWER.to_string()));
    let uf = fs::metadata(t.path().join("upper/f")).expect("f copied up");
    let ug = fs::metadata(t.path().join("upper/g")).expect("g copied up");
    assert_eq!(uf.ino(), ug.ino(), "linked in the upper");
}

#[test]
fn shared_mmap_of_a_lower_file_keeps_the_lower_data() {
    if !require_passthrough("shared_mmap_of_a_lower_file_keeps_the_lower_data") {
        return;
    }
    let (_t, m) = mounted();
    let p = m.join("f");
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        use std::os::fd::AsRawFd;
        let ro = fs::File::open(&p).expect("open read-only");
        let len = LOWER.len();
        // SAFETY: a fresh shared read-only mapping of an open file; unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                ro.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of the lower file");
        let mapped = || {
            // SAFETY: `ptr` maps `len` readable bytes until the munmap below.
            let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        let before = mapped();
        write_through_new_fd(&p, b"UPPER");
        let after = mapped();
        let new = fs::read_to_string(&p).expect("read through a new open");
        // A new shared mapping maps the upper copy.
        let fresh = fs::File::open(&p).expect("reopen");
        // SAFETY: as above; unmapped below.
        let ptr2 = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fresh.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr2, libc::MAP_FAILED, "mmap of the upper copy");
        // SAFETY: `ptr2` maps `len` readable bytes.
        let fresh_map =
            String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(ptr2 as *const u8, len) })
                .into_owned();
        // SAFETY: both mappings were made above with these lengths.
        unsafe {
            libc::munmap(ptr, len);
            libc::munmap(ptr2, len);
        }
        (before, after, new, fresh_map)
    });
    assert_eq!(seen.0, LOWER);
    assert_eq!(
        seen.1, LOWER,
        "a mapping made before the copy-up keeps the lower data"
    );
    assert_eq!(seen.2, "UPPER data\n");
    assert_eq!(seen.3, "UPPER data\n", "a new mapping shows the upper copy");
}

#[test]
fn rename_with_a_reader_open_then_copy_up() {
    if !require_passthrough("rename_with_a_reader_open_then_copy_up") {
        return;
    }
    let (_t, m) = mounted();
    let (p, q) = (m.join("f"), m.join("renamed"));
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        let ino = fs::metadata(&p).expect("stat").ino();
        let mut ro = fs::File::open(&p).expect("open read-only");
        assert_eq!(read_at_start(&mut ro), LOWER);
        fs::rename(&p, &q).expect("rename with a reader open");
        write_through_new_fd(&q, b"UPPER");
        let new = fs::read_to_string(&q).expect("read the renamed file");
        let gone = fs::metadata(&p).is_err();
        let ino_after = fs::metadata(&q).expect("stat renamed").ino();
        (read_at_start(&mut ro), new, gone, ino, ino_after)
    });
    assert_eq!(seen.0, LOWER, "the old fd keeps reading the lower data");
    assert_eq!(seen.1, "UPPER data\n");
    assert!(seen.2, "the old name is gone");
    assert_eq!(seen.3, seen.4, "st_ino kept across rename and copy-up");
}

/// Many readers and writers of one lower file at once: every open succeeds, nothing hangs,
/// and in the end every name and new open agree.
#[test]
fn concurrent_readers_and_copy_ups() {
    if !require_passthrough("concurrent_readers_and_copy_ups") {
        return;
    }
    let (_t, m) = mounted();
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let mnt = mnt.clone();
                std::thread::spawn(move || {
                    for n in 0..50 {
                        let name = if (i + n) % 2 == 0 { "f" } else { "g" };
                        let p = mnt.join(name);
                        let mut ro = fs::File::open(&p).expect("open for reading");
                        let mut s = String::new();
                        ro.read_to_string(&mut s).expect("read");
                        assert_eq!(s.len(), LOWER.len(), "size stays 11: {s:?}");
                        if n % 5 == i % 5 {
                            write_through_new_fd(&p, format!("T{i}{:03}", n % 1000).as_bytes());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker");
        }
        let f = fs::read_to_string(mnt.join("f")).expect("read f");
        let g = fs::read_to_string(mnt.join("g")).expect("read g");
        assert_eq!(f, g, "both names show one file");
        assert!(f.starts_with('T'), "the last write shows: {f:?}");
    });
    m.assert_no_panic_logged("concurrent readers and copy-ups");
}

/// A listing (readdirplus) after a copy-up that kept the old dentry (chmod by path) gives the
/// successor's node for the name: the names, modes and inode numbers stay right, and a write
/// open of the name works.
#[test]
fn listing_after_a_copy_up_with_a_reader_open() {
    if !require_passthrough("listing_after_a_copy_up_with_a_reader_open") {
        return;
    }
    let (_t, m) = mounted();
    let mnt = m.path().to_path_buf();
    let seen = with_watchdog(BODY_SECS, m.path(), move || {
        let p = mnt.join("f");
        let ino = fs::metadata(&p).expect("stat").ino();
        let mut ro = fs::File::open(&p).expect("open read-only");
        assert_eq!(read_at_start(&mut ro), LOWER);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod by path");
        let mut listed = Vec::new();
        for entry in fs::read_dir(&mnt).expect("readdir") {
            let entry = entry.expect("entry");
            let md = entry.metadata().expect("lstat of a listed entry");
            listed.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.ino(),
                md.ino(),
                md.mode() & 0o7777,
            ));
        }
        listed.sort();
        write_through_new_fd(&p, b"UPPER");
        let new = fs::read_to_string(&p).expect("read through a new open");
        let g = fs::read_to_string(mnt.join("g")).expect("read the other name");
        (ino, listed, new, g, read_at_start(&mut ro))
    });
    let (ino, listed, new, g, old) = seen;
    let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["f", "g"]);
    for (name, d_ino, st_ino, mode) in &listed {
        assert_eq!(*d_ino, ino, "d_ino of {name}");
        assert_eq!(*st_ino, ino, "st_ino of {name}");
        assert_eq!(*mode, 0o600, "mode of {name} (one file)");
    }
    assert_eq!(new, "UPPER data\n");
    assert_eq!(g, "UPPER data\n", "the hard link shows the write");
    assert_eq!(old, LOWER);
}
