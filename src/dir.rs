//! Namespace operations (the kernel's dir.c): create, mkdir, mknod, symlink, link, unlink,
//! rmdir, rename — always in the upper layer, with whiteouts where a lower name must vanish.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::OFlags;

use crate::config::WhiteoutMode;
use crate::inode::{Node, NodeState};
use crate::lookup::{self, LayerObject, ObjFd, Objects, Resolved};
use crate::overlay::{Entry, Overlay};
use crate::readdir;
use crate::request::{Caller, NewObject};
use crate::stat_override;
use crate::sys::{self, Errno, RenameFlags, SysResult};
use crate::whiteout::{self, WhiteoutForm};
use crate::workdir::{DirTimes, Publish, Staged, remove_any, restore_times};

/// Where a rename puts its object: the merged directory, its upper fd, the name, and whether
/// the first resolution of that name came from a lower layer.
struct Target<'a> {
    dir: &'a Node,
    upper: BorrowedFd<'a>,
    name: &'a OsStr,
    seen_in_lower: bool,
}

impl Overlay {
    /// Copies `node` up and returns a duplicate of its upper fd (no lock held afterwards).
    fn upper_fd_of(&self, node: &Arc<Node>) -> SysResult<OwnedFd> {
        self.copy_up(node)?;
        node.read().top().fd.owned_clone()
    }

    fn dir_node(&self, id: u64) -> SysResult<Arc<Node>> {
        let node = self.node(id)?;
        if !node.is_dir() {
            return Err(Errno::NOTDIR);
        }
        Ok(node)
    }

    pub(crate) fn resolve_in(&self, parent: &Node, name: &OsStr) -> SysResult<Option<Resolved>> {
        let state = parent.read();
        lookup::lookup(&self.stack, &state.layer_fds(), name)
    }

    /// Whether `name` is visible in the lower layers of directory `parent` (so deleting or
    /// renaming it in the upper needs a whiteout, and a new directory there must be opaque).
    /// `seen_in_lower`: the request's first resolution of the name came from a lower layer,
    /// which answers the question without another lookup.
    fn lower_has(&self, parent: &Node, name: &OsStr, seen_in_lower: bool) -> SysResult<bool> {
        if seen_in_lower {
            return Ok(true);
        }
        let state = parent.read();
        let lowers: Vec<_> = state
            .layer_fds()
            .into_iter()
            .filter(|(layer, _)| !self.stack.is_upper(*layer))
            .collect();
        if lowers.is_empty() {
            return Ok(false);
        }
        Ok(lookup::lookup(&self.stack, &lowers, name)?.is_some())
    }

    /// The live node for a resolved child, or a detached one to copy up through.
    pub(crate) fn child_node(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        resolved: Resolved,
    ) -> Arc<Node> {
        if let Some(node) = self.inodes.current(resolved.ino) {
            return node;
        }
        let file_type = resolved.stat.st_mode & libc::S_IFMT;
        let state = NodeState {
            objects: resolved.objects,
            parent: Some(parent.clone()),
            name: name.to_owned(),
        };
        self.inodes
            .inherited_or_detached(resolved.ino, file_type, state)
    }

    /// Owner of a new object: the caller's ids on disk (the overflow ids for a caller the
    /// mapping does not cover, as fuse-overlayfs and NFS do); a setgid directory passes on its
    /// group.
    fn new_owner(&self, caller: Caller, upper_dir: BorrowedFd<'_>) -> SysResult<(u32, u32, bool)> {
        let uid = self.ids.uid_to_disk_or_overflow(caller.uid);
        let mut gid = self.ids.gid_to_disk_or_overflow(caller.gid);
        let dir = self.stat_object(0, upper_dir)?;
        let setgid_dir = dir.st_mode & libc::S_ISGID != 0;
        if setgid_dir {
            gid = dir.st_gid;
        }
        Ok((uid, gid, setgid_dir))
    }

