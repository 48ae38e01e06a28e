//! The inode table: FUSE node ids ↔ overlay nodes, lookup counts and `forget`.
//!
//! As in libfuse's passthrough_hp, every live node holds `O_PATH` fds of its layer objects, so
//! no request ever re-resolves a path. A node's id is normally its stable inode number, so
//! hard links and repeated lookups share one node, which keeps the kernel's page cache
//! coherent between them. A node whose open files still pass through to the data a copy-up
//! replaced is *superseded*: the next lookup of its inode number makes a successor node with
//! a fresh id (an *alias* of that number), so new opens get a kernel inode of their own. All
//! node ids are handed out here. The table is sharded; each node has its own lock.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use fuser::BackingId;

use crate::kernel_refs::{KernelRefs, NO_SLOT, NodeRecord};
use crate::lookup::{FdRef, LayerObject, Objects};
use crate::sys::SysResult;

/// A node's open files, as far as the kernel's I/O mode rules care.
#[derive(Debug, Default)]
pub struct NodeIo {
    pub(crate) cached_opens: u32,
    /// The backing file all passthrough opens of the node share (the kernel allows one per
    /// inode while any passthrough open lives).
    pub(crate) backing: Weak<BackingId>,
}

pub type NodeIoLock = Mutex<NodeIo>;

pub const ROOT_ID: u64 = 1;
const SHARDS: usize = 32;
/// Where fresh node ids (for successors of superseded nodes) start: far above the inode
/// numbers of real filesystems; a collision is still checked for.
const FRESH_IDS: u64 = 0xC000_0000_0000_0000;

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
    /// Open files of this node pass through to data that a copy-up replaced: new opens must
    /// go to a successor node (see the module doc).
    superseded: AtomicBool,
    /// Where the node is recorded for a worker that takes over (see [`crate::kernel_refs`]).
    slot: u32,
    /// Its object is kept in the workdir's orphans while the kernel holds the node.
    orphaned: AtomicBool,
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

    /// Whether new opens of this node must go to its successor (answered with `ESTALE`: the
    /// kernel then looks the name up again and gets the successor's id).
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Puts `upper` on top after a copy-up. Passthrough opens that still read the replaced
    /// object keep it as the kernel inode's backing file, which no open of the new object
    /// may share: the node is then superseded.
    pub fn put_upper(&self, upper: LayerObject) {
        let mut state = self.write();
        let io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        state.objects.put_upper(upper);
        self.supersede_if_backed(&io);
    }

    /// Changes the objects so that the node's data comes from another file (a copy-up, or the
    /// data copy-up of a metadata-only copy), superseding the node while passthrough opens
    /// still read the old one (see [`Node::put_upper`]).
    pub fn change_data_source(
        &self,
        change: impl FnOnce(&mut Objects) -> SysResult<()>,
    ) -> SysResult<()> {
        let mut state = self.write();
        let io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state.objects)?;
        self.supersede_if_backed(&io);
        Ok(())
    }

    fn supersede_if_backed(&self, io: &NodeIo) {
        if io.backing.strong_count() > 0 {
            self.superseded.store(true, Ordering::Release);
        }
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
        Node::new(ino, ino, file_type, 0, NO_SLOT, state)
    }

    fn new(id: u64, ino: u64, file_type: u32, lookups: u64, slot: u32, state: NodeState) -> Node {
        Node {
            id,
            ino,
            file_type,
            lookups: AtomicU64::new(lookups),
            superseded: AtomicBool::new(false),
            slot,
            orphaned: AtomicBool::new(false),
            last_used: AtomicU32::new(if lookups > 0 {
                crate::fdbudget::epoch()
            } else {
                0
            }),
            copy_up: Mutex::new(()),
            state: RwLock::new(state),
            io: Default::default(),
        }
    }
}

