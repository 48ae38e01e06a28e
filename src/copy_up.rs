//! Copy-up (the kernel's copy_up.c): bringing a lower object into the upper layer before it changes.
//!
//! The object is built under a temp name in `WORKDIR/work` (data, xattrs, owner, mode, times),
//! synced, then renamed into the upper in one step: a crash leaves either nothing or the whole
//! object in the upper, and the temp leftovers are removed at the next mount.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::OFlags;

use crate::inode::Node;
use crate::lookup::{LayerObject, Objects};
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

/// Copies file data, keeping holes: FICLONE when the filesystem shares extents (`reflink`
/// says whether to try, and is cleared when it fails), else `copy_file_range` over the data
/// segments only, else read/write. `st` is the source's stat.
pub fn copy_data(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    st: &Stat,
    reflink: &AtomicBool,
) -> SysResult<()> {
    let size = st.st_size as u64;
    if size == 0 {
        return Ok(());
    }
    if reflink.load(Ordering::Relaxed) {
        match sys::clone_file(dst, src) {
            Ok(()) => return Ok(()),
            // The filesystems cannot share extents (the answer does not change): stop asking.
            Err(Errno::OPNOTSUPP) | Err(Errno::XDEV) | Err(Errno::INVAL) | Err(Errno::NOTTY) => {
                reflink.store(false, Ordering::Relaxed)
            }
            Err(_) => {}
        }
    }
    // Allocated blocks covering the whole size leave no room for holes: copy it in one go.
    if (st.st_blocks as u64).saturating_mul(512) >= size {
        return copy_range(src, dst, 0, size);
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
    if pos < size {
        sys::truncate_fd(dst, size)?;
    }
    Ok(())
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

/// What a copy-up copies: the object, its layer, what users see of it, and the file its
/// data comes from (`None`: a metadata-only copy).
type Source<'a> = (BorrowedFd<'a>, usize, &'a Stat, Option<BorrowedFd<'a>>);

/// How a copy-up under the node's lock ended.
enum CopiedUp {
    Done,
    /// The node now names another link of its object; the copy-up starts over.
    Moved,
}

/// What a copy-up must bring up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// Everything: the node's data ends up in its upper file.
    Full,
    /// With `metacopy=on`, the metadata of a lower regular file (chmod, chown, utimes,
    /// xattrs): the data stays below until something writes it.
    Metadata,
}

impl Overlay {
    /// Makes sure `node` lives in the upper layer with its data, copying up its parent chain
    /// first (and the data of a metadata-only copy).
    pub fn copy_up(&self, node: &Arc<Node>) -> SysResult<()> {
        self.copy_up_as(node, Copy::Full)
    }

    /// Makes sure `node` lives in the upper layer before its metadata changes: with
    /// `metacopy=on` a lower regular file gets a metadata-only copy (as the kernel's
    /// overlayfs with the same option), otherwise a full one.
    pub fn copy_up_meta(&self, node: &Arc<Node>) -> SysResult<()> {
        self.copy_up_as(node, Copy::Metadata)
    }

