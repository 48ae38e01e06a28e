//! The inode table: FUSE node ids ↔ overlay nodes, lookup counts and `forget`.
//!
//! As in libfuse's passthrough_hp, every live node holds `O_PATH` fds of its layer objects, so
//! no request ever re-resolves a path. A node's id is its stable inode number, so hard links
//! and repeated lookups share one node, which keeps the kernel's page cache coherent between
//! them. The table is sharded; each node has its own lock.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use fuser::BackingId;

use crate::lookup::{FdRef, LayerObject, Objects};
use crate::sys::SysResult;

/// A node's open files, as far as the kernel's I/O mode rules care.
#[derive(Debug, Default)]
pub struct NodeIo {
    pub(crate) cached_opens: u32,
    pub(crate) backing: Weak<BackingId>,
}

pub type NodeIoLock = Mutex<NodeIo>;

pub const ROOT_ID: u64 = 1;
const SHARDS: usize = 32;

/// What a node is made of; changes on copy-up and rename.
#[derive(Debug)]
pub struct NodeState {
    pub objects: Objects,
    /// Parent directory and name, for copy-up of the parent chain (`None` for the root).
    /// Holding the parent keeps the chain to the root alive, like the kernel's dentries.
    pub parent: Option<Arc<Node>>,
    pub name: OsString,
}

impl NodeState {
    pub fn top(&self) -> &LayerObject {
        self.objects.top()
    }

    /// An fd of the topmost object (opened for the call if the node holds none).
    pub fn top_fd(&self) -> SysResult<FdRef<'_>> {
        self.objects.top().fd.get()
    }

    /// `(layer, fd)` of every merged directory, topmost first (directories hold their fds).
    pub fn layer_fds(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        self.objects
            .iter()
            .filter_map(|o| Some((o.layer, o.fd.held()?)))
            .collect()
    }
}

#[derive(Debug)]
pub struct Node {
    pub id: u64,
    /// The inode number users see; stable for the node's life.
    pub ino: u64,
    /// `S_IFMT` bits of the node; a name never changes type while it is the same node.
    pub file_type: u32,
    lookups: AtomicU64,
    /// Reclaim epoch of the last lookup (see [`crate::fdbudget::epoch`]).
    last_used: AtomicU32,
    // Lock order (outermost first): `copy_up`, then `state`, then `io`; a parent's locks
    // before a child's. Namespace operations need no lock of their own: the kernel holds the
    // parent directories' i_rwsem across each create, unlink and rename it sends.
    /// Held across a copy-up of this node (data copy and sync), so that two copy-ups of one
    /// node never run at once while `state` stays free for readers.
    copy_up: Mutex<()>,
    state: RwLock<NodeState>,
    /// Open files of this node, for the kernel's one-I/O-mode-per-inode rule.
    pub io: NodeIoLock,
}

impl Node {
    pub fn read(&self) -> RwLockReadGuard<'_, NodeState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, NodeState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The copy-up lock (see the lock order above).
    pub fn lock_copy_up(&self) -> std::sync::MutexGuard<'_, ()> {
        self.copy_up.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_dir(&self) -> bool {
        self.file_type == libc::S_IFDIR
    }

    pub fn last_used(&self) -> u32 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Fds this node holds open (0 for a lower non-directory).
    pub fn held_fd_count(&self) -> usize {
        let state = self.read();
        state
            .objects
            .iter()
            .filter(|o| o.fd.held().is_some())
            .count()
    }

    /// A node outside the table (the kernel holds no reference to it), used to copy up
    /// objects the kernel has not looked up, e.g. the contents of a renamed directory.
    pub fn detached(ino: u64, file_type: u32, state: NodeState) -> Node {
        Node {
            id: ino,
            ino,
            file_type,
            lookups: AtomicU64::new(0),
            last_used: AtomicU32::new(0),
            copy_up: Mutex::new(()),
            state: RwLock::new(state),
            io: Default::default(),
        }
    }
}