/// A live node for one an earlier worker recorded, with the kernel's lookup count of it.
fn inherited_node(id: u64, file_type: u32, state: NodeState, record: &NodeRecord) -> Arc<Node> {
    let node = Node::new(
        id,
        record.ino,
        file_type,
        record.lookups,
        record.slot,
        state,
    );
    node.superseded.store(record.superseded, Ordering::Release);
    node.orphaned.store(record.orphan, Ordering::Release);
    Arc::new(node)
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
    /// Inode number → id of the node that serves it, for every number whose node id is not
    /// the number itself (successors of superseded nodes). Lock order: before any shard.
    aliases: Mutex<HashMap<u64, u64>>,
    /// `aliases.len()`, readable without the lock (written under it and a shard lock).
    alias_count: AtomicUsize,
    next_fresh: AtomicU64,
    /// Nodes freed so far; every so often the allocator is asked to return free memory.
    freed: AtomicU64,
    /// The shared record of the nodes the kernel holds, under a supervisor.
    refs: OnceLock<Arc<KernelRefs>>,
    /// Nodes an earlier worker handed to the kernel that this one has not resolved yet.
    inherited: Mutex<HashMap<u64, NodeRecord>>,
    inherited_any: AtomicBool,
    /// Some inherited node is superseded (checked by lookups of new nodes, without the lock).
    inherited_superseded_any: AtomicBool,
}

impl InodeTable {
    /// A table holding only the root node.
    pub fn new(root_state: NodeState, root_ino: u64) -> InodeTable {
        let table = InodeTable {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            aliases: Mutex::default(),
            alias_count: AtomicUsize::new(0),
            next_fresh: AtomicU64::new(FRESH_IDS),
            freed: AtomicU64::new(0),
            refs: OnceLock::new(),
            inherited: Mutex::default(),
            inherited_any: AtomicBool::new(false),
            inherited_superseded_any: AtomicBool::new(false),
        };
        // The root is never forgotten.
        let root = Arc::new(Node::new(
            ROOT_ID,
            root_ino,
            libc::S_IFDIR,
            1 << 62,
            NO_SLOT,
            root_state,
        ));
        write_shard(&table.shards[shard_of(ROOT_ID)]).insert(ROOT_ID, root);
        table
    }

