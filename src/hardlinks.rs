//! Hard links across copy-up: when a multi-link lower file is copied up, all of
//! its visible names are copied up at once as hard links of the new upper file, so the names
//! stay linked within the mount, after a remount, and under the kernel's overlayfs — without
//! the kernel's index directory.
//!
//! Finding the other names needs the layer's (inode → paths) map of multi-link files (see
//! [`crate::linkmap`]).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::inode::{Node, ROOT_ID};
use crate::overlay::Overlay;
use crate::sys::{self, Errno, SysResult};
use crate::workdir::{DirTimes, Publish, Staged};

impl Overlay {
    /// After `upper_file` was made the copy of lower object (`layer`, `ino`), links it at
    /// every other name of that object still visible through the mount.
    pub fn copy_up_other_links(&self, layer: usize, ino: u64, upper_file: BorrowedFd<'_>) {
        let map = self
            .hardlinks
            .get_or_build(layer, self.stack.layers[layer].root_fd());
        let Some(paths) = map.get(&ino) else { return };
        for path in paths {
            if let Err(e) = self.link_other_name(layer, ino, path, upper_file) {
                log::debug!("hard link {path:?} not copied up: {e}");
            }
        }
    }

    /// Before a name that shows a lower hard link through the kernel's index is renamed,
    /// replaced or deleted: links every such name of that file into the upper, as the kernel
    /// does when it copies an indexed name up, so the names left keep the right link count.
    /// `overlay.nlink` then counts every upper link but the index entry. Returns the name's
    /// resolution afterwards.
    pub fn link_up_if_indexed(
        &self,
        parent: &Node,
        name: &OsStr,
        child: crate::lookup::Resolved,
    ) -> SysResult<crate::lookup::Resolved> {
        let Some((layer, ino)) = child.indexed_lower else {
            return Ok(child);
        };
        let upper_file = child.objects.top().fd.owned_clone()?;
        self.copy_up_other_links(layer, ino, upper_file.as_fd());
        crate::index::set_nlink(upper_file.as_fd(), crate::index::ALL_LINKED_UP)?;
        self.resolve_in(parent, name)?.ok_or(Errno::NOENT)
    }

    /// A directory and name through which the merged view still shows lower object
    /// (`layer`, `ino`), for a hard-linked node whose own name was deleted.
    pub fn visible_other_name(&self, layer: usize, ino: u64) -> Option<(Arc<Node>, OsString)> {
        let map = self
            .hardlinks
            .get_or_build(layer, self.stack.layers[layer].root_fd());
        map.get(&ino)?.iter().find_map(|path| {
            let (dir, name) = self.resolve_parent(path).ok()?;
            let target = self.resolve_in(&dir, &name).ok()??;
            let shows_it = target.objects.top().layer == layer && target.stat.st_ino == ino;
            shows_it.then_some((dir, name))
        })
    }

    /// The merged directory node holding `path` (from the root) and the last component.
    fn resolve_parent(&self, path: &OsStr) -> SysResult<(Arc<Node>, OsString)> {
        let components: Vec<&OsStr> = path
            .as_bytes()
            .split(|b| *b == b'/')
            .map(OsStr::from_bytes)
            .collect();
        let (name, dirs) = components.split_last().ok_or(Errno::INVAL)?;
        let mut dir = self.node(ROOT_ID)?;
        for component in dirs {
            let resolved = self.resolve_in(&dir, component)?.ok_or(Errno::NOENT)?;
            if !resolved.is_dir() {
                return Err(Errno::NOTDIR);
            }
            dir = self.child_node(&dir, component, resolved);
        }
        Ok((dir, (*name).to_owned()))
    }

    fn link_other_name(
        &self,
        layer: usize,
        ino: u64,
        path: &OsStr,
        upper_file: BorrowedFd<'_>,
    ) -> SysResult<()> {
        let (dir, name) = self.resolve_parent(path)?;
        let name = name.as_os_str();
        // Only a name through which the merged view still shows this very lower object
        // (directly, or through the kernel's index).
        let target = self.resolve_in(&dir, name)?.ok_or(Errno::NOENT)?;
        let top = target.objects.top();
        let shows_lower = top.layer == layer && target.stat.st_ino == ino;
        if !shows_lower && target.indexed_lower != Some((layer, ino)) {
            return Ok(());
        }
        self.copy_up(&dir)?;
        let upper_dir = dir.read().top().fd.owned_clone()?;
        let staged = Staged::new(self.work_fd()?);
        sys::link_fd_at(upper_file, staged.work(), staged.name())?;
        // Another name of an object already up: nothing changes in that directory's view.
        staged.publish(upper_dir.as_fd(), name, Publish::NoReplace, DirTimes::Keep)?;
        Ok(())
    }
}
