//! The state of one mounted overlay and the operations on names and attributes.
//!
//! Each method maps one FUSE request to the modules that implement it and returns a plain
//! `SysResult`; `fs` turns those into replies.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::config::{Config, PassthroughMode, WhiteoutMode};
use crate::handles::HandleTable;
use crate::idmap::IdMap;
use crate::inode::{InodeTable, Node, NodeState};
use crate::layer::LayerStack;
use crate::lookup::{self, LayerObject};
use crate::stat_override::{self, StatXattr};
use crate::sys::{self, Errno, Stat, SysResult};
use crate::whiteout::XattrNamespace;

/// Entry and attribute timeout when none is given: lowers are immutable while mounted and
/// every change to the upper goes through this daemon, which keeps the kernel's cache current.
pub const DEFAULT_TTL: Duration = Duration::from_secs(86_400);

/// A node as an entry reply names it: its FUSE node id and its attributes (`attr.ino` is the
/// inode number users see, which the id need not equal; see the `inode` module).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub attr: FileAttr,
}

#[derive(Debug)]
pub struct Overlay {
    pub stack: LayerStack,
    pub inodes: InodeTable,
    pub handles: HandleTable,
    pub ttl: Duration,
    pub xattr_ns: XattrNamespace,
    pub whiteout_mode: WhiteoutMode,
    pub fsync: bool,
    /// `volatile`: fsync requests are acknowledged without syncing, as the kernel's
    /// overlayfs does with the same option.
    pub volatile: bool,
    pub static_nlink: bool,
    pub noacl: bool,
    pub ids: IdMap,
    /// `metacopy=on`: chmod, chown and utimes of a lower file copy up its metadata only.
    pub metacopy: bool,
    pub passthrough_mode: PassthroughMode,
    pub writeback_wanted: bool,
    /// What the kernel agreed to at INIT: passthrough of upper files, or the writeback cache.
    pub passthrough_on: AtomicBool,
    pub writeback_on: AtomicBool,
    /// `WORKDIR/work`: where copy-up builds objects before renaming them into the upper.
    /// Set once the mount is live (see the `workdir` module).
    pub work: std::sync::OnceLock<crate::workdir::Work>,
    pub hardlinks: crate::linkmap::HardlinkIndex,
    /// Some layer keeps owners and modes in an xattr (whose names are then hidden).
    pub any_stat_xattr: bool,
    /// `redirect_dir=on`: directory renames write `overlay.redirect` (see `redirect`).
    pub redirect_dir: bool,
    /// The session's /dev/fuse fd, for notifications to the kernel (set once mounted).
    pub notifier: std::sync::OnceLock<std::os::fd::OwnedFd>,
}

