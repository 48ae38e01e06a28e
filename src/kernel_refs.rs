//! The node ids and file handles the kernel holds, kept where a worker's death cannot lose
//! them: a memfd the supervisor owns and every worker maps (see docs/design.md, "The
//! supervisor").
//!
//! The kernel keeps a FUSE connection, its node ids and its file handles while any process
//! holds the `/dev/fuse` fd. A worker that takes the connection over must serve the ids it
//! never handed out itself: each node records how to find it again (today: its parent's
//! node id and its name, resolved through the overlay as a lookup would), each open handle
//! its node, open flags and backing id. Entries are written before the reply that hands the
//! id to the kernel and removed when the kernel lets go of it (forget to zero, release).
//!
//! Everything is 64-bit words accessed atomically. A slot's first word (its id) is written
//! last on insert and cleared first on removal, so a worker killed in between leaves either
//! a complete entry or a free slot. Slot numbers are private to a worker: the next one
//! rebuilds its free lists by scanning up to the high-water marks kept in the header.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{self, Errno, SharedWords, SysResult};

const MAGIC: u64 = u64::from_be_bytes(*b"ovlfsref");
/// Bumped whenever the layout changes: a worker of another layout refuses to start (an
/// upgrade then falls back to the running binary).
const LAYOUT: u64 = 1;

// Header words.
const H_MAGIC: usize = 0;
const H_LAYOUT: usize = 1;
const H_NODE_CAP: usize = 2;
const H_HANDLE_CAP: usize = 3;
const H_NODE_HWM: usize = 4;
const H_HANDLE_HWM: usize = 5;
/// Non-zero once the INIT record below is complete.
const H_INIT_SET: usize = 6;
const H_INIT: usize = 7;
const INIT_WORDS: usize = 8;
/// Workers started on this table so far.
const H_WORKERS: usize = H_INIT + INIT_WORDS;
const HEADER_WORDS: usize = 512;

// Node slots: id, parent id, lookup count, meta (name length | how << 16), st_ino, file
// type, two spare words, then the name (255 bytes at most, zero-padded).
const NODE_WORDS: usize = 40;
const NAME_WORDS: usize = 32;
const N_ID: usize = 0;
const N_PARENT: usize = 1;
const N_LOOKUPS: usize = 2;
const N_META: usize = 3;
const N_INO: usize = 4;
const N_TYPE: usize = 5;
/// In the `N_TYPE` word: the node is superseded.
const SUPERSEDED: u64 = 1 << 63;
const N_NAME: usize = 8;

/// How a recorded node is found again. Only one way today; a node id that is not simply
/// "the object at parent/name" (a second node id for one `st_ino`) gets another value.
const HOW_PARENT_NAME: u64 = 1;
/// The node's last name is gone while the kernel holds it: its object is kept as
/// `WORKDIR/work/#ovlfs.orphans/ID` (see `Overlay::keep_while_held`).
const HOW_ORPHAN: u64 = 2;

// Handle slots: fh, node id, open flags, kind, backing id + 1 (0: none), spare words.
const HANDLE_WORDS: usize = 8;
const F_FH: usize = 0;
const F_NODE: usize = 1;
const F_FLAGS: usize = 2;
const F_KIND: usize = 3;
const F_BACKING: usize = 4;

/// Node slots a mount can record (pages are only allocated as slots are used: 320 bytes a
/// live node). A node beyond this is served normally but cannot survive a worker restart.
const NODE_CAPACITY: usize = 4 << 20;
const HANDLE_CAPACITY: usize = 1 << 20;

/// No slot (table full, or the root, which every worker has).
pub const NO_SLOT: u32 = u32::MAX;

/// What a new worker knows about a node it has not resolved yet.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub slot: u32,
    /// The inode number users see (the node id, unless the node was a successor).
    pub ino: u64,
    pub parent: u64,
    pub name: OsString,
    pub lookups: u64,
    pub file_type: u32,
    /// New opens must go to a successor (see [`KernelRefs::mark_superseded`]).
    pub superseded: bool,
    /// Found again as an orphan (see `HOW_ORPHAN`), not by parent and name.
    pub orphan: bool,
}

/// An open handle of an earlier worker.
#[derive(Debug, Clone, Copy)]
pub struct HandleRecord {
    pub fh: u64,
    pub node: u64,
    /// `F_GETFL` of the handle's fd (access mode and status flags).
    pub flags: u32,
    pub dir: bool,
    /// The passthrough backing id registered with the kernel, if any.
    pub backing: Option<u32>,
}

