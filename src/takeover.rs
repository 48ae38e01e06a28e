//! A worker taking over a connection an earlier worker served (it died, or was replaced by an
//! upgrade): the handles the kernel holds are opened again before the first request is read.
//! Nodes are found again lazily, when first used (see `Overlay::node`).

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use fuser::BackingId;
use rustix::fs::OFlags;

use crate::handles::{DataPath, DirHandle, FileHandle, Handle};
use crate::kernel_refs::{HandleRecord, KernelRefs};
use crate::overlay::Overlay;
use crate::sys::{self, SysResult};

impl Overlay {
    /// Opens again every handle recorded in `refs`, under the number the kernel knows it
    /// by. `adopt` takes over a passthrough backing id the earlier worker registered: the
    /// kernel binds an inode to one backing file, so new opens must join that one. Returns
    /// how many handles could not be opened again (their requests fail with `EBADF`).
    pub fn take_over_handles(&self, refs: &KernelRefs, adopt: &dyn Fn(u32) -> BackingId) -> usize {
        let mut lost = 0;
        let (mut kept_backings, mut lost_backings) = (HashSet::new(), HashSet::new());
        for (slot, record) in refs.handles() {
            // A lost handle's number must not name a new one: the kernel may still use it.
            self.handles.skip_past(record.fh);
            match self.reopen_handle(&record, adopt) {
                Ok(handle) => {
                    kept_backings.extend(record.backing);
                    self.handles.restore(record.fh, slot, handle);
                }
                Err(e) => {
                    lost_backings.extend(record.backing);
                    log::warn!(
                        "open file {} (node {}) is lost after a restart: {e}",
                        record.fh,
                        record.node
                    );
                    refs.remove_handle(slot);
                    lost += 1;
                }
            }
        }
        // The kernel's open file keeps its own reference to the backing file: the id only
        // held it open for the mount's life.
        for id in lost_backings.difference(&kept_backings) {
            drop(adopt(*id));
        }
        lost
    }

    fn reopen_handle(
        &self,
        record: &HandleRecord,
        adopt: &dyn Fn(u32) -> BackingId,
    ) -> SysResult<Handle> {
        let node = self.node(record.node)?;
        if record.dir {
            return Ok(Handle::Dir(Arc::new(DirHandle {
                node,
                entries: Mutex::new(None),
            })));
        }
        // The object exists and was opened once: nothing may be created or truncated now.
        let flags = OFlags::from_bits_retain(record.flags)
            & !(OFlags::CREATE | OFlags::EXCL | OFlags::TRUNC | OFlags::NOCTTY);
        let (layer, fd) = {
            let state = node.read();
            let top = state.top_fd()?;
            (state.top().layer, sys::reopen(top.as_fd(), flags)?)
        };
        let data_path = {
            let mut io = node.io.lock().unwrap_or_else(|e| e.into_inner());
            match record.backing {
                Some(id) => {
                    let backing = match io.backing.upgrade() {
                        Some(b) if b.raw_id() == id => b,
                        _ => {
                            let b = Arc::new(adopt(id));
                            io.backing = Arc::downgrade(&b);
                            b
                        }
                    };
                    DataPath::Passthrough(backing)
                }
                None => {
                    io.cached_opens += 1;
                    DataPath::Cached
                }
            }
        };
        Ok(Handle::File(FileHandle {
            node,
            layer,
            fd,
            data_path,
            clear_sgid: AtomicBool::new(false),
            moved_up: OnceLock::new(),
        }))
    }
}