impl Overlay {
    /// Opens the layers of a validated config and builds the root node.
    pub fn new(config: &Config) -> io::Result<Overlay> {
        let xattr_ns = if config.userxattr || !sys::can_use_trusted_xattrs() {
            XattrNamespace::User
        } else {
            XattrNamespace::Trusted
        };
        let lowers: Vec<_> = config
            .lowerdirs
            .iter()
            .chain(&config.datadirs)
            .cloned()
            .collect();
        let mut stack = LayerStack::new(config.upperdir.as_deref(), &lowers, xattr_ns.origin_ino())
            .map_err(io::Error::from)?;
        stack.data_only = config.datadirs.len();
        if stack.has_upper {
            let upper = &mut stack.layers[0];
            upper.stat_xattr = StatXattr::for_upper(config.xattr_permissions, upper.root.as_fd());
        }
        if let (true, Some(workdir)) = (stack.has_upper, &config.workdir) {
            stack.kernel_index = load_kernel_index(&stack, workdir);
        }
        let mut objects = Vec::new();
        for layer in stack.regular_layers() {
            let fd = layer.root.as_fd().try_clone_to_owned()?;
            objects.push(LayerObject {
                layer: layer.index,
                fd: lookup::ObjFd::open(fd),
            });
        }
        let first_lower = stack.first_lower();
        let lower_root = sys::stat_fd(stack.layers[first_lower].root_fd())?;
        let root_ino = stack.stable_ino(first_lower, lower_root.st_ino);
        let root_state = NodeState {
            objects: lookup::Objects::new(true, objects),
            parent: None,
            name: Default::default(),
        };
        let any_stat_xattr = stack.layers.iter().any(|l| l.stat_xattr.is_some());
        Ok(Overlay {
            stack,
            inodes: InodeTable::new(root_state, root_ino),
            handles: HandleTable::default(),
            ttl: config.timeout.unwrap_or(DEFAULT_TTL),
            xattr_ns,
            whiteout_mode: config.whiteout,
            fsync: config.fsync && !config.volatile,
            volatile: config.volatile,
            static_nlink: config.static_nlink,
            noacl: config.noacl,
            passthrough_mode: config.passthrough,
            writeback_wanted: config.writeback,
            passthrough_on: AtomicBool::new(false),
            writeback_on: AtomicBool::new(false),
            ids: IdMap::from_config(config),
            metacopy: config.metacopy,
            work: Default::default(),
            hardlinks: Default::default(),
            any_stat_xattr,
            redirect_dir: config.redirect_dir,
            notifier: Default::default(),
        })
    }

