//! Directory renames with `redirect_dir=on` (the kernel's dir.c, `ovl_set_redirect`): a
//! directory with lower parts moves as its upper copy alone, tagged `overlay.redirect` with
//! where its lower part lives, instead of being copied up whole.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::inode::Node;
use crate::overlay::Overlay;
use crate::sys::SysResult;
use crate::whiteout;

impl Overlay {
    /// Tags the copied-up directory `node`, about to be renamed, with the redirect the kernel
    /// would write: its current name when it stays in the same directory, else the absolute
    /// path of its lower part from the layer roots. A redirect it already has is kept when it
    /// is absolute, or when the directory stays in the same parent.
    pub fn set_redirect(&self, node: &Arc<Node>, same_dir: bool) -> SysResult<()> {
        let upper = node.read().top_fd()?.as_fd().try_clone_to_owned();
        let upper = upper.map_err(|_| crate::sys::Errno::MFILE)?;
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
