//! Open file and directory handles: what an open of the merged view holds until release.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use fuser::BackingId;

use crate::inode::Node;
use crate::kernel_refs::{HandleRecord, KernelRefs, NO_SLOT};
use crate::readdir::MergedEntry;
use crate::sys::{Errno, SysResult};

/// How one open file is served.
#[derive(Debug)]
pub enum DataPath {
    /// Through the daemon; the kernel page cache is kept across opens.
    Cached,
    /// Straight to the backing file by the kernel.
    Passthrough(Arc<BackingId>),
}

/// Registers a backing file with the kernel (the reply's `open_backing`).
pub type MakeBacking<'a> = &'a dyn Fn(BorrowedFd<'_>) -> io::Result<BackingId>;

const SHARDS: usize = 16;
/// Handle numbers of the n-th worker of a supervised mount start at `n << WORKER_SHIFT`.
const WORKER_SHIFT: u32 = 40;

/// An open file: the real fd of the layer object that was on top when it was opened.
#[derive(Debug)]
pub struct FileHandle {
    pub node: Arc<Node>,
    /// Layer the fd belongs to (a lower one for read-only opens before copy-up).
    pub layer: usize,
    pub fd: OwnedFd,
    /// Passthrough keeps the backing id registered while the file is open.
    pub data_path: DataPath,
    /// The first write drops setgid (see [`crate::killpriv`]).
    pub clear_sgid: AtomicBool,
    /// For a read-only open of a lower object that was copied up since: the upper copy,
    /// opened once at the first read after the copy-up.
    pub moved_up: OnceLock<OwnedFd>,
}

/// What `open` and `create` give the dispatcher to reply with.
pub struct Opened {
    pub fh: u64,
    pub backing: Option<Arc<fuser::BackingId>>,
    /// The handle cannot read (a write-only open the daemon could not widen): the kernel
    /// must not use the page cache for it, or a partial-page write would read through it.
    pub direct_io: bool,
}

/// An open directory: its merged listing, taken at opendir (POSIX allows a snapshot).
#[derive(Debug)]
pub struct DirHandle {
    pub node: Arc<Node>,
    /// Built on the first readdir: with the kernel's directory cache (FOPEN_CACHE_DIR) most
    /// opendirs are never followed by one.
    pub(crate) entries: Mutex<Option<Arc<Vec<MergedEntry>>>>,
}

#[derive(Debug)]
pub enum Handle {
    File(FileHandle),
    Dir(Arc<DirHandle>),
}

/// Handle number → the handle and its slot in the shared record.
type HandleShard = RwLock<HashMap<u64, (Arc<Handle>, u32)>>;

/// Handle number → handle (and its slot in the shared record, see [`crate::kernel_refs`]),
/// sharded so concurrent reads never contend on one lock.
#[derive(Debug)]
pub struct HandleTable {
    shards: Vec<HandleShard>,
    next: AtomicU64,
    refs: OnceLock<Arc<KernelRefs>>,
}

impl Default for HandleTable {
    fn default() -> Self {
        HandleTable {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            next: AtomicU64::new(1),
            refs: OnceLock::new(),
        }
    }
}

impl HandleTable {
    pub fn insert(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = self.record(fh, &handle);
        let mut shard = self.shards[fh as usize % SHARDS]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        shard.insert(fh, (Arc::new(handle), slot));
        fh
    }

    pub fn get(&self, fh: u64) -> SysResult<Arc<Handle>> {
        let shard = self.shards[fh as usize % SHARDS]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        shard.get(&fh).map(|(h, _)| h.clone()).ok_or(Errno::BADF)
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        let mut shard = self.shards[fh as usize % SHARDS]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let (handle, slot) = shard.remove(&fh)?;
        drop(shard);
        if let Some(refs) = self.refs.get() {
            refs.remove_handle(slot);
        }
        Some(handle)
    }

    /// Records every handle from now on in `refs` (under a supervisor). Each worker numbers
    /// its handles in its own range: a number an earlier worker gave out may still be in
    /// use by a request sent again (a RELEASE, say), so it must not name a new handle.
    pub fn attach_refs(&self, refs: Arc<KernelRefs>) {
        let worker = refs.next_worker();
        self.next
            .fetch_max((worker << WORKER_SHIFT) | 1, Ordering::Relaxed);
        let _ = self.refs.set(refs);
    }

    /// New handles get numbers above `fh` (one an earlier worker handed to the kernel).
    pub fn skip_past(&self, fh: u64) {
        self.next.fetch_max(fh + 1, Ordering::Relaxed);
    }

    /// Puts back a handle an earlier worker handed to the kernel as `fh`, recorded at `slot`.
    pub fn restore(&self, fh: u64, slot: u32, handle: Handle) {
        self.skip_past(fh);
        let mut shard = self.shards[fh as usize % SHARDS]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        shard.insert(fh, (Arc::new(handle), slot));
    }

    /// Records a handle before the kernel learns its number.
    fn record(&self, fh: u64, handle: &Handle) -> u32 {
        let Some(refs) = self.refs.get() else {
            return NO_SLOT;
        };
        let record = match handle {
            Handle::File(f) => HandleRecord {
                fh,
                node: f.node.id,
                flags: crate::sys::open_flags(f.fd.as_fd()).unwrap_or(libc::O_RDONLY as u32),
                dir: false,
                backing: match &f.data_path {
                    DataPath::Passthrough(b) => Some(b.raw_id()),
                    DataPath::Cached => None,
                },
            },
            Handle::Dir(d) => HandleRecord {
                fh,
                node: d.node.id,
                flags: libc::O_RDONLY as u32,
                dir: true,
                backing: None,
            },
        };
        refs.add_handle(record)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The file handle behind `handle`, or `EISDIR` for a directory handle.
pub fn file_handle(handle: &Handle) -> SysResult<&FileHandle> {
    match handle {
        Handle::File(f) => Ok(f),
        Handle::Dir(_) => Err(Errno::ISDIR),
    }
}
