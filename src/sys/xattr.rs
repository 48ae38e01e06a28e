//! Extended attributes of objects behind (`O_PATH`) fds, through `/proc/self/fd/N`.

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use super::{Errno, SysResult, proc_fd_path};
/// Value of xattr `name` of the object behind `fd`; `Ok(None)` if it has none of that name.
pub fn get_xattr(fd: BorrowedFd<'_>, name: &str) -> SysResult<Option<Vec<u8>>> {
    let path = proc_fd_path(fd);
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::getxattr(path.as_c_str(), name, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) => return Ok(None),
            Err(Errno::RANGE) => {
                let len = rustix::fs::getxattr_query(path.as_c_str(), name)?;
                buf.resize(len.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Raw xattr read for the FUSE getxattr reply: `size == 0` asks only for the length.
pub fn get_xattr_raw(fd: BorrowedFd<'_>, name: &OsStr, size: usize) -> SysResult<Vec<u8>> {
    let path = proc_fd_path(fd);
    if size == 0 {
        let len = rustix::fs::getxattr_query(path.as_c_str(), name)?;
        return Ok(vec![0; len]);
    }
    let mut buf = vec![0u8; size];
    let len = rustix::fs::getxattr(path.as_c_str(), name, &mut buf[..])?;
    buf.truncate(len);
    Ok(buf)
}

/// The xattr names of the object behind `fd`.
pub fn list_xattr(fd: BorrowedFd<'_>) -> SysResult<Vec<OsString>> {
    let path = proc_fd_path(fd);
    let mut buf = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::listxattr(path.as_c_str(), &mut buf[..]) {
            Ok(len) => break len,
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(Errno::RANGE) => {
                let len = rustix::fs::listxattr_query(path.as_c_str())?;
                buf.resize(len.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    };
    Ok(buf[..len]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsStr::from_bytes(n).to_owned())
        .collect())
}

pub fn set_xattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
    let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    rustix::fs::setxattr(proc_fd_path(fd).as_c_str(), name, value, flags)
}

pub fn remove_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::removexattr(proc_fd_path(fd).as_c_str(), name)
}