    fn shard(&self, id: u64) -> &Shard {
        &self.shards[shard_of(id)]
    }

    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        read_shard(self.shard(id)).get(&id).cloned()
    }

    /// The node currently serving inode number `ino`, if one is live (without counting a
    /// lookup).
    pub fn current(&self, ino: u64) -> Option<Arc<Node>> {
        if self.alias_count.load(Ordering::Acquire) > 0 {
            let aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = aliases.get(&ino)
                && let Some(node) = self.get(*id)
            {
                return Some(node);
            }
        }
        self.get(ino).filter(|n| n.ino == ino)
    }

    /// The node serving inode number `ino`, counting one lookup; made from `state` if none
    /// is live, or if the live one is superseded (the new node then gets a fresh id).
    ///
    /// Node ids are normally the inode numbers users see. They are unique while a node lives
    /// because the node's `O_PATH` fds keep its objects allocated, so the filesystem cannot
    /// hand their inode numbers to new objects.
    /// A live node keeps its own state: it is kept current by the operations that change it.
    pub fn lookup_or_insert(&self, ino: u64, file_type: u32, state: NodeState) -> Arc<Node> {
        {
            let mut shard = write_shard(self.shard(ino));
            match shard.get(&ino) {
                Some(node) if node.ino == ino && !node.is_superseded() => {
                    if node.file_type == file_type {
                        let n = node.lookups.fetch_add(1, Ordering::AcqRel) + 1;
                        self.record_lookups(node.slot, n);
                        node.last_used
                            .store(crate::fdbudget::epoch(), Ordering::Relaxed);
                        return node.clone();
                    }
                    // Another object under a number still held: the name was replaced.
                    self.unrecord(node.slot);
                    let node = self.new_node(ino, ino, file_type, state);
                    shard.insert(ino, node.clone());
                    return node;
                }
                None if self.alias_count.load(Ordering::Acquire) == 0
                    && !self.inherited_superseded(ino) =>
                {
                    let node = self.new_node(ino, ino, file_type, state);
                    shard.insert(ino, node.clone());
                    return node;
                }
                _ => {}
            }
        }
        self.lookup_or_insert_aliased(ino, file_type, state)
    }

    /// `lookup_or_insert` when `ino` has (or needs) a node whose id is not `ino`.
    fn lookup_or_insert_aliased(&self, ino: u64, file_type: u32, state: NodeState) -> Arc<Node> {
        let mut aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = aliases.get(&ino) {
            let mut shard = write_shard(self.shard(id));
            match shard.get(&id) {
                Some(node)
                    if node.ino == ino && node.file_type == file_type && !node.is_superseded() =>
                {
                    let n = node.lookups.fetch_add(1, Ordering::AcqRel) + 1;
                    self.record_lookups(node.slot, n);
                    node.last_used
                        .store(crate::fdbudget::epoch(), Ordering::Relaxed);
                    return node.clone();
                }
                // A successor an earlier worker handed out: the kernel holds its id.
                None if self.inherited_successor(id, ino, file_type) => {
                    let node = self.new_node(id, ino, file_type, state);
                    shard.insert(id, node.clone());
                    return node;
                }
                _ => {}
            }
        }
        // No usable successor: the number's own id if it is free, else a fresh one.
        let mut own = write_shard(self.shard(ino));
        let own_id_free = match own.get(&ino) {
            None => !self.inherited_superseded(ino),
            Some(node) => node.ino == ino && !node.is_superseded(),
        };
        if own_id_free {
            aliases.remove(&ino);
            self.alias_count.store(aliases.len(), Ordering::Release);
            if let Some(replaced) = own.get(&ino) {
                self.unrecord(replaced.slot);
            }
            let node = self.new_node(ino, ino, file_type, state);
            own.insert(ino, node.clone());
            return node;
        }
        // Counted before the number's own shard is let go: a lookup that finds the number's
        // node gone (forgotten meanwhile) must see that an alias exists.
        self.alias_count.store(aliases.len() + 1, Ordering::Release);
        drop(own);
        loop {
            let id = self.next_fresh.fetch_add(1, Ordering::Relaxed);
            if id <= ROOT_ID {
                continue;
            }
            let mut shard = write_shard(self.shard(id));
            if shard.contains_key(&id) {
                continue;
            }
            let node = self.new_node(id, ino, file_type, state);
            shard.insert(id, node.clone());
            aliases.insert(ino, id);
            self.alias_count.store(aliases.len(), Ordering::Release);
            return node;
        }
    }

    /// A node entering the table with its first lookup (or, for a node an earlier worker
    /// handed to the kernel, with the kernel's count of it plus this one).
    fn new_node(&self, id: u64, ino: u64, file_type: u32, state: NodeState) -> Arc<Node> {
        let (slot, lookups) = self.record_new(id, ino, file_type, &state);
        Arc::new(Node::new(id, ino, file_type, lookups, slot, state))
    }

    /// The kernel dropped `n` references; the node goes when none remain. Returns whether a
    /// node whose object was kept as an orphan went (its orphan link is then removed).
    pub fn forget(&self, id: u64, n: u64) -> bool {
        let mut shard = write_shard(self.shard(id));
        let Some(node) = shard.get(&id) else {
            drop(shard);
            return self.forget_inherited(id, n);
        };
        let left = node.lookups.load(Ordering::Acquire).saturating_sub(n);
        node.lookups.store(left, Ordering::Release);
        self.record_lookups(node.slot, left);
        if left > 0 || id == ROOT_ID {
            return false;
        }
        if node.id != node.ino {
            // A successor: its alias goes with it (aliases are locked before shards).
            let ino = node.ino;
            drop(shard);
            let mut aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
            shard = write_shard(self.shard(id));
            let Some(node) = shard.get(&id) else {
                return false;
            };
            if node.lookups.load(Ordering::Acquire) > 0 {
                return false; // looked up again meanwhile
            }
            if aliases.get(&ino) == Some(&id) {
                aliases.remove(&ino);
                self.alias_count.store(aliases.len(), Ordering::Release);
            }
        }
        let mut orphan = false;
        if let Some(node) = shard.remove(&id) {
            self.unrecord(node.slot);
            orphan = node.orphaned.load(Ordering::Acquire);
        }
        // Tables never shrink by themselves: give memory back once a big tree is gone.
        if shard.capacity() > 4096 && shard.len() * 4 < shard.capacity() {
            let keep = shard.len() * 2;
            shard.shrink_to(keep);
        }
        drop(shard);
        if self.freed.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
            crate::sys::release_free_memory();
        }
        orphan
    }

    // ---- the shared record of the kernel's nodes (see `kernel_refs`) ----------------------

    /// Records from now on every node the kernel holds in `refs`; the nodes recorded there
    /// by an earlier worker are resolved when first used ([`InodeTable::inherited`]).
    pub fn attach_refs(&self, refs: Arc<KernelRefs>) {
        let inherited = refs.nodes();
        // Fresh ids the earlier worker handed out stay taken while the kernel holds them.
        if let Some(last) = inherited
            .keys()
            .copied()
            .filter(|&id| id >= FRESH_IDS)
            .max()
        {
            self.next_fresh.fetch_max(last + 1, Ordering::Relaxed);
        }
        // The successors the kernel holds keep serving their numbers (the newest one, should
        // a number have had several).
        {
            let mut aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
            for (&id, record) in &inherited {
                if id != record.ino && !record.superseded {
                    let alias = aliases.entry(record.ino).or_insert(id);
                    *alias = (*alias).max(id);
                }
            }
            self.alias_count.store(aliases.len(), Ordering::Release);
        }
        self.inherited_superseded_any
            .store(inherited.values().any(|r| r.superseded), Ordering::Release);
        self.inherited_any
            .store(!inherited.is_empty(), Ordering::Release);
        *self.inherited.lock().unwrap_or_else(|e| e.into_inner()) = inherited;
        let _ = self.refs.set(refs);
    }

    /// Whether the id `ino` is an unresolved superseded node of an earlier worker: the kernel
    /// inode it names still passes through to the old data, so no other node may take the id.
    fn inherited_superseded(&self, ino: u64) -> bool {
        if !self.inherited_superseded_any.load(Ordering::Acquire) {
            return false;
        }
        let map = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ino).is_some_and(|r| r.superseded)
    }

    /// Whether `id` is an unresolved successor of an earlier worker serving `ino`.
    fn inherited_successor(&self, id: u64, ino: u64, file_type: u32) -> bool {
        if !self.inherited_any.load(Ordering::Acquire) {
            return false;
        }
        let map = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&id)
            .is_some_and(|r| r.ino == ino && r.file_type == file_type && !r.superseded)
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
        let mut shard = write_shard(self.shard(id));
        if let Some(node) = shard.get(&id) {
            return Some(node.clone());
        }
        let record = self.take_inherited(id)?;
        let node = inherited_node(id, file_type, state, &record);
        shard.insert(id, node.clone());
        Some(node)
    }

    /// Records that `node` is superseded, for a worker that takes over.
    pub fn note_superseded(&self, node: &Node) {
        if node.is_superseded()
            && let Some(refs) = self.refs.get()
        {
            refs.mark_superseded(node.slot);
        }
    }

    /// The node serving inode number `ino`, made from `state`: live again if an earlier
    /// worker handed it to the kernel (its successor's id, else the number's own), so that a
    /// rename or removal through it is recorded; else detached (outside the table) for
    /// copy-up.
    pub fn inherited_or_detached(&self, ino: u64, file_type: u32, state: NodeState) -> Arc<Node> {
        if self.inherited_any.load(Ordering::Acquire) {
            for id in self.alias_of(ino).into_iter().chain([ino]) {
                let Some(record) = self.inherited(id) else {
                    continue;
                };
                if record.ino != ino || record.file_type != file_type {
                    continue;
                }
                let mut shard = write_shard(self.shard(id));
                if let Some(node) = shard.get(&id) {
                    return node.clone();
                }
                if let Some(record) = self.take_inherited(id) {
                    let node = inherited_node(id, file_type, state, &record);
                    shard.insert(id, node.clone());
                    return node;
                }
            }
        }
        Arc::new(Node::detached(ino, file_type, state))
    }

    /// The node now goes by `name` in `parent` (rename; another name of a hard link).
    ///
    /// The other node ids of its inode number follow (a superseded node beside its
    /// successor, or ids of an earlier worker not resolved yet, for which `node` may be a
    /// detached stand-in): a worker taking over finds each by a name that leads to the object,
    /// and the name they were found by may be gone.
    pub fn set_name(&self, node: &Node, state: &mut NodeState, parent: Arc<Node>, name: &OsStr) {
        if let Some(refs) = self.refs.get() {
            refs.rename_node(node.slot, parent.id, name);
            self.rename_others(node, &parent, name, refs);
        }
        state.parent = Some(parent);
        state.name = name.to_owned();
    }

    /// The id of the successor serving inode number `ino`, if it has one.
    fn alias_of(&self, ino: u64) -> Option<u64> {
        if self.alias_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        aliases.get(&ino).copied()
    }

    /// Every node id the kernel may hold for inode number `ino`: the number's own and its
    /// successor's, live or recorded by an earlier worker.
    pub fn ids_of(&self, ino: u64) -> Vec<u64> {
        let held = |id: u64| {
            self.get(id).is_some_and(|n| n.ino == ino)
                || self.inherited(id).is_some_and(|r| r.ino == ino)
        };
        std::iter::once(ino)
            .chain(self.alias_of(ino))
            .filter(|&id| held(id))
            .collect()
    }

    fn rename_others(&self, node: &Node, parent: &Arc<Node>, name: &OsStr, refs: &KernelRefs) {
        let ino = node.ino;
        for id in std::iter::once(ino).chain(self.alias_of(ino)) {
            match self.get(id) {
                Some(other) if std::ptr::eq(other.as_ref(), node) => {}
                // An orphan has no name any more (see `Overlay::keep_while_held`).
                Some(other) if other.ino == ino && !other.orphaned.load(Ordering::Acquire) => {
                    refs.rename_node(other.slot, parent.id, name);
                    // Best effort: its own rename may hold it (its record is right either way).
                    if let Ok(mut state) = other.state.try_write() {
                        state.parent = Some(parent.clone());
                        state.name = name.to_owned();
                    }
                }
                Some(_) => {}
                None if self.inherited_any.load(Ordering::Acquire) => {
                    let mut map = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(record) = map.get_mut(&id)
                        && record.ino == ino
                        && !record.orphan
                    {
                        record.parent = parent.id;
                        record.name = name.to_owned();
                        refs.rename_node(record.slot, parent.id, name);
                    }
                }
                None => {}
            }
        }
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
    fn record_new(&self, id: u64, ino: u64, file_type: u32, state: &NodeState) -> (u32, u64) {
        let Some(refs) = self.refs.get() else {
            return (NO_SLOT, 1);
        };
        let parent = state.parent.as_ref().map_or(ROOT_ID, |p| p.id);
        if let Some(record) = self.take_inherited(id) {
            let n = record.lookups + 1;
            refs.rename_node(record.slot, parent, &state.name);
            refs.set_lookups(record.slot, n);
            return (record.slot, n);
        }
        (refs.add_node(id, parent, &state.name, ino, file_type), 1)
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
        // A successor's alias goes with it (aliases are locked first).
        let mut aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = self.inherited.lock().unwrap_or_else(|e| e.into_inner());
        let Some(record) = map.get_mut(&id) else {
            return false;
        };
        record.lookups = record.lookups.saturating_sub(n);
        let (slot, left, ino, orphan) = (record.slot, record.lookups, record.ino, record.orphan);
        if left == 0 {
            map.remove(&id);
            self.unrecord(slot);
            if aliases.get(&ino) == Some(&id) {
                aliases.remove(&ino);
                self.alias_count.store(aliases.len(), Ordering::Release);
            }
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

#[cfg(test)]
mod tests;