#[derive(Debug, Default)]
struct FreeSlots {
    free: Vec<u32>,
    hwm: u32,
}

#[derive(Debug)]
pub struct KernelRefs {
    mem: SharedWords,
    nodes: Mutex<FreeSlots>,
    handles: Mutex<FreeSlots>,
}

fn total_words() -> usize {
    HEADER_WORDS + NODE_CAPACITY * NODE_WORDS + HANDLE_CAPACITY * HANDLE_WORDS
}

/// A new, empty table (the supervisor makes it before the first worker starts).
pub fn create() -> SysResult<OwnedFd> {
    let fd = sys::memfd(c"ovlfs-kernel-refs", (total_words() * 8) as u64)?;
    let mem = SharedWords::map(fd.as_fd(), HEADER_WORDS)?;
    let w = mem.words();
    w[H_LAYOUT].store(LAYOUT, Ordering::Relaxed);
    w[H_NODE_CAP].store(NODE_CAPACITY as u64, Ordering::Relaxed);
    w[H_HANDLE_CAP].store(HANDLE_CAPACITY as u64, Ordering::Relaxed);
    w[H_MAGIC].store(MAGIC, Ordering::Release);
    Ok(fd)
}

impl KernelRefs {
    /// Maps the table a supervisor made; its free slots are worked out from what is in use.
    pub fn open(fd: BorrowedFd<'_>) -> SysResult<KernelRefs> {
        if sys::file_size(fd)? < (total_words() * 8) as u64 {
            return Err(Errno::INVAL);
        }
        let mem = SharedWords::map(fd, total_words())?;
        let w = mem.words();
        if w[H_MAGIC].load(Ordering::Acquire) != MAGIC
            || w[H_LAYOUT].load(Ordering::Relaxed) != LAYOUT
            || w[H_NODE_CAP].load(Ordering::Relaxed) != NODE_CAPACITY as u64
            || w[H_HANDLE_CAP].load(Ordering::Relaxed) != HANDLE_CAPACITY as u64
        {
            return Err(Errno::PROTO);
        }
        let refs = KernelRefs {
            mem,
            nodes: Mutex::default(),
            handles: Mutex::default(),
        };
        let scan = |hwm_word: usize, cap: usize, first: fn(&KernelRefs, u32) -> usize| {
            let hwm = (refs.mem.words()[hwm_word].load(Ordering::Acquire) as usize).min(cap);
            let free = (0..hwm as u32)
                .rev()
                .filter(|&s| refs.mem.words()[first(&refs, s)].load(Ordering::Acquire) == 0)
                .collect();
            FreeSlots {
                free,
                hwm: hwm as u32,
            }
        };
        let nodes = scan(H_NODE_HWM, NODE_CAPACITY, KernelRefs::node_base);
        let handles = scan(H_HANDLE_HWM, HANDLE_CAPACITY, KernelRefs::handle_base);
        *refs.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
        *refs.handles.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        Ok(refs)
    }

    fn w(&self) -> &[AtomicU64] {
        self.mem.words()
    }

    fn node_base(&self, slot: u32) -> usize {
        HEADER_WORDS + slot as usize * NODE_WORDS
    }

    fn handle_base(&self, slot: u32) -> usize {
        HEADER_WORDS + NODE_CAPACITY * NODE_WORDS + slot as usize * HANDLE_WORDS
    }

    fn alloc(&self, slots: &Mutex<FreeSlots>, cap: usize, hwm_word: usize) -> u32 {
        let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.free.pop() {
            return slot;
        }
        if s.hwm as usize >= cap {
            return NO_SLOT;
        }
        let slot = s.hwm;
        s.hwm += 1;
        self.w()[hwm_word].store(u64::from(s.hwm), Ordering::Release);
        slot
    }

    fn free(&self, slots: &Mutex<FreeSlots>, slot: u32) {
        slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(slot);
    }

    /// Counts one more worker on this table; the number of earlier ones.
    pub fn next_worker(&self) -> u64 {
        self.w()[H_WORKERS].fetch_add(1, Ordering::AcqRel)
    }

    // ---- the INIT record ----------------------------------------------------------------

