//! The inode table: FUSE node ids ↔ overlay nodes, lookup counts and `forget`.
//!
//! As in libfuse's passthrough_hp, every live node holds `O_PATH` fds of its layer objects, so
//! no request ever re-resolves a path. A node's id is its stable inode number, so hard links
//! and repeated lookups share one node, which keeps the kernel's page cache coherent between
//! them. The table is sharded; each node has its own lock.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use fuser::BackingId;

use crate::kernel_refs::{KernelRefs, NO_SLOT, NodeRecord};
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
    /// Where the node is recorded for a worker that takes over (see [`crate::kernel_refs`]).
    slot: u32,
    /// Its object is kept in the workdir's orphans while the kernel holds the node.
    orphaned: std::sync::atomic::AtomicBool,
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

    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Its object is now kept as an orphan (its last name is gone).
    pub fn set_orphaned(&self) {
        self.orphaned.store(true, Ordering::Release);
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
            slot: NO_SLOT,
            orphaned: Default::default(),
            last_used: AtomicU32::new(0),
            copy_up: Mutex::new(()),
            state: RwLock::new(state),
            io: Default::default(),
        }
    }
}

/// A live node for one an earlier worker recorded, with the kernel's lookup count of it.
fn inherited_node(id: u64, file_type: u32, state: NodeState, record: &NodeRecord) -> Arc<Node> {
    Arc::new(Node {
        id,
        ino: id,
        file_type,
        lookups: AtomicU64::new(record.lookups),
        slot: record.slot,
        orphaned: record.orphan.into(),
        last_used: AtomicU32::new(crate::fdbudget::epoch()),
        copy_up: Mutex::new(()),
        state: RwLock::new(state),
        io: Default::default(),
    })
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
    /// The shared record of the nodes the kernel holds, under a supervisor.
    refs: OnceLock<Arc<KernelRefs>>,
    /// Nodes an earlier worker handed to the kernel that this one has not resolved yet.
    inherited: Mutex<HashMap<u64, NodeRecord>>,
    inherited_any: std::sync::atomic::AtomicBool,
}

