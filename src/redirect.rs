//! Directory renames with `redirect_dir=on` (the kernel's dir.c, `ovl_set_redirect`): a
//! directory with lower parts moves as its upper copy alone, tagged `overlay.redirect` with
//! where its lower part lives, instead of being copied up whole.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::inode::Node;
use crate::linkmap;
use crate::overlay::Overlay;
use crate::sys::{Errno, SysResult};
use crate::whiteout;

impl Overlay {
    /// Tags the copied-up directory `node`, about to be renamed, with the redirect the kernel
    /// would write: its current name when it stays in the same directory, else the absolute
    /// path of its lower part from the layer roots. A redirect it already has is kept when it
    /// is absolute, or when the directory stays in the same parent.
    pub fn set_redirect(&self, node: &Arc<Node>, same_dir: bool) -> SysResult<()> {
        let upper = node.read().top_fd()?.as_fd().try_clone_to_owned();
        let upper = upper.map_err(|_| Errno::MFILE)?;
        if let Some(old) = whiteout::dir_markers(upper.as_fd())?.redirect
            && (same_dir || old.starts_with(b"/"))
        {
            return Ok(());
        }
        let value = if same_dir {
            node.read().name.as_bytes().to_vec()
        } else {
            self.lower_path(node)?
        };
        whiteout::set_redirect(self.xattr_ns, upper.as_fd(), &value)
    }

    /// Before a directory moves with a redirect: copies up the hard-linked lower files named
    /// inside it, with all their names. Their other names are found by their paths in the
    /// lower layer, which no longer lead to them through the mount once the directory has
    /// moved (with the full copy, the copy itself does this).
    pub fn copy_up_links_inside(&self, dir: &Arc<Node>) -> SysResult<()> {
        // One walk of the directory's own lower parts: the layer-wide map of hard links is
        // built only when one is found (by the copy-up).
        let lower_dirs: Vec<(usize, OwnedFd)> = {
            let state = dir.read();
            state
                .objects
                .iter()
                .filter(|o| !self.stack.is_upper(o.layer))
                .filter_map(|o| Some((o.layer, o.fd.owned_clone().ok()?)))
                .collect()
        };
        for (layer, fd) in lower_dirs {
            for (ino, paths) in linkmap::multi_link_files(fd.as_fd()) {
                for path in paths {
                    self.copy_up_link_below(dir, path.as_bytes(), layer, ino)?;
                }
            }
        }
        Ok(())
    }

    /// Copies up (with all its names) lower object (`layer`, `ino`) if the merged view still
    /// shows it at `rest` below `dir`.
    fn copy_up_link_below(
        &self,
        dir: &Arc<Node>,
        rest: &[u8],
        layer: usize,
        ino: u64,
    ) -> SysResult<()> {
        let components: Vec<&OsStr> = rest.split(|b| *b == b'/').map(OsStr::from_bytes).collect();
        let Some((name, dirs)) = components.split_last() else {
            return Ok(());
        };
        let mut parent = dir.clone();
        for component in dirs {
            match self.resolve_in(&parent, component)? {
                Some(r) if r.is_dir() => parent = self.child_node(&parent, component, r),
                _ => return Ok(()),
            }
        }
        let Some(target) = self.resolve_in(&parent, name)? else {
            return Ok(());
        };
        if target.indexed_lower == Some((layer, ino)) {
            self.link_up_if_indexed(&parent, name, target)?;
        } else if target.objects.top().layer == layer && target.stat.st_ino == ino {
            let node = self.child_node(&parent, name, target);
            self.copy_up(&node)?;
        }
        Ok(())
    }

    /// The absolute path, from the layer roots, of `node`'s lower part: its names up to the
    /// root, where each ancestor's own redirect stands in for its name (and an absolute one
    /// for the whole path above it).
    fn lower_path(&self, node: &Arc<Node>) -> SysResult<Vec<u8>> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut current = node.clone();
        loop {
            let (parent, name, redirect) = {
                let state = current.read();
                let redirect = match state.top().fd.held() {
                    Some(fd) if self.stack.is_upper(state.top().layer) => {
                        whiteout::dir_markers(fd)?.redirect
                    }
                    _ => None,
                };
                (state.parent.clone(), state.name.clone(), redirect)
            };
            let Some(parent) = parent else { break };
            match redirect {
                Some(path) if path.starts_with(b"/") => {
                    parts.push(path[1..].to_vec());
                    break;
                }
                Some(name) => parts.push(name),
                None => parts.push(name.as_bytes().to_vec()),
            }
            current = parent;
        }
        let mut path = Vec::new();
        for part in parts.iter().rev().filter(|p| !p.is_empty()) {
            path.push(b'/');
            path.extend_from_slice(part);
        }
        Ok(path)
    }
}