    pub fn init_record(&self) -> Option<[u64; INIT_WORDS]> {
        if self.w()[H_INIT_SET].load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(std::array::from_fn(|i| {
            self.w()[H_INIT + i].load(Ordering::Relaxed)
        }))
    }

    pub fn set_init_record(&self, record: [u64; INIT_WORDS]) {
        for (i, v) in record.iter().enumerate() {
            self.w()[H_INIT + i].store(*v, Ordering::Relaxed);
        }
        self.w()[H_INIT_SET].store(1, Ordering::Release);
    }

    // ---- nodes ----------------------------------------------------------------------------

    /// Records a node the kernel now holds; returns its slot ([`NO_SLOT`] when full).
    pub fn add_node(&self, id: u64, parent: u64, name: &OsStr, ino: u64, file_type: u32) -> u32 {
        let slot = self.alloc(&self.nodes, NODE_CAPACITY, H_NODE_HWM);
        if slot == NO_SLOT {
            return NO_SLOT;
        }
        let b = self.node_base(slot);
        let w = self.w();
        w[b + N_LOOKUPS].store(1, Ordering::Relaxed);
        w[b + N_INO].store(ino, Ordering::Relaxed);
        w[b + N_TYPE].store(u64::from(file_type), Ordering::Relaxed);
        self.write_name(b, parent, name);
        w[b + N_ID].store(id, Ordering::Release);
        slot
    }

    fn write_name(&self, b: usize, parent: u64, name: &OsStr) {
        let w = self.w();
        let bytes = name.as_bytes();
        let len = bytes.len().min(NAME_WORDS * 8);
        w[b + N_PARENT].store(parent, Ordering::Relaxed);
        for (i, chunk) in bytes[..len].chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            w[b + N_NAME + i].store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
        w[b + N_META].store(len as u64 | HOW_PARENT_NAME << 16, Ordering::Release);
    }

    /// The node moved (rename, or another name of a hard link took over).
    pub fn rename_node(&self, slot: u32, parent: u64, name: &OsStr) {
        if slot != NO_SLOT {
            self.write_name(self.node_base(slot), parent, name);
        }
    }

    /// The node's object is kept as an orphan from now on.
    pub fn set_orphan(&self, slot: u32) {
        if slot != NO_SLOT {
            let word = &self.w()[self.node_base(slot) + N_META];
            let len = word.load(Ordering::Acquire) & 0xffff;
            word.store(len | HOW_ORPHAN << 16, Ordering::Release);
        }
    }

    pub fn set_lookups(&self, slot: u32, lookups: u64) {
        if slot != NO_SLOT {
            self.w()[self.node_base(slot) + N_LOOKUPS].store(lookups, Ordering::Release);
        }
    }

    /// The node was superseded (see `inode`): a worker taking over must send new opens of
    /// it to a successor too, as the kernel inode still passes through to the old data.
    pub fn mark_superseded(&self, slot: u32) {
        if slot != NO_SLOT {
            self.w()[self.node_base(slot) + N_TYPE].fetch_or(SUPERSEDED, Ordering::Release);
        }
    }

    /// The kernel forgot the node.
    pub fn remove_node(&self, slot: u32) {
        if slot == NO_SLOT {
            return;
        }
        self.w()[self.node_base(slot) + N_ID].store(0, Ordering::Release);
        self.free(&self.nodes, slot);
    }

