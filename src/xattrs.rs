//! Extended attributes through the mount (the kernel's xattrs.c): the overlay's own names are
//! escaped, as the kernel (≥ 6.7) escapes them, so that overlays can nest; other private names
//! are never visible, listable or settable.

use std::borrow::Cow;
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
    /// Names users may not see or touch through the mount: fuse-overlayfs's private ones, the
    /// owner-and-mode xattrs where a layer keeps owners and modes in them, and POSIX ACLs
    /// with `noacl`. (The overlay's own `NS.overlay.*` names are escaped instead.)
    fn hidden(&self, name: &OsStr) -> bool {
        name.as_bytes().starts_with(b"user.fuseoverlayfs.")
            || (self.any_stat_xattr && stat_override::is_stat_xattr(name))
            || (self.noacl && name.as_bytes().starts_with(b"system.posix_acl_"))
    }

    /// The name an xattr users name through the mount is stored under: `NS.overlay.X` is
    /// escaped (see [`whiteout::escaped`]); `None` for names users may not touch.
    fn stored_name<'a>(&self, name: &'a OsStr) -> Option<Cow<'a, OsStr>> {
        if let Some(escaped) = whiteout::escaped(name) {
            return Some(Cow::Owned(escaped));
        }
        (!self.hidden(name)).then_some(Cow::Borrowed(name))
    }

    /// The name users see for a stored one, or `None` when it stays hidden.
    fn shown_name<'a>(&self, stored: &'a OsStr) -> Option<Cow<'a, OsStr>> {
        if let Some(unescaped) = whiteout::unescaped(stored.as_bytes()) {
            return Some(Cow::Owned(unescaped));
        }
        let private = whiteout::is_private_xattr(stored) || self.hidden(stored);
        (!private).then_some(Cow::Borrowed(stored))
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> SysResult<XattrReply> {
        // As the kernel: hidden names read as absent (setting them is EOPNOTSUPP).
        let stored = self.stored_name(name).ok_or(Errno::NODATA)?;
        let node = self.node(id)?;
        let state = node.read();
        let value = sys::get_xattr_raw(state.top_fd()?.as_fd(), &stored, size as usize)?;
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
        for stored in &names {
            let Some(name) = self.shown_name(stored) else {
                continue;
            };
            if caller_uid != 0 && name.as_bytes().starts_with(b"trusted.") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        sized(out, size)
    }
}

impl Overlay {
    /// The node behind `id`, copied up so its xattr `stored` may change.
    fn xattr_target(&self, id: u64) -> SysResult<std::sync::Arc<crate::inode::Node>> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let node = self.node(id)?;
        self.copy_up_meta(&node)?;
        Ok(node)
    }

    pub fn setxattr(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
        let stored = self.stored_name(name).ok_or(Errno::OPNOTSUPP)?;
        let node = self.xattr_target(id)?;
        sys::set_xattr(node.read().top_fd()?.as_fd(), &stored, value, flags)
    }

    pub fn removexattr(&self, id: u64, name: &OsStr) -> SysResult<()> {
        let stored = self.stored_name(name).ok_or(Errno::OPNOTSUPP)?;
        let node = self.xattr_target(id)?;
        sys::remove_xattr(node.read().top_fd()?.as_fd(), &stored)
    }
}
