//! File handles (`name_to_handle_at`, `open_by_handle_at`) and filesystem UUIDs: how the
//! kernel's inode index names lower objects.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::OFlags;

use super::{Errno, SysResult, last_errno, reopen};

/// The largest file handle the kernel hands out (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct HandleBuf {
    bytes: u32,
    kind: i32,
    data: [u8; MAX_HANDLE_SZ],
}

/// The file handle of the object behind `fd` (`name_to_handle_at`): its type and bytes.
pub fn file_handle(fd: BorrowedFd<'_>) -> SysResult<(i32, Vec<u8>)> {
    let mut buf = HandleBuf {
        bytes: MAX_HANDLE_SZ as u32,
        kind: 0,
        data: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a `struct file_handle` header followed by `bytes` bytes of room, the
    // path is an empty C string, and both out-pointers point to live locals.
    let r = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            (&raw mut buf).cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(last_errno());
    }
    let len = (buf.bytes as usize).min(MAX_HANDLE_SZ);
    Ok((buf.kind, buf.data[..len].to_vec()))
}

/// Opens (`O_PATH`) the object a file handle names on the filesystem of `mount_fd`
/// (`open_by_handle_at`; needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, kind: i32, handle: &[u8]) -> SysResult<OwnedFd> {
    if handle.len() > MAX_HANDLE_SZ {
        return Err(Errno::INVAL);
    }
    let mut buf = HandleBuf {
        bytes: handle.len() as u32,
        kind,
        data: [0; MAX_HANDLE_SZ],
    };
    buf.data[..handle.len()].copy_from_slice(handle);
    // An `O_PATH` fd does not name the mount here.
    let mount_fd = reopen(mount_fd, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `buf` is a valid `struct file_handle` whose `bytes` bytes of data follow it.
    let fd = unsafe { libc::open_by_handle_at(mount_fd.as_raw_fd(), (&raw mut buf).cast(), flags) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The UUID of the filesystem holding `dir` (`FS_IOC_GETFSUUID`), when it reports one.
pub fn fs_uuid(dir: BorrowedFd<'_>) -> Option<[u8; 16]> {
    // _IOR(0x15, 0, struct fsuuid2 { __u8 len; __u8 uuid[16]; })
    // `Ioctl` is c_ulong with glibc, c_int with musl: the number as the bit pattern either way.
    const FS_IOC_GETFSUUID: libc::Ioctl = 0x8011_1500_u32 as libc::Ioctl;
    let fd = reopen(dir, OFlags::RDONLY | OFlags::DIRECTORY).ok()?;
    let mut out = [0u8; 17];
    // SAFETY: the ioctl writes exactly `struct fsuuid2` (17 bytes) into `out`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFSUUID, out.as_mut_ptr()) };
    (r == 0 && out[0] == 16).then(|| out[1..].try_into().expect("16 bytes"))
}
