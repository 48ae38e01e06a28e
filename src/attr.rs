//! setattr (the kernel's inode.c): chmod, chown, truncate, utimens — after copy-up.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::UNIX_EPOCH;

use fuser::{FileAttr, TimeOrNow};
use rustix::fs::OFlags;

use crate::handles::Handle;
use crate::overlay::Overlay;
use crate::stat_override;
use crate::sys::{self, Errno, SysResult, TimeSpec};

/// The attribute changes of one setattr request.
#[derive(Default)]
pub struct AttrChanges {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<u64>,
    pub caller: Option<crate::request::Caller>,
}

fn time_spec(t: Option<TimeOrNow>) -> TimeSpec {
    match t? {
        TimeOrNow::Now => Some(None),
        TimeOrNow::SpecificTime(t) => Some(Some(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, ns) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if ns == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - ns)
                }
            }
        })),
    }
}

impl Overlay {
    /// Whether every change asked for is already in place (ctime is never set explicitly).
    fn changes_nothing(&self, node: &crate::inode::Node, changes: &AttrChanges) -> SysResult<bool> {
        let st = {
            let state = node.read();
            self.stat_object(state.top().layer, state.top_fd()?.as_fd())?
        };
        let same_time = |t: Option<TimeOrNow>, secs: i64, nsecs: u64| match time_spec(t) {
            None => true,
            Some(Some((s, ns))) => s == secs && ns as u64 == nsecs,
            Some(None) => false,
        };
        Ok(changes
            .mode
            .is_none_or(|m| m & 0o7777 == st.st_mode & 0o7777)
            && changes
                .uid
                .is_none_or(|u| self.ids.uid_to_host(u) == Some(st.st_uid))
            && changes
                .gid
                .is_none_or(|g| self.ids.gid_to_host(g) == Some(st.st_gid))
            && changes.size.is_none()
            && same_time(changes.atime, st.st_atime, st.st_atime_nsec)
            && same_time(changes.mtime, st.st_mtime, st.st_mtime_nsec))
    }

    pub fn setattr(&self, id: u64, changes: AttrChanges) -> SysResult<FileAttr> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let node = self.node(id)?;
        // chown(-1, -1) arrives as a setattr that names nothing: the kernel's overlayfs copies
        // the object up and its change time moves, so it is not a no-op here either.
        let names_nothing = changes.mode.is_none()
            && changes.uid.is_none()
            && changes.gid.is_none()
            && changes.size.is_none()
            && changes.atime.is_none()
            && changes.mtime.is_none();
        if !names_nothing && self.changes_nothing(&node, &changes)? {
            // The writeback cache flushes cached times, unchanged ones too (e.g. after an
            // unlink): that is no reason to copy a lower object up.
            return self.getattr(id);
        }
        if changes.size.is_some() {
            self.copy_up(&node)?;
        } else {
            self.copy_up_meta(&node)?;
        }
        let state = node.read();
        let fd_ref = state.top_fd()?;
        let fd = fd_ref.as_fd();
        let uid = match changes.uid {
            Some(u) => Some(self.ids.uid_to_host(u).ok_or(Errno::INVAL)?),
            None => None,
        };
        let gid = match changes.gid {
            Some(g) => Some(self.ids.gid_to_host(g).ok_or(Errno::INVAL)?),
            None => None,
        };
        let mode = changes.mode.filter(|_| node.file_type != libc::S_IFLNK);
        match self.upper_stat_xattr() {
            Some(xattr) if stat_override::applies_to(node.file_type) => {
                if uid.is_some() || gid.is_some() || mode.is_some() {
                    let mut value = match stat_override::read(fd, xattr) {
                        Some(value) => value,
                        None => stat_override::Override::of_stat(&sys::stat_fd(fd)?),
                    };
                    value.uid = uid.unwrap_or(value.uid);
                    value.gid = gid.unwrap_or(value.gid);
                    value.perm = mode.map_or(value.perm, |m| m & 0o7777);
                    stat_override::write(fd, xattr, &value)?;
                }
            }
            _ => {
                if uid.is_some() || gid.is_some() {
                    sys::chown_fd(fd, uid, gid)?;
                }
                if let Some(mode) = mode {
                    sys::chmod_fd(fd, mode)?;
                }
            }
        }
        if names_nothing {
            // Changes no owner; the upper's change time moves.
            sys::chown_fd(fd, None, None)?;
        }
        if let (Some(_), Some(caller), None) = (changes.size, changes.caller, changes.mode)
            && crate::killpriv::must_clear_sgid(caller, &self.stat_object(0, fd)?)
        {
            self.clear_sgid(fd)?;
        }
        if let Some(size) = changes.size {
            if node.is_dir() {
                return Err(Errno::ISDIR);
            }
            let handle = changes.fh.and_then(|fh| self.handles.get(fh).ok());
            match handle.as_deref() {
                Some(Handle::File(f)) if self.stack.is_upper(f.layer) => {
                    sys::truncate_fd(f.fd.as_fd(), size)?
                }
                _ => {
                    let file = sys::reopen(fd, OFlags::WRONLY)?;
                    sys::truncate_fd(file.as_fd(), size)?;
                }
            }
        }
        if changes.atime.is_some() || changes.mtime.is_some() {
            let (atime, mtime) = (time_spec(changes.atime), time_spec(changes.mtime));
            sys::utimens_fd(fd, atime, mtime)?;
        }
        let mut st = self.stat_object(0, fd)?;
        self.data_blocks(&state.objects, &mut st);
        Ok(self.attr_from_stat(&node, &st, state.objects.is_merged()))
    }

    /// Drops setgid from an upper object, wherever its mode is kept.
    pub fn clear_sgid(&self, fd: BorrowedFd<'_>) -> SysResult<()> {
        if let Some(xattr) = self.upper_stat_xattr()
            && let Some(mut value) = stat_override::read(fd, xattr)
        {
            value.perm &= !libc::S_ISGID;
            return stat_override::write(fd, xattr, &value);
        }
        crate::killpriv::clear_sgid(fd)
    }
}
