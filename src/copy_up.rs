//! Copy-up (DESIGN §4): bringing a lower object into the upper layer before it changes.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::inode::Node;
use crate::overlay::Overlay;
use crate::sys::{self, Errno, SysResult};

/// Opens `WORKDIR/work` (creating it as the kernel does) and removes stale temp objects a
/// crash may have left there.
pub fn prepare_workdir(workdir: &Path) -> io::Result<OwnedFd> {
    let root = sys::open_layer_root(workdir)?;
    match rustix::fs::mkdirat(root.as_fd(), "work", rustix::fs::Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let work = sys::open_path_at(root.as_fd(), "work".as_ref())?;
    sys::remove_tree_contents(work.as_fd())?;
    Ok(work)
}

impl Overlay {
    /// Makes sure `node` lives in the upper layer.
    pub fn copy_up(&self, node: &Node) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        if self.stack.is_upper(node.read().top().layer) {
            return Ok(());
        }
        Err(Errno::NOSYS)
    }
}
