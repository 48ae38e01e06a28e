//! Copy-up (the kernel's copy_up.c): bringing a lower object into the upper layer before it changes.
//!
//! The object is built under a temp name in `WORKDIR/work` (data, xattrs, owner, mode, times),
//! synced, then renamed into the upper in one step: a crash leaves either nothing or the whole
//! object in the upper, and the temp leftovers are removed at the next mount.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::fs::OFlags;

use crate::inode::Node;
use crate::lookup::LayerObject;
use crate::overlay::Overlay;
use crate::stat_override;
use crate::sys::{self, Errno, Stat, SysResult};
use crate::whiteout;
use crate::workdir::{DirTimes, Publish, Staged};

/// Copies every xattr but the overlay-private ones (and, with `skip_stat_xattrs`, the
/// owner-and-mode xattrs, which the caller rewrites). Attributes the upper filesystem or our
/// privileges cannot hold (e.g. `trusted.*` when rootless) are skipped, as the kernel does
/// for unsupported ones.
pub fn copy_xattrs(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    skip_stat_xattrs: bool,
) -> SysResult<()> {
    for name in sys::list_xattr(src)? {
        if whiteout::is_private_xattr(&name)
            || (skip_stat_xattrs && stat_override::is_stat_xattr(&name))
        {
            continue;
        }
        let Ok(value) = sys::get_xattr_raw(src, &name, 65536) else {
            continue;
        };
        match sys::set_xattr(dst, &name, &value, 0) {
            Ok(()) => {}
            Err(Errno::OPNOTSUPP) | Err(Errno::PERM) | Err(Errno::ACCESS) => {
                log::debug!("copy-up: xattr {name:?} not copied");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies file data, keeping holes: FICLONE when the filesystem shares extents, else
/// `copy_file_range` over the data segments only, else read/write.
pub fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    if size == 0 || sys::clone_file(dst, src).is_ok() {
        return Ok(());
    }
    let mut pos = 0u64;
    while pos < size {
        let start = match sys::lseek(src, pos as i64, libc::SEEK_DATA) {
            Ok(p) => p,
            Err(Errno::NXIO) => break, // only a hole remains
            Err(_) => pos,             // no SEEK_DATA support: copy everything
        };
        let end = sys::lseek(src, start as i64, libc::SEEK_HOLE)
            .unwrap_or(size)
            .min(size);
        copy_range(src, dst, start, end)?;
        pos = end;
    }
    // A trailing hole: set the size without writing.
    sys::truncate_fd(dst, size)
}

fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut start: u64, end: u64) -> SysResult<()> {
    let mut use_cfr = true;
    let mut buf = Vec::new();
    while start < end {
        let len = ((end - start) as usize).min(1 << 30);
        if use_cfr {
            match sys::copy_file_range(src, start, dst, start, len) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    start += n as u64;
                    continue;
                }
                Err(Errno::XDEV)
                | Err(Errno::NOSYS)
                | Err(Errno::OPNOTSUPP)
                | Err(Errno::INVAL) => {
                    use_cfr = false;
                }
                Err(e) => return Err(e),
            }
        }
        buf.resize(len.min(1 << 20), 0);
        let n = sys::pread(src, &mut buf, start)?;
        if n == 0 {
            return Ok(());
        }
        sys::pwrite(dst, &buf[..n], start)?;
        start += n as u64;
    }
    Ok(())
}

/// How a copy-up under the node's lock ended.
enum CopiedUp {
    Done,
    /// The node now names another link of its object; the copy-up starts over.
    Moved,
}