    /// Every recorded node, by node id (a new worker resolves them as they are used).
    pub fn nodes(&self) -> HashMap<u64, NodeRecord> {
        let hwm = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).hwm;
        let w = self.w();
        let mut out = HashMap::new();
        for slot in 0..hwm {
            let b = self.node_base(slot);
            let id = w[b + N_ID].load(Ordering::Acquire);
            if id == 0 {
                continue;
            }
            let meta = w[b + N_META].load(Ordering::Acquire);
            let how = meta >> 16;
            if how != HOW_PARENT_NAME && how != HOW_ORPHAN {
                continue;
            }
            let len = (meta & 0xffff) as usize;
            let mut name = Vec::with_capacity(len);
            for i in 0..len.div_ceil(8) {
                name.extend_from_slice(&w[b + N_NAME + i].load(Ordering::Relaxed).to_ne_bytes());
            }
            name.truncate(len);
            out.insert(
                id,
                NodeRecord {
                    slot,
                    ino: w[b + N_INO].load(Ordering::Relaxed),
                    parent: w[b + N_PARENT].load(Ordering::Relaxed),
                    name: OsString::from_vec(name),
                    lookups: w[b + N_LOOKUPS].load(Ordering::Acquire),
                    file_type: w[b + N_TYPE].load(Ordering::Relaxed) as u32,
                    superseded: w[b + N_TYPE].load(Ordering::Acquire) & SUPERSEDED != 0,
                    orphan: how == HOW_ORPHAN,
                },
            );
        }
        out
    }

    // ---- handles --------------------------------------------------------------------------

    pub fn add_handle(&self, h: HandleRecord) -> u32 {
        let slot = self.alloc(&self.handles, HANDLE_CAPACITY, H_HANDLE_HWM);
        if slot == NO_SLOT {
            return NO_SLOT;
        }
        let b = self.handle_base(slot);
        let w = self.w();
        w[b + F_NODE].store(h.node, Ordering::Relaxed);
        w[b + F_FLAGS].store(u64::from(h.flags), Ordering::Relaxed);
        w[b + F_KIND].store(u64::from(h.dir), Ordering::Relaxed);
        w[b + F_BACKING].store(
            h.backing.map_or(0, |id| u64::from(id) + 1),
            Ordering::Relaxed,
        );
        w[b + F_FH].store(h.fh, Ordering::Release);
        slot
    }

    pub fn remove_handle(&self, slot: u32) {
        if slot == NO_SLOT {
            return;
        }
        self.w()[self.handle_base(slot) + F_FH].store(0, Ordering::Release);
        self.free(&self.handles, slot);
    }

    /// Every recorded handle, with its slot.
    pub fn handles(&self) -> Vec<(u32, HandleRecord)> {
        let hwm = self.handles.lock().unwrap_or_else(|e| e.into_inner()).hwm;
        let w = self.w();
        (0..hwm)
            .filter_map(|slot| {
                let b = self.handle_base(slot);
                let fh = w[b + F_FH].load(Ordering::Acquire);
                (fh != 0).then(|| {
                    let backing = w[b + F_BACKING].load(Ordering::Relaxed);
                    (
                        slot,
                        HandleRecord {
                            fh,
                            node: w[b + F_NODE].load(Ordering::Relaxed),
                            flags: w[b + F_FLAGS].load(Ordering::Relaxed) as u32,
                            dir: w[b + F_KIND].load(Ordering::Relaxed) != 0,
                            backing: (backing != 0).then(|| (backing - 1) as u32),
                        },
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one process records, another mapping of the same memfd reads back, with the
    /// free slots of removed entries reused.
    #[test]
    fn records_survive_in_another_mapping() {
        let fd = create().unwrap();
        let a = KernelRefs::open(fd.as_fd()).unwrap();
        a.set_init_record([7, 40, 1, 2, 3, 4, 5, 6]);
        let s1 = a.add_node(100, 1, OsStr::new("dir"), 100, libc::S_IFDIR);
        let s2 = a.add_node(200, 100, OsStr::new(&"x".repeat(255)), 200, libc::S_IFREG);
        let s3 = a.add_node(300, 100, OsStr::new("gone"), 300, libc::S_IFREG);
        a.set_lookups(s2, 5);
        a.remove_node(s3);
        a.rename_node(s1, 1, OsStr::new("moved"));
        a.set_orphan(s2);
        let h = a.add_handle(HandleRecord {
            fh: 9,
            node: 200,
            flags: libc::O_RDWR as u32,
            dir: false,
            backing: Some(0),
        });
        assert_ne!(h, NO_SLOT);

        let b = KernelRefs::open(fd.as_fd()).unwrap();
        assert_eq!(b.init_record(), Some([7, 40, 1, 2, 3, 4, 5, 6]));
        let nodes = b.nodes();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[&100].name, "moved");
        assert_eq!(nodes[&200].name.len(), 255);
        assert_eq!(nodes[&200].lookups, 5);
        assert_eq!(nodes[&200].parent, 100);
        assert!(nodes[&200].orphan && !nodes[&100].orphan);
        let handles = b.handles();
        assert_eq!(handles.len(), 1);
        assert_eq!(handles[0].1.backing, Some(0));
        assert_eq!(handles[0].1.node, 200);
        // The removed node's slot is the first one reused.
        assert_eq!(
            b.add_node(400, 1, OsStr::new("new"), 400, libc::S_IFREG),
            s3
        );
    }
}