fn shard_of(x: u64) -> usize {
    // Fibonacci hashing spreads sequential ids and inode numbers over the shards.
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
}

type Shard = RwLock<HashMap<u64, Arc<Node>>>;

fn read_shard(s: &Shard) -> RwLockReadGuard<'_, HashMap<u64, Arc<Node>>> {
    s.read().unwrap_or_else(|e| e.into_inner())
}

fn write_shard(s: &Shard) -> RwLockWriteGuard<'_, HashMap<u64, Arc<Node>>> {
    s.write().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
pub struct InodeTable {
    shards: Vec<Shard>,
    /// Nodes freed so far; every so often the allocator is asked to return free memory.
    freed: AtomicU64,
}

impl InodeTable {
    /// A table holding only the root node.
    pub fn new(root_state: NodeState, root_ino: u64) -> InodeTable {
        let table = InodeTable {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            freed: AtomicU64::new(0),
        };
        let root = Arc::new(Node {
            id: ROOT_ID,
            ino: root_ino,
            file_type: libc::S_IFDIR,
            // The root is never forgotten.
            lookups: AtomicU64::new(1 << 62),
            last_used: AtomicU32::new(0),
            copy_up: Mutex::new(()),
            state: RwLock::new(root_state),
            io: Default::default(),
        });
        write_shard(&table.shards[shard_of(ROOT_ID)]).insert(ROOT_ID, root);
        table
    }

    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        read_shard(&self.shards[shard_of(id)]).get(&id).cloned()
    }

    /// The node with id `ino`, counting one lookup; made from `state` if it is not live.
    ///
    /// Node ids are the inode numbers users see (fuser sends `attr.ino` as the node id). They
    /// are unique while a node lives because the node's `O_PATH` fds keep its objects
    /// allocated, so the filesystem cannot hand their inode numbers to new objects.
    /// A live node keeps its own state: it is kept current by the operations that change it.
    pub fn lookup_or_insert(&self, ino: u64, file_type: u32, state: NodeState) -> Arc<Node> {
        let mut shard = write_shard(&self.shards[shard_of(ino)]);
        if let Some(node) = shard.get(&ino)
            && node.file_type == file_type
        {
            node.lookups.fetch_add(1, Ordering::AcqRel);
            node.last_used
                .store(crate::fdbudget::epoch(), Ordering::Relaxed);
            return node.clone();
        }
        let node = Arc::new(Node {
            id: ino,
            ino,
            file_type,
            lookups: AtomicU64::new(1),
            last_used: AtomicU32::new(crate::fdbudget::epoch()),
            copy_up: Mutex::new(()),
            state: RwLock::new(state),
            io: Default::default(),
        });
        shard.insert(ino, node.clone());
        node
    }

    /// The kernel dropped `n` references; the node goes when none remain.
    pub fn forget(&self, id: u64, n: u64) {
        let mut shard = write_shard(&self.shards[shard_of(id)]);
        let Some(node) = shard.get(&id) else { return };
        let left = node.lookups.load(Ordering::Acquire).saturating_sub(n);
        node.lookups.store(left, Ordering::Release);
        if left == 0 && id != ROOT_ID {
            shard.remove(&id);
            // Tables never shrink by themselves: give memory back once a big tree is gone.
            if shard.capacity() > 4096 && shard.len() * 4 < shard.capacity() {
                let keep = shard.len() * 2;
                shard.shrink_to(keep);
            }
            drop(shard);
            if self.freed.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
                crate::sys::release_free_memory();
            }
        }
    }

    /// Every live node (for reclaim; no node lock is taken under a shard lock).
    pub fn snapshot(&self) -> Vec<Arc<Node>> {
        let mut nodes = Vec::new();
        for shard in &self.shards {
            nodes.extend(read_shard(shard).values().cloned());
        }
        nodes
    }

    /// Number of live nodes (for tests and memory checks).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read_shard(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
