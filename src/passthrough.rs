//! The data path of an open file: FUSE passthrough or the daemon with the page cache.
//!
//! The kernel keeps one I/O mode per inode: while any open of an inode is in cached mode, a
//! passthrough open of it fails, and all passthrough opens must share one backing file. So:
//! - every file goes through passthrough where the daemon may register backing files (one
//!   `BackingId` per node, shared while open): upper files, and lower files opened read-only;
//! - when a lower file with passthrough opens is copied up, those opens keep reading the
//!   lower file (as mmaps of it do under the kernel's overlayfs); the node is superseded (see
//!   the `inode` module), so that new opens land on a new kernel inode backed by the upper
//!   copy;
//! - while a node has cached opens, new opens of it are cached too.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use fuser::{InitFlags, KernelConfig};

use crate::config::PassthroughMode;
use crate::handles::{DataPath, MakeBacking};
use crate::inode::Node;
use crate::overlay::Overlay;
use crate::sys;

impl Overlay {
    /// Negotiates the data path at FUSE INIT: passthrough where the kernel offers it and the
    /// daemon may register backing files (CAP_SYS_ADMIN), else the writeback cache. The two
    /// exclude each other.
    pub fn negotiate_data_path(&self, config: &mut KernelConfig) {
        let offered = config.capabilities();
        let want_passthrough = match self.passthrough_mode {
            PassthroughMode::Off => false,
            PassthroughMode::On => true,
            PassthroughMode::Auto => sys::can_use_trusted_xattrs(),
        };
        if want_passthrough {
            if offered.contains(InitFlags::FUSE_PASSTHROUGH)
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok()
            {
                self.passthrough_on.store(true, Ordering::Relaxed);
                return;
            }
            if self.passthrough_mode == PassthroughMode::On {
                log::warn!("passthrough=on, but the kernel does not offer FUSE passthrough");
            }
        }
        if self.writeback_wanted
            && offered.contains(InitFlags::FUSE_WRITEBACK_CACHE)
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_ok()
        {
            self.writeback_on.store(true, Ordering::Relaxed);
        }
    }

    /// Chooses the data path of a new open of `node` whose real fd is `fd` (the caller holds
    /// the node's state, so no copy-up replaces the object `fd` reads meanwhile). `clear_sgid`:
    /// this open's writes must clear setgid (see the `killpriv` module), which only the daemon
    /// path does; returns whether that is still to be done.
    pub fn choose_data_path(
        &self,
        node: &Node,
        fd: BorrowedFd<'_>,
        clear_sgid: bool,
        make_backing: MakeBacking<'_>,
    ) -> (DataPath, bool) {
        let mut io = node.io.lock().unwrap_or_else(|e| e.into_inner());
        if self.passthrough_active() && io.cached_opens == 0 {
            if let Some(backing) = io.backing.upgrade() {
                // The kernel refuses any other open of an inode while it has passthrough
                // opens: join them, and clear setgid now rather than at the first write.
                if clear_sgid && let Err(e) = self.clear_sgid(fd) {
                    log::warn!("cannot clear setgid on open: {e}");
                }
                return (DataPath::Passthrough(backing), false);
            }
            if !clear_sgid {
                match make_backing(fd) {
                    Ok(backing) => {
                        let backing = Arc::new(backing);
                        io.backing = Arc::downgrade(&backing);
                        return (DataPath::Passthrough(backing), false);
                    }
                    Err(e) => {
                        log::debug!("passthrough refused ({e}); serving the file in cached mode")
                    }
                }
            }
        }
        io.cached_opens += 1;
        (DataPath::Cached, clear_sgid)
    }

    /// The bookkeeping side of `release` for a cached open.
    pub fn cached_open_closed(&self, node: &Node) {
        let mut io = node.io.lock().unwrap_or_else(|e| e.into_inner());
        io.cached_opens = io.cached_opens.saturating_sub(1);
    }
}