    /// `WORKDIR/work`, or EROFS on a read-only mount.
    pub fn work_fd(&self) -> SysResult<BorrowedFd<'_>> {
        self.work.get().map(|w| w.fd()).ok_or(Errno::ROFS)
    }

    /// Locks and prepares the workdir of an overlay used without a mount (benchmarks, tools).
    pub fn attach_workdir(&self, workdir: &std::path::Path) -> io::Result<()> {
        let work = crate::workdir::WorkdirLock::acquire(workdir)?.prepare()?;
        self.work
            .set(work)
            .map_err(|_| io::Error::new(io::ErrorKind::AlreadyExists, "workdir already attached"))
    }

    /// Records from now on the node ids and handles the kernel holds in `refs`, for a worker
    /// that takes over after this one (see [`crate::kernel_refs`]).
    pub(crate) fn attach_refs(&self, refs: Arc<crate::kernel_refs::KernelRefs>) {
        self.inodes.attach_refs(refs.clone());
        self.handles.attach_refs(refs);
    }

    /// `Overlay::attach_refs` with a new table, as a supervised worker keeps one (for
    /// benchmarks of the lookup path).
    pub fn record_kernel_refs(&self) -> io::Result<()> {
        let fd = crate::kernel_refs::create()?;
        let refs = crate::kernel_refs::KernelRefs::open(fd.as_fd())?;
        self.attach_refs(Arc::new(refs));
        Ok(())
    }

    pub fn passthrough_active(&self) -> bool {
        self.passthrough_on.load(Ordering::Relaxed)
    }

    pub fn writeback_active(&self) -> bool {
        self.writeback_on.load(Ordering::Relaxed)
    }

    pub fn read_only(&self) -> bool {
        !self.stack.has_upper
    }

    pub fn node(&self, id: u64) -> SysResult<Arc<Node>> {
        match self.inodes.get(id) {
            Some(node) => Ok(node),
            None => self.inherited_node(id, 0),
        }
    }

    /// A node an earlier worker handed to the kernel (see [`crate::kernel_refs`]), found
    /// again by its parent and name as a lookup finds it; `ESTALE` if that name no longer
    /// leads to the same object.
    fn inherited_node(&self, id: u64, depth: u32) -> SysResult<Arc<Node>> {
        let record = self.inodes.inherited(id).ok_or(Errno::STALE)?;
        if depth > 4096 {
            return Err(Errno::STALE);
        }
        if record.orphan {
            // No name leads to it any more: its object is the orphan link.
            let dir = self.orphans_dir()?;
            let fd = sys::open_path_at(dir.as_fd(), OsStr::new(&id.to_string()))
                .map_err(|_| Errno::STALE)?;
            let state = NodeState {
                objects: lookup::Objects::new(
                    false,
                    vec![LayerObject {
                        layer: 0,
                        fd: lookup::ObjFd::open(fd),
                    }],
                ),
                parent: self.inodes.get(crate::inode::ROOT_ID),
                name: record.name,
            };
            return self
                .inodes
                .restore(id, record.file_type, state)
                .ok_or(Errno::STALE);
        }
        let parent = match self.inodes.get(record.parent) {
            Some(parent) => parent,
            None => self.inherited_node(record.parent, depth + 1)?,
        };
        let resolved = self.resolve(&parent, &record.name)?.ok_or(Errno::STALE)?;
        let file_type = resolved.stat.st_mode & libc::S_IFMT;
        if resolved.ino != record.ino || file_type != record.file_type {
            log::warn!(
                "node {id} ({:?}) is not found again after a restart",
                record.name
            );
            return Err(Errno::STALE);
        }
        let state = NodeState {
            objects: resolved.objects,
            parent: Some(parent),
            name: record.name,
        };
        self.inodes
            .restore(id, file_type, state)
            .ok_or(Errno::STALE)
    }

    /// Resolves `name` in the directory node `parent_node` (no lookup is counted).
    fn resolve(&self, parent_node: &Node, name: &OsStr) -> SysResult<Option<lookup::Resolved>> {
        crate::fdbudget::throttle();
        let mut resolved = crate::fdbudget::retry_on_emfile(|| {
            let state = parent_node.read();
            lookup::lookup(&self.stack, &state.layer_fds(), name)
        })?;
        if let Some(r) = &mut resolved {
            if let Some(fd) = r.objects.top().fd.held() {
                self.stored_owner(r.objects.top().layer, fd, &mut r.stat);
            }
            self.data_blocks(&r.objects, &mut r.stat);
            self.release_lower_fd(r);
        }
        Ok(resolved)
    }

    /// Resolves `name` in directory `parent` and counts one kernel reference to the result.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> SysResult<Entry> {
        let parent_node = self.node(parent)?;
        if !parent_node.is_dir() {
            return Err(Errno::NOTDIR);
        }
        if name == "." || name == ".." || name.as_encoded_bytes().contains(&b'/') {
            // The kernel resolves these itself (no export support is negotiated); probing
            // ".." in a layer root would step outside the layer.
            return Err(Errno::INVAL);
        }
        let resolved = self.resolve(&parent_node, name)?.ok_or(Errno::NOENT)?;
        let file_type = resolved.stat.st_mode & libc::S_IFMT;
        let state = NodeState {
            objects: resolved.objects,
            parent: Some(parent_node.clone()),
            name: name.to_owned(),
        };
        let node = self.inodes.lookup_or_insert(resolved.ino, file_type, state);
        let merged = node.read().objects.is_merged();
        Ok(Entry {
            id: node.id,
            attr: self.attr_from_stat(&node, &resolved.stat, merged),
        })
    }

    /// A non-directory found in a lower layer is immutable while mounted: the node keeps its
    /// path from the layer root instead of an fd, so huge trees stay within the open-file
    /// limit (the fd table would otherwise hold one entry per file the kernel caches).
    fn release_lower_fd(&self, resolved: &mut lookup::Resolved) {
        if resolved.is_dir() {
            return;
        }
        if let Some(data) = resolved.objects.metacopy_data_mut() {
            self.hold_path(data);
        }
        if self.stack.is_upper(resolved.objects.top().layer) {
            return;
        }
        self.hold_path(resolved.objects.top_mut());
    }

    /// A lower non-directory object is held as its path from the layer root (see `ObjFd::Path`).
    pub fn hold_path(&self, object: &mut LayerObject) {
        let layer = &self.stack.layers[object.layer];
        let Some(fd) = object.fd.held() else { return };
        if let Some(path) = sys::path_below(fd, &layer.path) {
            object.fd = lookup::ObjFd::Path {
                root: layer.root.clone(),
                path,
            };
        }
    }

    /// A metadata-only copy shows the blocks of the file holding its data (as the kernel
    /// does); its size is its own (a metadata-only copy-up sets it).
    pub fn data_blocks(&self, objects: &lookup::Objects, st: &mut Stat) {
        let Some(data) = objects.metacopy_data() else {
            return;
        };
        if let Ok(data_st) = data.fd.get().and_then(|fd| sys::stat_fd(fd.as_fd())) {
            st.st_blocks = data_st.st_blocks;
        }
    }

    pub fn forget(&self, id: u64, n: u64) {
        if self.inodes.forget(id, n)
            && let Ok(dir) = self.orphans_dir()
        {
            let _ = sys::unlink_at(dir.as_fd(), OsStr::new(&id.to_string()));
        }
    }

    /// `WORKDIR/work/#ovlfs.orphans`, made if missing.
    fn orphans_dir(&self) -> SysResult<std::os::fd::OwnedFd> {
        let work = self.work_fd()?;
        match sys::mkdir_at(work, OsStr::new(crate::workdir::ORPHANS), 0o700) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        sys::open_path_at(work, OsStr::new(crate::workdir::ORPHANS))
    }

    /// Before the last name of an upper file the kernel holds goes away (unlink, rename
    /// over it), under a supervisor: a hard link in `WORKDIR/work/#ovlfs.orphans` keeps the
    /// object until the kernel forgets the node. A worker restart closes every fd of the
    /// dead worker; without the link the filesystem would free the inode and could give its
    /// number (the node id) to a new file while the kernel still caches the old one, and the
    /// next worker could not open the file again. The kept file shows one link, not zero.
    /// Every node id of inode number `ino` gets a link of its own (a superseded node and its
    /// successor are two kernel inodes of one object).
    pub fn keep_while_held(&self, ino: u64) {
        let Some(refs) = self.inodes.refs() else {
            return;
        };
        // A node an earlier worker handed out is made live first (found by its name, which
        // still exists): the kernel may hold it without having used it since the restart.
        let nodes: Vec<_> = (self.inodes.ids_of(ino).into_iter())
            .filter_map(|id| self.node(id).ok())
            .collect();
        let Some(first) = nodes.first() else {
            return;
        };
        let last_name = {
            let state = first.read();
            !first.is_dir()
                && self.stack.is_upper(state.top().layer)
                && state
                    .top()
                    .fd
                    .held()
                    .is_some_and(|fd| sys::stat_fd(fd).is_ok_and(|st| st.st_nlink == 1))
        };
        if !last_name {
            return;
        }
        for node in nodes {
            let state = node.read();
            let Some(fd) = state.top().fd.held() else {
                continue;
            };
            let kept = self.orphans_dir().and_then(|dir| {
                match sys::link_fd_at(fd, dir.as_fd(), OsStr::new(&node.id.to_string())) {
                    Ok(()) | Err(Errno::EXIST) => Ok(()),
                    Err(e) => Err(e),
                }
            });
            match kept {
                Ok(()) => {
                    node.set_orphaned();
                    refs.set_orphan(node.slot());
                }
                Err(e) => log::warn!("cannot keep node {} across a restart: {e}", node.id),
            }
        }
    }

    /// How long the kernel may keep the attributes of node `id`. A superseded node's are
    /// never kept: its successor's writes change them behind the kernel inode's back, and
    /// other names may still lead to it until the kernel looks them up again.
    pub fn attr_ttl(&self, id: u64) -> Duration {
        match self.inodes.get(id) {
            Some(node) if node.is_superseded() => Duration::ZERO,
            _ => self.ttl,
        }
    }

    /// Makes the kernel drop the attributes it keeps for node `id`.
    pub fn invalidate_attrs(&self, id: u64) {
        if let Some(dev) = self.notifier.get()
            && let Err(e) = sys::notify_inval_attrs(dev.as_fd(), id)
        {
            log::debug!("cannot invalidate the attributes of node {id}: {e}");
        }
    }

    /// After the attributes of node `id` changed: where another node serves the same object
    /// (a superseded node and its successor), the kernel's copy of the other's goes stale.
    pub fn attrs_changed(&self, id: u64) {
        let Some(node) = self.inodes.get(id) else {
            return;
        };
        if node.is_superseded()
            && let Some(current) = self.inodes.current(node.ino)
            && current.id != id
        {
            self.invalidate_attrs(current.id);
        }
    }

    pub fn getattr(&self, id: u64) -> SysResult<FileAttr> {
        let node = self.node(id)?;
        let state = node.read();
        let mut st = self.stat_object(state.top().layer, state.top_fd()?.as_fd())?;
        self.data_blocks(&state.objects, &mut st);
        Ok(self.attr_from_stat(&node, &st, state.objects.is_merged()))
    }

    /// The stat of an object of `layer` as users see it: with the owner and mode its layer
    /// keeps in an xattr (see the `stat_override` module), before id mapping.
    pub fn stat_object(&self, layer: usize, fd: std::os::fd::BorrowedFd<'_>) -> SysResult<Stat> {
        let mut st = sys::stat_fd(fd)?;
        self.stored_owner(layer, fd, &mut st);
        Ok(st)
    }

    /// Puts the owner and mode as the layer stores them into `st`: ids seen through an
    /// id-mapped layer mount are mapped back to on-disk ids (the mount's own mapping then
    /// applies once), and an owner-and-mode xattr of the layer replaces the real ones.
    fn stored_owner(&self, layer: usize, fd: std::os::fd::BorrowedFd<'_>, st: &mut Stat) {
        let layer = &self.stack.layers[layer];
        if layer.idmapped {
            st.st_uid = self.ids.uid_to_disk_or_overflow(st.st_uid);
            st.st_gid = self.ids.gid_to_disk_or_overflow(st.st_gid);
        }
        stat_override::apply_stored(fd, layer.stat_xattr, st);
        if let Some(index) = &self.stack.kernel_index
            && self.stack.is_upper(layer.index)
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && let Some(nlink) = index.shown_nlink(fd, st)
        {
            st.st_nlink = nlink;
        }
    }

    /// The xattr the upper keeps owners and modes in, when it keeps them there.
    pub fn upper_stat_xattr(&self) -> Option<StatXattr> {
        self.stack.upper().and_then(|u| u.stat_xattr)
    }

    /// Marks the upper root with the xattr the upper keeps owners and modes in, when it lacks
    /// it: layers announce the xattr on their root, so an upper reused as a lower keeps its
    /// meaning. The value is the topmost lower root's stored one, else the upper root's real
    /// owner and mode. Runs once the mount is live, so a failed mount changes nothing.
    pub fn mark_upper_root(&self) {
        let Some(xattr) = self.upper_stat_xattr() else {
            return;
        };
        let upper_root = self.stack.layers[0].root_fd();
        if stat_override::read(upper_root, xattr).is_some() {
            return;
        }
        let from_lower = self.stack.layers[self.stack.first_lower()..]
            .iter()
            .find_map(|l| stat_override::read(l.root_fd(), l.stat_xattr?));
        let value = match from_lower {
            Some(value) => value,
            None => match sys::stat_fd(upper_root) {
                Ok(st) => stat_override::Override::of_stat(&st),
                Err(e) => {
                    log::warn!("cannot stat the upper root: {e}");
                    return;
                }
            },
        };
        if let Err(e) = stat_override::write(upper_root, xattr, &value) {
            log::warn!("cannot mark the upper root with {:?}: {e}", xattr.name());
        }
    }

    /// The attributes users see: the topmost object's, with the node's stable inode number,
    /// owners mapped into the container's id space, and nlink 1 for merged directories
    /// (counting subdirectories across layers is not worth it; `find` is happy with 1).
    pub fn attr_from_stat(&self, node: &Node, st: &Stat, merged: bool) -> FileAttr {
        let file_type = st.st_mode & libc::S_IFMT;
        let nlink = if file_type == libc::S_IFDIR && (merged || self.static_nlink) {
            1
        } else {
            st.st_nlink as u32
        };
        FileAttr {
            ino: INodeNo(node.ino),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: system_time(st.st_atime, st.st_atime_nsec),
            mtime: system_time(st.st_mtime, st.st_mtime_nsec),
            ctime: system_time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: fuse_file_type(file_type),
            perm: (st.st_mode & 0o7777) as u16,
            nlink,
            uid: self.ids.uid_to_user(st.st_uid),
            gid: self.ids.gid_to_user(st.st_gid),
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    pub fn readlink(&self, id: u64) -> SysResult<Vec<u8>> {
        let node = self.node(id)?;
        if node.file_type != libc::S_IFLNK {
            return Err(Errno::INVAL);
        }
        sys::readlink_fd(node.read().top_fd()?.as_fd())
    }

    /// Statistics of the upper filesystem (where writes go), else of the top lower.
    pub fn statfs(&self) -> SysResult<rustix::fs::StatVfs> {
        let layer = &self.stack.layers[0];
        sys::statvfs(layer.root.as_fd())
    }

    /// `access(2)`: only called without `default_permissions`.
    pub fn access(&self, id: u64, mask: u32) -> SysResult<()> {
        let node = self.node(id)?;
        if mask & libc::W_OK as u32 != 0 && self.read_only() {
            return Err(Errno::ROFS);
        }
        let state = node.read();
        // Write access to a lower object is granted by copy-up: check read/exec only there.
        let mask = if self.stack.is_upper(state.top().layer) {
            mask
        } else {
            mask & !(libc::W_OK as u32)
        };
        sys::access_fd(state.top_fd()?.as_fd(), mask)
    }

    /// Attributes for the `.` and `..` entries of readdirplus (the kernel only reads the
    /// inode number and type of those).
    pub fn dot_attr(&self, entry: &crate::readdir::MergedEntry) -> FileAttr {
        self.placeholder_attr(entry.ino)
    }

    /// Attributes for a readdirplus entry whose lookup failed (other than by vanishing): the
    /// entry is listed with node id 0, which the kernel emits without caching anything, so
    /// a stat of it fails as the lookup did (as the kernel's overlayfs lists such a name).
    pub fn unlookable_attr(&self, entry: &crate::readdir::MergedEntry) -> FileAttr {
        FileAttr {
            kind: fuse_file_type(entry.file_type),
            ..self.placeholder_attr(entry.ino)
        }
    }

    /// A lookup answer meaning "no such name" (node id 0).
    pub fn negative_attr(&self) -> FileAttr {
        self.placeholder_attr(0)
    }

    fn placeholder_attr(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The inode number of a directory's parent, for its `..` entry.
    pub fn parent_ino(&self, node: &Node) -> u64 {
        node.read().parent.as_ref().map_or(node.ino, |p| p.ino)
    }
}

/// The kernel's inode index of the workdir (see the `index` module), if it has entries.
fn load_kernel_index(
    stack: &LayerStack,
    workdir: &std::path::Path,
) -> Option<crate::index::KernelIndex> {
    let lowers: Vec<_> = stack.layers[stack.first_lower()..]
        .iter()
        .map(|l| crate::index::IndexedLayer {
            index: l.index,
            root: l.root_fd(),
            dev: l.dev,
        })
        .collect();
    crate::index::KernelIndex::load(workdir, &lowers)
}

fn system_time(secs: i64, nsecs: u64) -> SystemTime {
    let nsecs = nsecs.min(999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nsecs)
    }
}

pub fn fuse_file_type(file_type: u32) -> FileType {
    match file_type {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}
