//! Extended attributes through the mount (the kernel's xattrs.c): overlay-private names are
//! never visible, listable or settable.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::overlay::Overlay;
use crate::stat_override;
use crate::sys::{self, Errno, SysResult};
use crate::whiteout;

/// What a getxattr/listxattr request gets back.
pub enum XattrReply {
    /// The caller asked for the size only.
    Size(u32),
    Data(Vec<u8>),
}

fn sized(data: Vec<u8>, size: u32) -> SysResult<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(data.len() as u32))
    } else if data.len() > size as usize {
        Err(Errno::RANGE)
    } else {
        Ok(XattrReply::Data(data))
    }
}

impl Overlay {
    /// Names users may not see or touch through the mount: overlay-private ones, the
    /// owner-and-mode xattrs where a layer keeps owners and modes in them, and POSIX ACLs
    /// with `noacl`.
    fn hidden(&self, name: &OsStr) -> bool {
        whiteout::is_private_xattr(name)
            || (self.any_stat_xattr() && stat_override::is_stat_xattr(name))
            || (self.noacl && name.as_bytes().starts_with(b"system.posix_acl_"))
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> SysResult<XattrReply> {
        if self.hidden(name) {
            // As the kernel: hidden names read as absent (setting them is EOPNOTSUPP).
            return Err(Errno::NODATA);
        }
        let node = self.node(id)?;
        let state = node.read();
        let value = sys::get_xattr_raw(state.top_fd()?.as_fd(), name, size as usize)?;
        if size == 0 {
            return Ok(XattrReply::Size(value.len() as u32));
        }
        Ok(XattrReply::Data(value))
    }

    /// `caller_uid`: the kernel lists `trusted.*` names only to privileged callers.
    pub fn listxattr(&self, id: u64, size: u32, caller_uid: u32) -> SysResult<XattrReply> {
        let node = self.node(id)?;
        let names = sys::list_xattr(node.read().top_fd()?.as_fd())?;
        let mut out = Vec::new();
        let visible = |n: &&std::ffi::OsString| {
            !self.hidden(n) && (caller_uid == 0 || !n.as_bytes().starts_with(b"trusted."))
        };
        for name in names.iter().filter(visible) {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        sized(out, size)
    }
}

impl Overlay {
    /// The node behind `id`, copied up so its xattr `name` may change.
    fn xattr_target(&self, id: u64, name: &OsStr) -> SysResult<std::sync::Arc<crate::inode::Node>> {
        if self.hidden(name) {
            return Err(Errno::OPNOTSUPP);
        }
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let node = self.node(id)?;
        self.copy_up(&node)?;
        Ok(node)
    }

    pub fn setxattr(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
        let node = self.xattr_target(id, name)?;
        sys::set_xattr(node.read().top_fd()?.as_fd(), name, value, flags)
    }

    pub fn removexattr(&self, id: u64, name: &OsStr) -> SysResult<()> {
        let node = self.xattr_target(id, name)?;
        sys::remove_xattr(node.read().top_fd()?.as_fd(), name)
    }
}