    fn copy_up_as(&self, node: &Arc<Node>, how: Copy) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        if self.is_up(node, how) {
            return Ok(());
        }
        let parent = node.read().parent.clone().ok_or(Errno::INVAL)?;
        self.copy_up(&parent)?;
        // One copy-up at a time per node, under a lock of its own: the node's state stays
        // readable (getattr, reads through fds opened before) while the data is copied.
        let guard = node.lock_copy_up();
        match self.copy_up_locked(node, how)? {
            CopiedUp::Done => Ok(()),
            CopiedUp::Moved => {
                // Another name of the same hard-linked object: start over from it.
                drop(guard);
                self.copy_up_as(node, how)
            }
        }
    }

    /// Whether `node` is in the upper layer as far as `how` needs.
    fn is_up(&self, node: &Node, how: Copy) -> bool {
        let state = node.read();
        self.stack.is_upper(state.top().layer)
            && (how == Copy::Metadata || state.objects.metacopy_data().is_none())
    }

    /// The copy-up itself, with the node's copy-up lock held.
    fn copy_up_locked(&self, node: &Arc<Node>, how: Copy) -> SysResult<CopiedUp> {
        if self.is_up(node, how) {
            return Ok(CopiedUp::Done);
        }
        let (name, parent, src_layer, src, data) = {
            let state = node.read();
            let parent = state.parent.clone().ok_or(Errno::INVAL)?;
            let src = state.top().fd.owned_clone()?;
            let data = match state.objects.metacopy_data() {
                Some(data) => Some(data.fd.owned_clone()?),
                None => None,
            };
            (state.name.clone(), parent, state.top().layer, src, data)
        };
        if self.stack.is_upper(src_layer) {
            // A metadata-only copy about to be written: its data comes up in place.
            let data = data.ok_or(Errno::IO)?;
            self.copy_up_data_in_place(src.as_fd(), data.as_fd())?;
            node.change_data_source(|objects| objects.data_copied_up())?;
            if node.is_superseded() {
                self.invalidate_attrs(node.id);
                self.inodes.note_superseded(node);
            }
            return Ok(CopiedUp::Done);
        }
        let upper_dir = parent.read().top().fd.owned_clone()?;
        let upper_dir = upper_dir.as_fd();
        let src = src.as_fd();
        let st = self.stat_object(src_layer, src)?;
        // Hard links and lower metadata-only copies are copied whole.
        let metadata_only = how == Copy::Metadata
            && self.metacopy
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_nlink == 1
            && data.is_none();
        let data_src = match (&data, metadata_only) {
            (_, true) => None,
            (Some(data), false) => Some(data.as_fd()),
            (None, false) => Some(src),
        };
        let object = (src, src_layer, &st, data_src);
        let upper_fd = match self.copy_up_object(object, upper_dir, &name, node.ino) {
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
        if metadata_only {
            // The data stays where it was read from: passthrough opens keep their backing.
            let mut data = LayerObject {
                layer: src_layer,
                fd: crate::lookup::ObjFd::open(src.try_clone_to_owned().map_err(|_| Errno::MFILE)?),
            };
            self.hold_path(&mut data);
            node.write().objects = Objects::Metacopy { top: upper, data };
        } else {
            node.put_upper(upper);
            if node.is_superseded() {
                // What the kernel keeps of it would go stale with the successor's writes.
                self.invalidate_attrs(node.id);
                self.inodes.note_superseded(node);
            }
        }
        if let Some(fd) = other_links {
            self.copy_up_other_links(src_layer, st.st_ino, fd.as_fd());
        }
        Ok(CopiedUp::Done)
    }

    /// Brings the data of a metadata-only copy into its upper file, as the kernel does: copied
    /// into the file in place, synced, and only then the metacopy marker removed, so a crash
    /// leaves a file that still reads its data from below. Times and file capabilities
    /// (which a write drops) are kept.
    fn copy_up_data_in_place(&self, upper: BorrowedFd<'_>, data: BorrowedFd<'_>) -> SysResult<()> {
        let st = sys::stat_fd(upper)?;
        let caps = sys::get_xattr(upper, "security.capability")?;
        let input = sys::reopen(data, OFlags::RDONLY)?;
        let out = sys::reopen(upper, OFlags::WRONLY)?;
        let data_st = sys::stat_fd(input.as_fd())?;
        copy_data(input.as_fd(), out.as_fd(), &data_st, &AtomicBool::new(true))?;
        // The metadata's size is the one users saw.
        sys::truncate_fd(out.as_fd(), st.st_size as u64)?;
        if let Some(caps) = caps {
            sys::set_xattr(out.as_fd(), OsStr::new("security.capability"), &caps, 0)?;
        }
        if self.fsync {
            sys::fsync(out.as_fd(), false)?;
        }
        let atime = Some(Some((st.st_atime, st.st_atime_nsec as i64)));
        let mtime = Some(Some((st.st_mtime, st.st_mtime_nsec as i64)));
        sys::utimens_fd(upper, atime, mtime)?;
        whiteout::clear_metacopy(upper)
    }

    /// Builds a copy of `src` in the workdir and renames it to `upper_dir/name`.
    fn copy_up_object(
        &self,
        object: Source<'_>,
        upper_dir: BorrowedFd<'_>,
        name: &OsStr,
        ino: u64,
    ) -> SysResult<OwnedFd> {
        let work = self.work_fd()?;
        let (staged, copy) = match self.build_file_unnamed(object, work, ino)? {
            Some(built) => built,
            None => {
                let staged = Staged::new(work);
                let copy = self.build_copy(object, work, staged.name(), ino)?;
                (staged, copy)
            }
        };
        // A copy-up changes nothing users can see in the parent: keep its times (as the
        // kernel does), which the rename into it would otherwise move.
        staged.publish(upper_dir, name, Publish::NoReplace, DirTimes::Keep)?;
        // The fd names the object, not the path: it is the published upper object now.
        Ok(copy)
    }

    /// Builds the copy of a regular file as an unnamed file (`O_TMPFILE`, as the kernel does)
    /// and links it into the workdir only once it is complete and synced. Syncing a file that
    /// has no name yet syncs only the file: on ext4 without a journal, syncing a newly named
    /// file also writes out its directory. Returns the staged name and an `O_PATH` fd, or
    /// `None` for other types and where the upper cannot make unnamed files.
    fn build_file_unnamed<'w>(
        &self,
        (src, src_layer, st, data): Source<'_>,
        work: BorrowedFd<'w>,
        ino: u64,
    ) -> SysResult<Option<(Staged<'w>, OwnedFd)>> {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(None);
        }
        let Some(out) = sys::open_tmpfile(work, 0o600)? else {
            return Ok(None);
        };
        let has_data = self.fill_file(out.as_fd(), (src, src_layer, st, data))?;
        self.copy_metadata(src, src_layer, st, out.as_fd(), ino)?;
        if self.fsync && has_data {
            sys::fsync(out.as_fd(), false)?;
        }
        let staged = Staged::new(work);
        sys::link_fd_at(out.as_fd(), work, staged.name())?;
        let copy = sys::open_path_at(work, staged.name())?;
        Ok(Some((staged, copy)))
    }

    /// Creates `work/tmp` as a copy of `src` (without directory contents) and returns an
    /// `O_PATH` fd of it.
    fn build_copy(
        &self,
        object: Source<'_>,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        ino: u64,
    ) -> SysResult<OwnedFd> {
        let (src, src_layer, st, _) = object;
        let file_type = st.st_mode & libc::S_IFMT;
        // A copy with data is synced once complete, data and metadata together, and only then
        // published: a crash never shows the name without the data. An empty file has no data
        // to lose (the kernel, too, syncs only copied data).
        let mut data_fd = None;
        match file_type {
            libc::S_IFREG => {
                let out = sys::open_at(
                    work,
                    tmp,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                    0o600,
                )?;
                if self.fill_file(out.as_fd(), object)? {
                    data_fd = Some(out);
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
        self.copy_metadata(src, src_layer, st, copy.as_fd(), ino)?;
        if let Some(fd) = data_fd.filter(|_| self.fsync) {
            sys::fsync(fd.as_fd(), false)?;
        }
        Ok(copy)
    }

    /// Fills the new regular file `out`: the data of `data`, or without it only its size and
    /// the metacopy marker (a metadata-only copy, as the kernel writes them). Returns whether
    /// data was written, which must then be synced.
    fn fill_file(
        &self,
        out: BorrowedFd<'_>,
        (src, src_layer, st, data): Source<'_>,
    ) -> SysResult<bool> {
        let Some(data) = data else {
            sys::truncate_fd(out, st.st_size as u64)?;
            let marker = OsStr::new(self.xattr_ns.metacopy());
            sys::set_xattr(out, marker, b"", 0)?;
            return Ok(false);
        };
        let input = sys::reopen(data, OFlags::RDONLY)?;
        let reflink = &self.stack.layers[src_layer].reflink_to_upper;
        copy_data(input.as_fd(), out, st, reflink)?;
        if data.as_raw_fd() != src.as_raw_fd() {
            // A lower metadata-only copy's own size wins over its data file's.
            sys::truncate_fd(out, st.st_size as u64)?;
        }
        Ok(st.st_size > 0)
    }

    /// Gives the copy `copy` (an fd of any kind) the xattrs, owner, mode and times of `src`.
    /// `st` is what users see of `src`: its owner and mode may come from an xattr of its layer.
    fn copy_metadata(
        &self,
        src: BorrowedFd<'_>,
        src_layer: usize,
        st: &Stat,
        copy: BorrowedFd<'_>,
        ino: u64,
    ) -> SysResult<()> {
        // Owners and modes kept in an xattr by the source's layer are carried over below, in
        // the form the upper keeps them in.
        let src_stat_xattr = self.stack.layers[src_layer].stat_xattr;
        copy_xattrs(src, copy, src_stat_xattr.is_some())?;
        self.set_origin_ino(copy, ino);
        match self.upper_stat_xattr() {
            Some(xattr) if stat_override::applies_to(st.st_mode) => {
                let mut value = stat_override::Override::of_stat(st);
                value.rest = src_stat_xattr
                    .and_then(|x| stat_override::read(src, x))
                    .and_then(|v| v.rest);
                stat_override::write(copy, xattr, &value)?;
                sys::chmod_fd(copy, stat_override::REAL_PERM)?;
            }
            _ => {
                // Owner before mode: chown clears setuid/setgid, which the mode then restores.
                match sys::chown_fd(copy, Some(st.st_uid), Some(st.st_gid)) {
                    Ok(()) => {}
                    Err(Errno::PERM) | Err(Errno::INVAL) => {
                        log::debug!("copy-up: cannot keep owner")
                    }
                    Err(e) => return Err(e),
                }
                if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                    sys::chmod_fd(copy, st.st_mode)?;
                }
            }
        }
        let atime = Some(Some((st.st_atime, st.st_atime_nsec as i64)));
        let mtime = Some(Some((st.st_mtime, st.st_mtime_nsec as i64)));
        sys::utimens_fd(copy, atime, mtime)
    }

    /// Records the inode number users saw before copy-up, so it survives a remount.
    pub fn set_origin_ino(&self, fd: BorrowedFd<'_>, ino: u64) {
        let name = self.xattr_ns.origin_ino();
        if let Err(e) = sys::set_xattr(fd, OsStr::new(name), ino.to_string().as_bytes(), 0) {
            log::debug!("cannot record origin inode: {e}");
        }
    }
}