impl InodeTable {
    /// A table holding only the root node.
    pub fn new(root_state: NodeState, root_ino: u64) -> InodeTable {
        let table = InodeTable {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            freed: AtomicU64::new(0),
            refs: OnceLock::new(),
            inherited: Mutex::default(),
            inherited_any: Default::default(),
        };
        let root = Arc::new(Node {
            id: ROOT_ID,
            ino: root_ino,
            file_type: libc::S_IFDIR,
            // The root is never forgotten.
            lookups: AtomicU64::new(1 << 62),
            slot: NO_SLOT,
            orphaned: Default::default(),
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
            let n = node.lookups.fetch_add(1, Ordering::AcqRel) + 1;
            self.record_lookups(node.slot, n);
            node.last_used
                .store(crate::fdbudget::epoch(), Ordering::Relaxed);
            return node.clone();
        }
        if let Some(replaced) = shard.get(&ino) {
            self.unrecord(replaced.slot);
        }
        let (slot, lookups) = self.record_new(ino, file_type, &state);
        let node = Arc::new(Node {
            id: ino,
            ino,
            file_type,
            lookups: AtomicU64::new(lookups),
            slot,
            orphaned: Default::default(),
            last_used: AtomicU32::new(crate::fdbudget::epoch()),
            copy_up: Mutex::new(()),
            state: RwLock::new(state),
            io: Default::default(),
        });
        shard.insert(ino, node.clone());
        node
    }

    /// The kernel dropped `n` references; the node goes when none remain. Returns whether a
    /// node whose object was kept as an orphan went (its orphan link is then removed).
    pub fn forget(&self, id: u64, n: u64) -> bool {
        let mut shard = write_shard(&self.shards[shard_of(id)]);
        let Some(node) = shard.get(&id) else {
            drop(shard);
            return self.forget_inherited(id, n);
        };
        let left = node.lookups.load(Ordering::Acquire).saturating_sub(n);
        node.lookups.store(left, Ordering::Release);
        self.record_lookups(node.slot, left);
        let mut orphan = false;
        if left == 0 && id != ROOT_ID {
            self.unrecord(node.slot);
            orphan = node.orphaned.load(Ordering::Acquire);
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
        orphan
    }

    // ---- the shared record of the kernel's nodes (see `kernel_refs`) ----------------------

    /// Records from now on every node the kernel holds in `refs`; the nodes recorded there
    /// by an earlier worker are resolved when first used ([`InodeTable::inherited`]).
    pub fn attach_refs(&self, refs: Arc<KernelRefs>) {
        let inherited = refs.nodes();
        self.inherited_any
            .store(!inherited.is_empty(), Ordering::Release);
        *self.inherited.lock().unwrap_or_else(|e| e.into_inner()) = inherited;
        let _ = self.refs.set(refs);
    }

    pub fn refs(&self) -> Option<&Arc<KernelRefs>> {
        self.refs.get()
    }

    /// What an earlier worker recorded about node `id`, if it is not live here yet.
    pub fn inherited(&self, id: u64) -> Option<NodeRecord> {
        if !self.inherited_any.load(Ordering::Acquire) {
            return None;
        }
        let map = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&id).cloned()
    }

    /// Makes an inherited node live with the lookup count the kernel has of it.
    pub fn restore(&self, id: u64, file_type: u32, state: NodeState) -> Option<Arc<Node>> {
        let mut shard = write_shard(&self.shards[shard_of(id)]);
        if let Some(node) = shard.get(&id) {
            return Some(node.clone());
        }
        let record = self.take_inherited(id)?;
        let node = inherited_node(id, file_type, state, &record);
        shard.insert(id, node.clone());
        Some(node)
    }

    /// The node `id` made from `state`: live again if an earlier worker handed it to the
    /// kernel (so that a rename or removal through it is recorded), else detached (outside
    /// the table) for copy-up.
    pub fn inherited_or_detached(&self, id: u64, file_type: u32, state: NodeState) -> Arc<Node> {
        if self.inherited_any.load(Ordering::Acquire) && self.inherited(id).is_some() {
            let mut shard = write_shard(&self.shards[shard_of(id)]);
            if let Some(node) = shard.get(&id) {
                return node.clone();
            }
            if let Some(record) = self.take_inherited(id) {
                let node = inherited_node(id, file_type, state, &record);
                shard.insert(id, node.clone());
                return node;
            }
        }
        Arc::new(Node::detached(id, file_type, state))
    }

    /// The node now goes by `name` in `parent` (rename; another name of a hard link).
    pub fn set_name(&self, node: &Node, state: &mut NodeState, parent: Arc<Node>, name: &OsStr) {
        if let Some(refs) = self.refs.get() {
            refs.rename_node(node.slot, parent.id, name);
        }
        state.parent = Some(parent);
        state.name = name.to_owned();
    }

    fn take_inherited(&self, id: u64) -> Option<NodeRecord> {
        if !self.inherited_any.load(Ordering::Acquire) {
            return None;
        }
        let mut map = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        let record = map.remove(&id);
        if map.is_empty() {
            self.inherited_any.store(false, Ordering::Release);
        }
        record
    }

    /// A slot and lookup count for a node entering the table: an inherited node the kernel
    /// looks up again keeps its slot and adds to the kernel's count.
    fn record_new(&self, ino: u64, file_type: u32, state: &NodeState) -> (u32, u64) {
        let Some(refs) = self.refs.get() else {
            return (NO_SLOT, 1);
        };
        let parent = state.parent.as_ref().map_or(ROOT_ID, |p| p.id);
        if let Some(record) = self.take_inherited(ino) {
            let n = record.lookups + 1;
            refs.rename_node(record.slot, parent, &state.name);
            refs.set_lookups(record.slot, n);
            return (record.slot, n);
        }
        (refs.add_node(ino, parent, &state.name, ino, file_type), 1)
    }

    fn record_lookups(&self, slot: u32, n: u64) {
        if let Some(refs) = self.refs.get() {
            refs.set_lookups(slot, n);
        }
    }

    fn unrecord(&self, slot: u32) {
        if let Some(refs) = self.refs.get() {
            refs.remove_node(slot);
        }
    }

    fn forget_inherited(&self, id: u64, n: u64) -> bool {
        if !self.inherited_any.load(Ordering::Acquire) {
            return false;
        }
        let mut map = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        let Some(record) = map.get_mut(&id) else {
            return false;
        };
        record.lookups = record.lookups.saturating_sub(n);
        let (slot, left, orphan) = (record.slot, record.lookups, record.orphan);
        if left == 0 {
            map.remove(&id);
            self.unrecord(slot);
            return orphan;
        }
        self.record_lookups(slot, left);
        false
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