    /// Creates a new object through the workdir and installs it at `parent/name`.
    /// Returns its attributes (counting one lookup) and, for files, the open fd.
    pub fn create_object(
        &self,
        parent: u64,
        name: &OsStr,
        object: NewObject<'_>,
        caller: Caller,
    ) -> SysResult<(Entry, Option<OwnedFd>)> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let parent_node = self.dir_node(parent)?;
        if self.resolve_in(&parent_node, name)?.is_some() {
            return Err(Errno::EXIST);
        }
        if whiteout::is_aufs_entry(name) {
            // The name would be read back as AUFS bookkeeping and vanish.
            return Err(Errno::INVAL);
        }
        let upper_dir = self.upper_fd_of(&parent_node)?;
        let staged = Staged::new(self.work_fd()?);
        let (work, tmp) = (staged.work(), staged.name());
        let (uid, gid, setgid_dir) = self.new_owner(caller, upper_dir.as_fd())?;
        // Where the owner and mode live in an xattr, the real ones only let the daemon in.
        let stat_xattr = self
            .upper_stat_xattr()
            .filter(|_| matches!(object, NewObject::File { .. } | NewObject::Dir { .. }));
        let real_perm = |mode: u32| match stat_xattr {
            Some(_) => stat_override::REAL_PERM,
            None => mode & 0o7777,
        };
        let mut is_dir = false;
        let built: SysResult<Option<OwnedFd>> = (|| match object {
            NewObject::File { mode, flags } => {
                let mut oflags = OFlags::from_bits_retain(flags as u32)
                    & !(OFlags::TRUNC | OFlags::EXCL | crate::file::REAL_OPEN_DROPPED);
                if self.writeback_active() && oflags & OFlags::RWMODE == OFlags::WRONLY {
                    // The writeback cache reads pages around partial writes through this
                    // handle: it needs read access (the new file's mode does not limit it).
                    oflags = (oflags & !OFlags::RWMODE) | OFlags::RDWR;
                }
                let fd = sys::open_at(
                    work,
                    tmp,
                    oflags | OFlags::CREATE | OFlags::EXCL,
                    real_perm(mode),
                )?;
                Ok(Some(fd))
            }
            NewObject::Dir { mode } => {
                is_dir = true;
                let mode = if setgid_dir {
                    mode | libc::S_ISGID
                } else {
                    mode
                };
                sys::mkdir_at(work, tmp, real_perm(mode)).map(|()| None)
            }
            NewObject::Special { mode, rdev } => {
                if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
                    // A 0/0 device would read back as a whiteout: refuse, as the kernel does.
                    return Err(Errno::PERM);
                }
                sys::mknod_at(work, tmp, mode, rdev).map(|()| None)
            }
            NewObject::Symlink { target } => sys::symlink_at(target, work, tmp).map(|()| None),
        })();
        let fd = built?;
        let finish = (|| {
            let mode = match object {
                NewObject::Dir { mode } if setgid_dir => Some(mode | libc::S_ISGID),
                NewObject::Dir { mode } | NewObject::File { mode, .. } => Some(mode),
                NewObject::Special { mode, .. } => Some(mode),
                NewObject::Symlink { .. } => None,
            };
            if let Some(xattr) = stat_xattr {
                let value = stat_override::Override {
                    uid,
                    gid,
                    perm: mode.unwrap_or(0) & 0o7777,
                    rest: None,
                };
                let copy = sys::open_path_at(work, tmp)?;
                stat_override::write(copy.as_fd(), xattr, &value)?;
            } else {
                sys::chown_at(work, tmp, Some(uid), Some(gid))?;
                // chown clears setuid/setgid: set the full mode again.
                if let Some(mode) = mode.filter(|m| m & 0o7000 != 0) {
                    let copy = sys::open_path_at(work, tmp)?;
                    sys::chmod_fd(copy.as_fd(), mode)?;
                }
            }
            Ok(())
        })();
        finish?;
        let parent_merges = self.has_lower_part(&parent_node);
        self.install(staged, upper_dir.as_fd(), name, is_dir, parent_merges)?;
        let entry = self.new_node(&parent_node, upper_dir.as_fd(), name)?;
        Ok((entry, fd))
    }

    /// Registers the object just installed at `upper_dir/name` as a node (one kernel
    /// reference). It is upper-only in the merged view: a directory in a merged parent was
    /// made opaque, and a lower name it replaced was hidden by a whiteout, so this is what a
    /// lookup would find, without probing the lower layers again.
    fn new_node(
        &self,
        parent: &Arc<Node>,
        upper_dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> SysResult<Entry> {
        let fd = sys::open_path_at(upper_dir, name)?;
        let st = self.stat_object(0, fd.as_fd())?;
        let ino = self.stack.stable_ino(0, st.st_ino);
        let state = NodeState {
            objects: Objects::one(
                st.st_mode & libc::S_IFMT == libc::S_IFDIR,
                LayerObject {
                    layer: 0,
                    fd: ObjFd::open(fd),
                },
            ),
            parent: Some(parent.clone()),
            name: name.to_owned(),
        };
        let node = self
            .inodes
            .lookup_or_insert(ino, st.st_mode & libc::S_IFMT, state);
        Ok(Entry {
            id: node.id,
            attr: self.attr_from_stat(&node, &st, false),
        })
    }

    /// Moves a finished `work/tmp` to `upper_dir/name`, replacing a whiteout there (a new
    /// directory then becomes opaque, hiding what the whiteout hid). A new directory in a
    /// merged parent is made opaque as well, as the kernel does: nothing below can show
    /// through it, so later lookups need not visit the lower layers.
    fn install(
        &self,
        staged: Staged<'_>,
        upper_dir: BorrowedFd<'_>,
        name: &OsStr,
        is_dir: bool,
        parent_merges: bool,
    ) -> SysResult<()> {
        let replaces_whiteout = match sys::stat_at(upper_dir, name) {
            Ok(st) if whiteout::is_whiteout_at(upper_dir, name, &st) => true,
            Ok(_) => return Err(Errno::EXIST),
            Err(Errno::NOENT) => false,
            Err(e) => return Err(e),
        };
        let aufs = whiteout::has_aufs_whiteout(upper_dir, name);
        if is_dir && (replaces_whiteout || aufs || parent_merges) {
            let fd = sys::open_path_at(staged.work(), staged.name())?;
            whiteout::set_opaque(self.xattr_ns, fd.as_fd())?;
        }
        let how = if replaces_whiteout {
            Publish::Exchange
        } else {
            Publish::NoReplace
        };
        staged.publish(upper_dir, name, how, DirTimes::Update)?;
        if aufs {
            let _ = sys::unlink_at(upper_dir, &whiteout::aufs_whiteout_name(name));
        }
        Ok(())
    }

    /// A hard link of `id` as `newparent/newname`.
    pub fn link(&self, id: u64, newparent: u64, newname: &OsStr) -> SysResult<Entry> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let node = self.node(id)?;
        if node.is_dir() {
            return Err(Errno::PERM);
        }
        let parent_node = self.dir_node(newparent)?;
        if self.resolve_in(&parent_node, newname)?.is_some() {
            return Err(Errno::EXIST);
        }
        let source = self.upper_fd_of(&node)?;
        let upper_dir = self.upper_fd_of(&parent_node)?;
        let staged = Staged::new(self.work_fd()?);
        sys::link_fd_at(source.as_fd(), staged.work(), staged.name())?;
        self.install(staged, upper_dir.as_fd(), newname, false, false)?;
        self.lookup(newparent, newname)
    }

    /// unlink(2) and rmdir(2).
    pub fn remove(&self, parent: u64, name: &OsStr, is_rmdir: bool) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let parent_node = self.dir_node(parent)?;
        let child = self.resolve_in(&parent_node, name)?.ok_or(Errno::NOENT)?;
        match (is_rmdir, child.is_dir()) {
            (true, false) => return Err(Errno::NOTDIR),
            (false, true) => return Err(Errno::ISDIR),
            _ => {}
        }
        if is_rmdir {
            self.ensure_empty(&child)?;
        }
        let seen_in_lower = !self.stack.is_upper(child.objects.top().layer);
        let child = self.copy_up_if_linked(&parent_node, name, child)?;
        let upper_dir = self.upper_fd_of(&parent_node)?;
        let in_upper = self.stack.is_upper(child.objects.top().layer);
        if in_upper && !is_rmdir {
            self.keep_while_held(child.ino);
        }
        if self.lower_has(&parent_node, name, seen_in_lower)? {
            return self.whiteout_name(upper_dir.as_fd(), name, in_upper);
        }
        if !in_upper {
            return Err(Errno::NOENT);
        }
        if is_rmdir {
            // Only whiteouts can be left inside: clear them so rmdir(2) succeeds.
            let fd = sys::open_at(
                upper_dir.as_fd(),
                name,
                OFlags::RDONLY | OFlags::DIRECTORY,
                0,
            )?;
            sys::remove_tree_contents(fd.as_fd())?;
            sys::rmdir_at(upper_dir.as_fd(), name)
        } else {
            sys::unlink_at(upper_dir.as_fd(), name)
        }
    }

    /// The whiteout forms to try for this mount, in order.
    fn whiteout_forms(&self) -> &'static [WhiteoutForm] {
        match self.whiteout_mode {
            WhiteoutMode::Chardev => &[WhiteoutForm::Chardev],
            WhiteoutMode::Xattr => &[WhiteoutForm::Xattr],
            WhiteoutMode::Auto => &[
                WhiteoutForm::Chardev,
                WhiteoutForm::Xattr,
                WhiteoutForm::Aufs,
            ],
        }
    }

    /// Replaces `upper_dir/name` (if `existing`) or adds there a whiteout, atomically for the
    /// chardev and xattr forms (built in the workdir, then exchanged or renamed into place).
    pub fn whiteout_name(
        &self,
        upper_dir: BorrowedFd<'_>,
        name: &OsStr,
        existing: bool,
    ) -> SysResult<()> {
        let work = self.work_fd()?;
        let mut last = Errno::PERM;
        for &form in self.whiteout_forms() {
            if form == WhiteoutForm::Aufs {
                if existing {
                    remove_any(upper_dir, name)?;
                }
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC;
                sys::open_at(upper_dir, &whiteout::aufs_whiteout_name(name), flags, 0o600)?;
                return Ok(());
            }
            let staged = Staged::new(work);
            if let Err(e) = whiteout::make_whiteout(form, self.xattr_ns, work, staged.name()) {
                last = e;
                continue;
            }
            if form == WhiteoutForm::Xattr {
                whiteout::mark_may_hold_xattr_whiteouts(self.xattr_ns, upper_dir)?;
            }
            let how = if existing {
                Publish::Exchange
            } else {
                Publish::NoReplace
            };
            staged.publish(upper_dir, name, how, DirTimes::Update)?;
            return Ok(());
        }
        Err(last)
    }

    /// Copies a whole directory tree up and makes it opaque, so it no longer depends on the
    /// lower layers and can move anywhere (a form the kernel reads without redirects).
    fn copy_up_tree(&self, node: &Arc<Node>) -> SysResult<()> {
        self.copy_up(node)?;
        // Filling the directory must not change the times users see on it.
        let times = sys::stat_fd(node.read().top_fd()?.as_fd())?;
        let entries = {
            let state = node.read();
            readdir::list(&self.stack, &state.layer_fds())?
        };
        for entry in entries {
            let Some(resolved) = self.resolve_in(node, &entry.name)? else {
                continue;
            };
            let is_dir = resolved.is_dir();
            let child = self.child_node(node, &entry.name, resolved);
            if is_dir {
                self.copy_up_tree(&child)?;
            } else {
                self.copy_up(&child)?;
            }
        }
        let mut state = node.write();
        let upper_ref = state.top_fd()?;
        let upper = upper_ref.as_fd();
        // An opaque upper directory must hold no whiteouts: the kernel lists a directory
        // that merges nothing as it is on disk.
        whiteout::remove_whiteouts(upper)?;
        whiteout::set_opaque(self.xattr_ns, upper)?;
        restore_times(upper, &times);
        state.objects.drop_below();
        Ok(())
    }

    /// rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE.
    pub fn rename(
        &self,
        oldparent: u64,
        oldname: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        if flags & !(libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE) != 0 || (exchange && noreplace)
        {
            return Err(Errno::INVAL);
        }
        let old_dir = self.dir_node(oldparent)?;
        let new_dir = self.dir_node(newparent)?;
        let src = self.resolve_in(&old_dir, oldname)?.ok_or(Errno::NOENT)?;
        let src = self.link_up_if_indexed(&old_dir, oldname, src)?;
        let dst = match self.resolve_in(&new_dir, newname)? {
            Some(d) => Some(self.link_up_if_indexed(&new_dir, newname, d)?),
            None => None,
        };
        if let Some(dst) = &dst {
            if dst.ino == src.ino {
                return Ok(()); // the same object: rename(2) does nothing
            }
            if noreplace {
                return Err(Errno::EXIST);
            }
            if !exchange {
                match (src.is_dir(), dst.is_dir()) {
                    (true, false) => return Err(Errno::NOTDIR),
                    (false, true) => return Err(Errno::ISDIR),
                    (true, true) => self.ensure_empty(dst)?,
                    _ => {}
                }
            }
        } else if exchange {
            return Err(Errno::NOENT);
        }
        let src_is_dir = src.is_dir();
        // What the first resolutions saw, for the whiteout and opacity decisions below.
        let src_seen_in_lower = !self.stack.is_upper(src.objects.top().layer);
        let dst_seen_in_lower = dst
            .as_ref()
            .is_some_and(|d| !self.stack.is_upper(d.objects.top().layer));
        let src_node = self.child_node(&old_dir, oldname, src);
        let dst = match dst {
            Some(d) if !exchange => Some(self.copy_up_if_linked(&new_dir, newname, d)?),
            other => other,
        };
        let dst_node = dst.map(|d| {
            let is_dir = d.is_dir();
            (self.child_node(&new_dir, newname, d), is_dir)
        });
        let same_dir = oldparent == newparent;
        // Directories that still merge with lower ones move as complete upper copies, or
        // with `redirect_dir=on` as their upper copy pointing at their lower part.
        let src_redirected = src_is_dir && self.move_merged_dir(&src_node, same_dir)?;
        self.copy_up(&src_node)?;
        let mut dst_redirected = false;
        if let Some((node, is_dir)) = &dst_node {
            if exchange && *is_dir {
                dst_redirected = self.move_merged_dir(node, same_dir)?;
            }
            if exchange {
                self.copy_up(node)?;
            }
        }
        let old_upper = self.upper_fd_of(&old_dir)?;
        let new_upper = self.upper_fd_of(&new_dir)?;
        let (old_upper, new_upper) = (old_upper.as_fd(), new_upper.as_fd());
        if exchange {
            // A directory landing where a lower layer shows the same name must hide it
            // (a redirected one looks for its lower part elsewhere).
            if src_is_dir
                && !src_redirected
                && self.lower_has(&new_dir, newname, dst_seen_in_lower)?
            {
                whiteout::set_opaque(self.xattr_ns, src_node.read().top_fd()?.as_fd())?;
            }
            if let Some((node, true)) = &dst_node
                && !dst_redirected
                && self.lower_has(&old_dir, oldname, src_seen_in_lower)?
            {
                whiteout::set_opaque(self.xattr_ns, node.read().top_fd()?.as_fd())?;
            }
            sys::rename_at(
                old_upper,
                oldname,
                new_upper,
                newname,
                RenameFlags::EXCHANGE,
            )?;
        } else {
            let target = Target {
                dir: &new_dir,
                upper: new_upper,
                name: newname,
                seen_in_lower: dst_seen_in_lower,
            };
            if let Some((node, false)) = &dst_node {
                self.keep_while_held(node.ino);
            }
            self.prepare_target(target, src_is_dir, src_redirected, &src_node)?;
            let whiteout_old = self.lower_has(&old_dir, oldname, src_seen_in_lower)?;
            // RENAME_WHITEOUT leaves a 0/0 whiteout in the same atomic step (another configured
            // form then replaces it, atomically too); where it is refused, the whiteout
            // follows the rename.
            let atomic = whiteout_old
                && sys::rename_at(
                    old_upper,
                    oldname,
                    new_upper,
                    newname,
                    RenameFlags::WHITEOUT,
                )
                .is_ok();
            if atomic && self.whiteout_mode == WhiteoutMode::Xattr {
                self.whiteout_name(old_upper, oldname, true)?;
            }
            if !atomic {
                sys::rename_at(old_upper, oldname, new_upper, newname, RenameFlags::empty())?;
                if whiteout_old {
                    self.whiteout_name(old_upper, oldname, false)?;
                }
            }
            let aufs = whiteout::aufs_whiteout_name(newname);
            let _ = sys::unlink_at(new_upper, &aufs);
        }
        self.moved(&src_node, &new_dir, newname);
        if let (true, Some((node, _))) = (exchange, &dst_node) {
            self.moved(node, &old_dir, oldname);
        }
        Ok(())
    }

    /// Before a directory with lower parts is renamed: copies it up whole (the default), or
    /// with `redirect_dir=on` only the directory itself, tagged with a redirect to its lower
    /// part (the full copy remains the fallback where the redirect cannot be written).
    /// Returns whether it was redirected.
    fn move_merged_dir(&self, node: &Arc<Node>, same_dir: bool) -> SysResult<bool> {
        if !self.has_lower_part(node) {
            return Ok(false);
        }
        if self.redirect_dir {
            self.copy_up(node)?;
            self.copy_up_links_inside(node)?;
            match self.set_redirect(node, same_dir) {
                Ok(()) => return Ok(true),
                Err(e) => log::debug!("no redirect ({e}): copying the directory up whole"),
            }
        }
        self.copy_up_tree(node)?;
        Ok(false)
    }

    /// Readies `upper/newname` to receive a renamed object: drops a whiteout or an emptied
    /// upper directory there, and makes a moved directory opaque over a lower one (unless
    /// it is `redirected`: it looks for its lower part elsewhere).
    fn prepare_target(
        &self,
        target: Target<'_>,
        src_is_dir: bool,
        redirected: bool,
        src_node: &Node,
    ) -> SysResult<()> {
        let Target {
            dir,
            upper,
            name,
            seen_in_lower,
        } = target;
        match sys::stat_at(upper, name) {
            // A directory cannot be renamed over a (non-directory) whiteout: drop it first.
            Ok(st) if src_is_dir && whiteout::is_whiteout_at(upper, name, &st) => {
                sys::unlink_at(upper, name)?;
            }
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                let fd = sys::open_at(upper, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
                sys::remove_tree_contents(fd.as_fd())?;
            }
            _ => {}
        }
        if src_is_dir && !redirected && self.lower_has(dir, name, seen_in_lower)? {
            whiteout::set_opaque(self.xattr_ns, src_node.read().top_fd()?.as_fd())?;
        }
        Ok(())
    }

    /// Before one name of a hard-linked lower file goes away, copies the file up (with all
    /// its visible names, see `hardlinks`), so the names left keep the right link count, as
    /// the kernel's index does. Returns the name's resolution afterwards.
    fn copy_up_if_linked(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        child: Resolved,
    ) -> SysResult<Resolved> {
        let child = self.link_up_if_indexed(parent, name, child)?;
        let linked_lower = !child.is_dir()
            && child.stat.st_nlink > 1
            && !self.stack.is_upper(child.objects.top().layer);
        if !linked_lower {
            return Ok(child);
        }
        let node = self.child_node(parent, name, child);
        self.copy_up(&node)?;
        self.resolve_in(parent, name)?.ok_or(Errno::NOENT)
    }

    /// ENOTEMPTY unless the merged directory shows no entries (whiteouts may remain).
    fn ensure_empty(&self, dir: &Resolved) -> SysResult<()> {
        let dirs: Vec<_> = dir
            .objects
            .iter()
            .filter_map(|o| Some((o.layer, o.fd.held()?)))
            .collect();
        if readdir::list(&self.stack, &dirs)?.is_empty() {
            Ok(())
        } else {
            Err(Errno::NOTEMPTY)
        }
    }

    fn has_lower_part(&self, node: &Node) -> bool {
        node.read()
            .objects
            .iter()
            .any(|o| !self.stack.is_upper(o.layer))
    }

    /// Records a node's new place after a rename.
    fn moved(&self, node: &Arc<Node>, new_parent: &Arc<Node>, new_name: &OsStr) {
        let mut state = node.write();
        self.inodes
            .set_name(node, &mut state, new_parent.clone(), new_name);
        if node.is_dir() && self.stack.is_upper(state.top().layer) {
            // The moved directory is opaque or upper-only now: it no longer merges below.
            let opaque = state
                .top_fd()
                .and_then(|fd| whiteout::is_opaque_dir(fd.as_fd()))
                .unwrap_or(false);
            if opaque {
                state.objects.drop_below();
            }
        }
    }
}
