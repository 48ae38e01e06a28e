//! Running one operation on a mount root (optionally as another user).

use super::*;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Running one operation (relative to a mount root, never following a symlink)
// ---------------------------------------------------------------------------------------------

/// Pseudo-errno for "the final component is a symlink; the path-following call was not made"
/// (truncate(2) and chmod(2) follow symlinks, which could leave the mount).
const SKIP_SYMLINK: i32 = -1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Res {
    pub(crate) out: Result<String, i32>,
    /// st_ino of a successful lstat.
    pub(crate) ino: Option<u64>,
}

fn errno_sym(e: i32) -> String {
    let name = match e {
        SKIP_SYMLINK => return "<symlink: not followed>".into(),
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        _ => "",
    };
    format!("{name}({e}: {})", errno_name(Some(e)))
}

pub(crate) fn show_res(r: &Res) -> String {
    match &r.out {
        Ok(s) => format!("Ok({s})"),
        Err(e) => format!("Err({})", errno_sym(*e)),
    }
}

fn run_op(root: &OwnedFd, op: &Op, ino: &mut Option<u64>) -> Result<String, i32> {
    match op {
        Op::Create {
            p,
            mode,
            excl,
            len,
            ch,
            fsync,
        } => {
            let (d, n) = resolve(root, p)?;
            let mut fl = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            if *excl {
                fl |= libc::O_EXCL;
            }
            let fd = openat(&d, &n, fl, *mode)?;
            let w = write_full(fd.as_raw_fd(), &vec![*ch; *len], None)?;
            if *fsync {
                // SAFETY: valid fd.
                cvt(unsafe { libc::fsync(fd.as_raw_fd()) })?;
            }
            Ok(format!("wrote {w}"))
        }
        Op::Append { p, len, ch } => {
            let (d, n) = resolve(root, p)?;
            let fd = openat(&d, &n, libc::O_WRONLY | libc::O_APPEND, 0)?;
            let w = write_full(fd.as_raw_fd(), &vec![*ch; *len], None)?;
            let st = fstat(fd.as_raw_fd())?;
            Ok(format!("wrote {w}, size {}", st.st_size))
        }
        Op::WriteAt { p, off, len, ch } => {
            let (d, n) = resolve(root, p)?;
            let fd = openat(&d, &n, libc::O_WRONLY, 0)?;
            let w = write_full(fd.as_raw_fd(), &vec![*ch; *len], Some(*off as i64))?;
            let st = fstat(fd.as_raw_fd())?;
            Ok(format!("wrote {w}, size {}", st.st_size))
        }
        Op::Truncate { p, len } => {
            let (d, n) = resolve(root, p)?;
            let st = fstatat(&d, &n)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(SKIP_SYMLINK);
            }
            let pp = proc_path(&d, &n);
            // SAFETY: valid C string.
            cvt(unsafe { libc::truncate(pp.as_ptr(), *len as i64) })?;
            Ok(String::new())
        }
        Op::Ftruncate { p, len } => {
            let (d, n) = resolve(root, p)?;
            let fd = openat(&d, &n, libc::O_WRONLY, 0)?;
            // SAFETY: valid fd.
            cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), *len as i64) })?;
            Ok(String::new())
        }
        Op::Fallocate { p, mode, off, len } => {
            let (d, n) = resolve(root, p)?;
            let fd = openat(&d, &n, libc::O_WRONLY, 0)?;
            // SAFETY: valid fd.
            cvt(unsafe { libc::fallocate(fd.as_raw_fd(), *mode, *off as i64, *len as i64) })?;
            let st = fstat(fd.as_raw_fd())?;
            Ok(format!("size {}", st.st_size))
        }
        Op::CopyRange {
            src,
            dst,
            off_in,
            off_out,
            len,
        } => {
            let (d1, n1) = resolve(root, src)?;
            let fi = openat(&d1, &n1, libc::O_RDONLY, 0)?;
            let (d2, n2) = resolve(root, dst)?;
            let fo = openat(&d2, &n2, libc::O_WRONLY, 0)?;
            let mut oi = *off_in as i64;
            let mut oo = *off_out as i64;
            let mut total = 0usize;
            while total < *len {
                // SAFETY: valid fds and offset pointers.
                let r = unsafe {
                    libc::copy_file_range(
                        fi.as_raw_fd(),
                        &mut oi,
                        fo.as_raw_fd(),
                        &mut oo,
                        *len - total,
                        0,
                    )
                };
                let r = cvt_l(r)?;
                if r == 0 {
                    break;
                }
                total += r;
            }
            let st = fstat(fo.as_raw_fd())?;
            Ok(format!("copied {total}, size {}", st.st_size))
        }
        Op::Read { p } => {
            let (d, n) = resolve(root, p)?;
            let fd = openat(&d, &n, libc::O_RDONLY, 0)?;
            let data = read_all(fd.as_raw_fd())?;
            Ok(format!("len {} fnv {:016x}", data.len(), fnv64(&data)))
        }
        Op::Stat { p } => {
            let (d, n) = resolve(root, p)?;
            let st = fstatat(&d, &n)?;
            *ino = Some(st.st_ino);
            Ok(norm_stat(&st))
        }
        Op::Readdir { p } => {
            let (d, n) = resolve(root, p)?;
            let fd = openat(&d, &n, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let mut dir = rustix::fs::Dir::new(fd).map_err(|e| e.raw_os_error())?;
            let mut v = Vec::new();
            while let Some(e) = dir.read() {
                let e = e.map_err(|e| e.raw_os_error())?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name != "." && name != ".." {
                    v.push(format!("{name}:{:?}", e.file_type()));
                }
            }
            v.sort();
            Ok(v.join(" "))
        }
        Op::Readlink { p } => {
            let (d, n) = resolve(root, p)?;
            let mut buf = vec![0u8; 4096];
            // SAFETY: valid fd, C string and buffer.
            let r = cvt_l(unsafe {
                libc::readlinkat(
                    d.as_raw_fd(),
                    n.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            })?;
            Ok(String::from_utf8_lossy(&buf[..r]).into_owned())
        }
        Op::Unlink { p } | Op::Rmdir { p } => {
            let (d, n) = resolve(root, p)?;
            let fl = if matches!(op, Op::Rmdir { .. }) {
                libc::AT_REMOVEDIR
            } else {
                0
            };
            // SAFETY: valid fd and C string.
            cvt(unsafe { libc::unlinkat(d.as_raw_fd(), n.as_ptr(), fl) })?;
            Ok(String::new())
        }
        Op::Mkdir { p, mode } => {
            let (d, n) = resolve(root, p)?;
            // SAFETY: valid fd and C string.
            cvt(unsafe { libc::mkdirat(d.as_raw_fd(), n.as_ptr(), *mode) })?;
            Ok(String::new())
        }
        Op::Rename { src, dst, flags } => {
            let (d1, n1) = resolve(root, src)?;
            let (d2, n2) = resolve(root, dst)?;
            // SAFETY: valid fds and C strings.
            cvt(unsafe {
                libc::renameat2(
                    d1.as_raw_fd(),
                    n1.as_ptr(),
                    d2.as_raw_fd(),
                    n2.as_ptr(),
                    *flags,
                )
            })?;
            Ok(String::new())
        }
        Op::Link { src, dst } => {
            let (d1, n1) = resolve(root, src)?;
            let (d2, n2) = resolve(root, dst)?;
            // SAFETY: valid fds and C strings.
            cvt(unsafe {
                libc::linkat(d1.as_raw_fd(), n1.as_ptr(), d2.as_raw_fd(), n2.as_ptr(), 0)
            })?;
            Ok(String::new())
        }
        Op::Symlink { target, p } => {
            let (d, n) = resolve(root, p)?;
            let t = cs(target);
            // SAFETY: valid fd and C strings.
            cvt(unsafe { libc::symlinkat(t.as_ptr(), d.as_raw_fd(), n.as_ptr()) })?;
            Ok(String::new())
        }
        Op::Chmod { p, mode } => {
            let (d, n) = resolve(root, p)?;
            let st = fstatat(&d, &n)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(SKIP_SYMLINK);
            }
            // SAFETY: valid fd and C string.
            cvt(unsafe { libc::fchmodat(d.as_raw_fd(), n.as_ptr(), *mode, 0) })?;
            Ok(String::new())
        }
        Op::Chown { p, uid, gid } => {
            let (d, n) = resolve(root, p)?;
            // SAFETY: valid fd and C string.
            cvt(unsafe {
                libc::fchownat(
                    d.as_raw_fd(),
                    n.as_ptr(),
                    *uid,
                    *gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
            Ok(String::new())
        }
        Op::Utimens { p, atime, mtime } => {
            let (d, n) = resolve(root, p)?;
            let t = [ts(atime), ts(mtime)];
            // SAFETY: valid fd, C string and two timespecs.
            cvt(unsafe {
                libc::utimensat(
                    d.as_raw_fd(),
                    n.as_ptr(),
                    t.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
            Ok(String::new())
        }
        Op::SetXattr {
            p,
            name,
            value,
            flags,
        } => {
            let (d, n) = resolve(root, p)?;
            let pp = proc_path(&d, &n);
            let nm = cs(name);
            // SAFETY: valid C strings and value buffer.
            cvt(unsafe {
                libc::lsetxattr(
                    pp.as_ptr(),
                    nm.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    *flags,
                )
            })?;
            Ok(String::new())
        }
        Op::RemoveXattr { p, name } => {
            let (d, n) = resolve(root, p)?;
            let pp = proc_path(&d, &n);
            let nm = cs(name);
            // SAFETY: valid C strings.
            cvt(unsafe { libc::lremovexattr(pp.as_ptr(), nm.as_ptr()) })?;
            Ok(String::new())
        }
        Op::GetXattr { p, name } => {
            let (d, n) = resolve(root, p)?;
            let pp = proc_path(&d, &n);
            let nm = cs(name);
            let mut buf = vec![0u8; 65536];
            // SAFETY: valid C strings and buffer.
            let r = cvt_l(unsafe {
                libc::lgetxattr(pp.as_ptr(), nm.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            })?;
            Ok(String::from_utf8_lossy(&buf[..r]).into_owned())
        }
        Op::ListXattr { p } => {
            let (d, n) = resolve(root, p)?;
            let mut v = xattr_list(&proc_path(&d, &n))?;
            if ignored("list-trusted") {
                v.retain(|n| !n.starts_with("trusted."));
            }
            Ok(v.join(" "))
        }
        Op::Mknod { p, node, mode } => {
            let (d, n) = resolve(root, p)?;
            let (fmt, dev) = match node {
                Node::Fifo => (libc::S_IFIFO, 0),
                Node::Chr(a, b) => (libc::S_IFCHR, libc::makedev(*a, *b)),
            };
            // SAFETY: valid fd and C string.
            cvt(unsafe { libc::mknodat(d.as_raw_fd(), n.as_ptr(), fmt | *mode, dev) })?;
            Ok(String::new())
        }
    }
}

// ---- acting as another user on this thread only

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn caps_get() -> [CapData; 2] {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as capget(2) v3 wants.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
    assert_eq!(r, 0, "capget");
    d
}

fn caps_set(d: &[CapData; 2]) {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: header and a two-element data array.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
    assert_eq!(r, 0, "capset");
}

fn thread_setgroups(g: &[libc::gid_t]) {
    // The raw syscall changes only this thread (glibc's setgroups changes every thread).
    // SAFETY: valid array of the given length.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, g.len(), g.as_ptr()) };
    assert_eq!(r, 0, "setgroups");
}

/// For the lifetime of the guard, this thread acts as `uid:gid` (fsuid/fsgid, supplementary
/// groups `[gid]`, no effective capabilities). Both mounts see the same caller.
struct AsUser {
    caps: [CapData; 2],
    groups: Vec<libc::gid_t>,
}

impl AsUser {
    fn enter(uid: u32, gid: u32) -> AsUser {
        let caps = caps_get();
        let mut groups = vec![0 as libc::gid_t; 256];
        // SAFETY: valid buffer.
        let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
        assert!(n >= 0, "getgroups");
        groups.truncate(n as usize);
        thread_setgroups(&[gid]);
        // SAFETY: plain syscalls.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        let mut d = caps;
        d[0].effective = 0;
        d[1].effective = 0;
        caps_set(&d);
        AsUser { caps, groups }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        caps_set(&self.caps);
        // SAFETY: plain syscalls.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
        thread_setgroups(&self.groups);
    }
}

pub(crate) fn exec_step(root: &Path, step: &Step) -> Res {
    let _who = match step.who {
        Who::Root => None,
        Who::User(u, g) => Some(AsUser::enter(u, g)),
    };
    let mut ino = None;
    let out = open_root(root).and_then(|r| run_op(&r, &step.op, &mut ino));
    Res { out, ino }
}