impl Overlay {
    /// Makes sure `node` lives in the upper layer, copying up its parent chain first.
    pub fn copy_up(&self, node: &Arc<Node>) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        if self.stack.is_upper(node.read().top().layer) {
            return Ok(());
        }
        let parent = node.read().parent.clone().ok_or(Errno::INVAL)?;
        self.copy_up(&parent)?;
        // One copy-up at a time per node, under a lock of its own: the node's state stays
        // readable (getattr, reads through fds opened before) while the data is copied.
        let guard = node.lock_copy_up();
        match self.copy_up_locked(node)? {
            CopiedUp::Done => Ok(()),
            CopiedUp::Moved => {
                // Another name of the same hard-linked object: start over from it.
                drop(guard);
                self.copy_up(node)
            }
        }
    }

    /// The copy-up itself, with the node's copy-up lock held.
    fn copy_up_locked(&self, node: &Arc<Node>) -> SysResult<CopiedUp> {
        let (name, parent, src_layer, src) = {
            let state = node.read();
            if self.stack.is_upper(state.top().layer) {
                return Ok(CopiedUp::Done);
            }
            let parent = state.parent.clone().ok_or(Errno::INVAL)?;
            let src = state.top().fd.owned_clone()?;
            (state.name.clone(), parent, state.top().layer, src)
        };
        let upper_dir = parent.read().top().fd.owned_clone()?;
        let upper_dir = upper_dir.as_fd();
        let src = src.as_fd();
        let st = self.stat_object(src_layer, src)?;
        let upper_fd = match self.copy_up_object(src, src_layer, &st, upper_dir, &name, node.ino) {
            Ok(fd) => fd,
            // Already there (a hard link or a concurrent copy through another node) — unless
            // what is there is the whiteout of this very name: this name was deleted while the
            // object stayed in use.
            Err(Errno::EXIST) => {
                let there = sys::stat_at(upper_dir, &name)?;
                if !crate::whiteout::is_whiteout_at(upper_dir, &name, &there) {
                    sys::open_path_at(upper_dir, &name)?
                } else if !node.is_dir() && st.st_nlink > 1 {
                    // A hard link: copy up through another name that still shows it.
                    let (dir, other) = self
                        .visible_other_name(src_layer, st.st_ino)
                        .ok_or(Errno::STALE)?;
                    let mut state = node.write();
                    self.inodes.set_name(node, &mut state, dir, &other);
                    return Ok(CopiedUp::Moved);
                } else {
                    return Err(Errno::STALE);
                }
            }
            Err(e) => return Err(e),
        };
        let other_links = (!node.is_dir() && st.st_nlink > 1)
            .then(|| upper_fd.try_clone().ok())
            .flatten();
        let upper = LayerObject {
            layer: 0,
            fd: crate::lookup::ObjFd::open(upper_fd),
        };
        {
            node.write().objects.put_upper(upper);
        }
        if let Some(fd) = other_links {
            self.copy_up_other_links(src_layer, st.st_ino, fd.as_fd());
        }
        Ok(CopiedUp::Done)
    }

    /// Builds a copy of `src` in the workdir and renames it to `upper_dir/name`.
    fn copy_up_object(
        &self,
        src: BorrowedFd<'_>,
        src_layer: usize,
        st: &Stat,
        upper_dir: BorrowedFd<'_>,
        name: &OsStr,
        ino: u64,
    ) -> SysResult<OwnedFd> {
        let staged = Staged::new(self.work_fd()?);
        self.build_copy(src, src_layer, st, staged.work(), staged.name(), ino)?;
        // A copy-up changes nothing users can see in the parent: keep its times (as the
        // kernel does), which the rename into it would otherwise move.
        staged.publish(upper_dir, name, Publish::NoReplace, DirTimes::Keep)?;
        sys::open_path_at(upper_dir, name)
    }

    /// Creates `work/tmp` as a complete copy of `src` (without directory contents). `st` is
    /// what users see of `src`: its owner and mode may come from an xattr of its layer.
    fn build_copy(
        &self,
        src: BorrowedFd<'_>,
        src_layer: usize,
        st: &Stat,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        ino: u64,
    ) -> SysResult<()> {
        let file_type = st.st_mode & libc::S_IFMT;
        match file_type {
            libc::S_IFREG => {
                let input = sys::reopen(src, OFlags::RDONLY)?;
                let out = sys::open_at(
                    work,
                    tmp,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                    0o600,
                )?;
                copy_data(input.as_fd(), out.as_fd(), st.st_size as u64)?;
                if self.fsync {
                    sys::fsync(out.as_fd(), false)?;
                }
            }
            libc::S_IFDIR => sys::mkdir_at(work, tmp, 0o700)?,
            libc::S_IFLNK => {
                let target = sys::readlink_fd(src)?;
                sys::symlink_at(OsStr::from_bytes(&target), work, tmp)?;
            }
            _ => sys::mknod_at(work, tmp, file_type | 0o600, st.st_rdev)?,
        }
        let copy = sys::open_path_at(work, tmp)?;
        // Owners and modes kept in an xattr by the source's layer are carried over below, in
        // the form the upper keeps them in.
        let src_stat_xattr = self.stack.layers[src_layer].stat_xattr;
        copy_xattrs(src, copy.as_fd(), src_stat_xattr.is_some())?;
        self.set_origin_ino(copy.as_fd(), ino);
        match self.upper_stat_xattr() {
            Some(xattr) if stat_override::applies_to(st.st_mode) => {
                let mut value = stat_override::Override::of_stat(st);
                value.rest = src_stat_xattr
                    .and_then(|x| stat_override::read(src, x))
                    .and_then(|v| v.rest);
                stat_override::write(copy.as_fd(), xattr, &value)?;
                sys::chmod_fd(copy.as_fd(), stat_override::REAL_PERM)?;
            }
            _ => {
                // Owner before mode: chown clears setuid/setgid, which the mode then restores.
                match sys::chown_at(work, tmp, Some(st.st_uid), Some(st.st_gid)) {
                    Ok(()) => {}
                    Err(Errno::PERM) | Err(Errno::INVAL) => {
                        log::debug!("copy-up: cannot keep owner")
                    }
                    Err(e) => return Err(e),
                }
                if file_type != libc::S_IFLNK {
                    sys::chmod_fd(copy.as_fd(), st.st_mode)?;
                }
            }
        }
        let atime = Some(Some((st.st_atime, st.st_atime_nsec as i64)));
        let mtime = Some(Some((st.st_mtime, st.st_mtime_nsec as i64)));
        sys::utimens_at(work, tmp, atime, mtime)?;
        Ok(())
    }

    /// Records the inode number users saw before copy-up, so it survives a remount.
    pub fn set_origin_ino(&self, fd: BorrowedFd<'_>, ino: u64) {
        let name = self.xattr_ns.origin_ino();
        if let Err(e) = sys::set_xattr(fd, OsStr::new(name), ino.to_string().as_bytes(), 0) {
            log::debug!("cannot record origin inode: {e}");
        }
    }
}
