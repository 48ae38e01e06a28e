//! Resolving a name in a merged directory across layers (the kernel's namei.c).
//!
//! The topmost layer holding the name decides what it is. A directory merges with the
//! directories of the same name below it until one is opaque, a whiteout is met, or a lower
//! layer holds a non-directory there (which then is ignored, as the kernel does).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::layer::{Layer, LayerStack};
use crate::sys::{self, Errno, Stat, SysResult};
use crate::whiteout;

/// One layer's object taking part in a merged node.
#[derive(Debug)]
pub struct LayerObject {
    pub layer: usize,
    pub fd: ObjFd,
}

/// How a node reaches one of its layer objects.
#[derive(Debug)]
pub enum ObjFd {
    /// An `O_PATH | O_NOFOLLOW` fd held for the node's life (directories, upper objects).
    Open(crate::fdbudget::HeldFd),
    /// A non-directory of an (immutable) lower layer: its path from the layer root, opened
    /// on demand. Holding no fd keeps big trees within the open-file limit.
    Path { root: Arc<OwnedFd>, path: CString },
}

/// An fd borrowed from a node or opened for one request.
pub enum FdRef<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl FdRef<'_> {
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            FdRef::Borrowed(fd) => *fd,
            FdRef::Owned(fd) => fd.as_fd(),
        }
    }
}

impl ObjFd {
    /// An fd the node holds for its life.
    pub fn open(fd: OwnedFd) -> ObjFd {
        ObjFd::Open(crate::fdbudget::HeldFd::new(fd))
    }

    pub fn get(&self) -> SysResult<FdRef<'_>> {
        match self {
            ObjFd::Open(fd) => Ok(FdRef::Borrowed(fd.as_fd())),
            ObjFd::Path { root, path } => sys::open_beneath(root.as_fd(), path).map(FdRef::Owned),
        }
    }

    /// An fd of the object owned by the caller (a dup, or a fresh open).
    pub fn owned_clone(&self) -> SysResult<OwnedFd> {
        match self.get()? {
            FdRef::Borrowed(fd) => fd.try_clone_to_owned().map_err(|_| Errno::MFILE),
            FdRef::Owned(fd) => Ok(fd),
        }
    }

    /// The held fd (directories and upper objects always have one).
    pub fn held(&self) -> Option<BorrowedFd<'_>> {
        match self {
            ObjFd::Open(fd) => Some(fd.as_fd()),
            ObjFd::Path { .. } => None,
        }
    }
}

/// The layer objects one name of the merged view is made of.
#[derive(Debug)]
pub enum Objects {
    /// A directory: its topmost layer directory, and those it merges with, topmost first.
    Dir {
        top: LayerObject,
        below: Vec<LayerObject>,
    },
    /// Anything else: exactly one object, from the topmost layer holding the name.
    Leaf(LayerObject),
    /// A metadata-only copy (`overlay.metacopy`): the file users see, and the regular file
    /// of a lower layer its data is read from.
    Metacopy { top: LayerObject, data: LayerObject },
}

impl Objects {
    /// Objects found topmost first (at least one); `is_dir` tells which kind the name is.
    pub fn new(is_dir: bool, mut found: Vec<LayerObject>) -> Objects {
        let top = found.remove(0);
        if is_dir {
            Objects::Dir { top, below: found }
        } else {
            Objects::Leaf(top)
        }
    }

    /// A single object (an upper object just made, a layer root).
    pub fn one(is_dir: bool, object: LayerObject) -> Objects {
        Objects::new(is_dir, vec![object])
    }

    /// The object users see: the topmost.
    pub fn top(&self) -> &LayerObject {
        match self {
            Objects::Dir { top, .. } | Objects::Leaf(top) | Objects::Metacopy { top, .. } => top,
        }
    }

    pub fn top_mut(&mut self) -> &mut LayerObject {
        match self {
            Objects::Dir { top, .. } | Objects::Leaf(top) | Objects::Metacopy { top, .. } => top,
        }
    }

    /// The lower file a metadata-only copy reads its data from.
    pub fn metacopy_data(&self) -> Option<&LayerObject> {
        match self {
            Objects::Metacopy { data, .. } => Some(data),
            _ => None,
        }
    }

    /// The data object, to hold as a path from its layer root (see `ObjFd::Path`).
    pub fn metacopy_data_mut(&mut self) -> Option<&mut LayerObject> {
        match self {
            Objects::Metacopy { data, .. } => Some(data),
            _ => None,
        }
    }

    /// After the data of a metadata-only copy has been copied up: a plain file.
    pub fn data_copied_up(&mut self) -> SysResult<()> {
        if let Objects::Metacopy { top, .. } = self {
            let top = LayerObject {
                layer: top.layer,
                fd: ObjFd::open(top.fd.owned_clone()?),
            };
            *self = Objects::Leaf(top);
        }
        Ok(())
    }

    /// Every object, topmost first.
    pub fn iter(&self) -> impl Iterator<Item = &LayerObject> {
        let below: &[LayerObject] = match self {
            Objects::Dir { below, .. } => below,
            Objects::Leaf(_) => &[],
            Objects::Metacopy { data, .. } => std::slice::from_ref(data),
        };
        std::iter::once(self.top()).chain(below)
    }

    /// A directory merging more than one layer.
    pub fn is_merged(&self) -> bool {
        matches!(self, Objects::Dir { below, .. } if !below.is_empty())
    }

    /// After a copy-up: `upper` goes on top (a directory keeps merging what it merged).
    pub fn put_upper(&mut self, upper: LayerObject) {
        match self {
            Objects::Dir { top, below } => below.insert(0, std::mem::replace(top, upper)),
            Objects::Leaf(top) => *top = upper,
            Objects::Metacopy { .. } => *self = Objects::Leaf(upper),
        }
    }

    /// A directory made opaque: nothing below shows through it any more.
    pub fn drop_below(&mut self) {
        if let Objects::Dir { below, .. } = self {
            below.clear();
        }
    }
}

/// The result of a successful lookup.
#[derive(Debug)]
pub struct Resolved {
    /// Stat of the topmost object.
    pub stat: Stat,
    pub objects: Objects,
    /// The inode number reported to users (see `origin_ino`).
    pub ino: u64,
    /// Layer and real inode of the lower hard link this name shows through the kernel's
    /// inode index (the name itself is not in the upper yet).
    pub indexed_lower: Option<(usize, u64)>,
}

impl Resolved {
    pub fn is_dir(&self) -> bool {
        is_dir(&self.stat)
    }
}

pub fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The longest name a layer's filesystem takes (FUSE lets names up to 1024 bytes through).
const NAME_MAX: usize = 255;

/// What one layer says about a name.
enum Probe {
    Absent,
    Whiteout,
    Present(Stat),
}

fn probe(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Probe> {
    match sys::stat_at(dir, name) {
        Ok(st) if whiteout::is_whiteout_at(dir, name, &st) => Ok(Probe::Whiteout),
        Ok(st) => Ok(Probe::Present(st)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::NAMETOOLONG) => {
            if whiteout::has_aufs_whiteout(dir, name) {
                Ok(Probe::Whiteout)
            } else {
                Ok(Probe::Absent)
            }
        }
        Err(e) => Err(e),
    }
}

/// A merge in progress: the objects found so far, topmost first.
struct Merge {
    stat: Stat,
    objects: Vec<LayerObject>,
    /// Layer and real inode of the topmost lower object (the origin of the inode number).
    origin: Option<(usize, u64)>,
}

/// Where the lower part of a merging directory is looked for.
enum Target {
    /// This name in the parent's layer directories.
    InParent(OsString),
    /// This path from each lower layer's root (a kernel `redirect_dir` absolute redirect).
    FromRoot(Vec<OsString>),
}

impl Target {
    /// Follows a directory's `overlay.redirect`.
    fn redirect(&mut self, value: &[u8]) {
        match value.strip_prefix(b"/") {
            Some(path) => {
                *self = Target::FromRoot(
                    path.split(|b| *b == b'/')
                        .filter(|c| !c.is_empty())
                        .map(|c| OsStr::from_bytes(c).to_owned())
                        .collect(),
                )
            }
            None => match self {
                Target::InParent(name) => *name = OsStr::from_bytes(value).to_owned(),
                Target::FromRoot(path) => {
                    if let Some(last) = path.last_mut() {
                        *last = OsStr::from_bytes(value).to_owned();
                    }
                }
            },
        }
    }
}

impl Merge {
    /// Adds the directories below `from_layer` that merge with the one found there, until
    /// one is opaque, a whiteout or non-directory is met, or the layers run out. Each
    /// directory's redirect (if any) says where to look further down.
    fn continue_below(
        &mut self,
        stack: &LayerStack,
        mut from_layer: usize,
        below: &[(usize, BorrowedFd<'_>)],
        mut target: Target,
        mut markers: whiteout::DirMarkers,
    ) -> SysResult<()> {
        // An opaque directory met on an absolute path: no layer below it is searched.
        let mut stop_after = None;
        loop {
            if markers.opaque {
                return Ok(());
            }
            if let Some(value) = markers.redirect.take() {
                target.redirect(&value);
            }
            // The next layer holding the target's parent directory.
            let next = match &mut target {
                Target::InParent(name) => below
                    .iter()
                    .find(|(layer, _)| *layer > from_layer)
                    .map(|&(layer, dir)| (layer, Parent::Borrowed(dir), name.clone())),
                Target::FromRoot(path) => {
                    // Directories on the way may carry redirects of their own (one moved
                    // into a directory that was itself moved): walked as the kernel does.
                    first_from_root(stack.regular_layers(), from_layer, path, &mut stop_after)?
                }
            };
            let Some((layer, parent, name)) = next else {
                return Ok(());
            };
            let name = name.as_os_str();
            from_layer = layer;
            let st = match probe(parent.fd(), name)? {
                Probe::Absent => continue,
                Probe::Whiteout => return Ok(()),
                Probe::Present(st) => st,
            };
            if !is_dir(&st) {
                // A lower non-directory under a directory ends the merge, unseen.
                return Ok(());
            }
            let fd = sys::open_path_at(parent.fd(), name)?;
            markers = whiteout::dir_markers(fd.as_fd())?;
            if self.origin.is_none() && !stack.is_upper(layer) {
                self.origin = Some((layer, st.st_ino));
            }
            self.objects.push(LayerObject {
                layer,
                fd: ObjFd::open(fd),
            });
        }
    }
}

/// A parent directory fd: the node's own, or one opened to follow an absolute redirect.
enum Parent<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl Parent<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Parent::Borrowed(fd) => *fd,
            Parent::Owned(fd) => fd.as_fd(),
        }
    }
}

/// Resolves `name` in the merged directory made of `parent_dirs` (topmost first).
/// `Ok(None)` means the name does not exist in the merged view.
pub fn lookup(
    stack: &LayerStack,
    parent_dirs: &[(usize, BorrowedFd<'_>)],
    name: &OsStr,
) -> SysResult<Option<Resolved>> {
    if name.len() > NAME_MAX {
        // No layer can hold it: too long, not absent (as the kernel's overlayfs answers).
        return Err(Errno::NAMETOOLONG);
    }
    if whiteout::is_aufs_entry(name) {
        // AUFS bookkeeping never shows, whatever layer holds it.
        return Ok(None);
    }
    for (position, &(layer, dir)) in parent_dirs.iter().enumerate() {
        let st = match probe(dir, name)? {
            Probe::Absent => continue,
            Probe::Whiteout => break,
            Probe::Present(st) => st,
        };
        let fd = sys::open_path_at(dir, name)?;
        let origin = (!stack.is_upper(layer)).then_some((layer, st.st_ino));
        // Directories merge with lower layers (only those can carry an absolute redirect
        // beyond the parent's own layers).
        let markers = if is_dir(&st) && layer + 1 < stack.layers.len() {
            Some(whiteout::dir_markers(fd.as_fd())?)
        } else {
            None
        };
        let mut m = Merge {
            stat: st,
            objects: vec![LayerObject {
                layer,
                fd: ObjFd::open(fd),
            }],
            origin,
        };
        if let Some(markers) = markers {
            let below = &parent_dirs[position + 1..];
            m.continue_below(
                stack,
                layer,
                below,
                Target::InParent(name.to_owned()),
                markers,
            )?;
        }
        let indexed_lower = indexed_copy(stack, &mut m);
        let mut objects = Objects::new(is_dir(&m.stat), m.objects);
        if whiteout::may_be_metacopy(&m.stat)
            && let Some(top) = objects.top().fd.held()
            && let Some(markers) = whiteout::metacopy_markers(top)?
        {
            let below = &parent_dirs[position + 1..];
            let Some(data) = find_metacopy_data(stack, layer, below, name, markers)? else {
                crate::logging::warn_limited(
                    "metacopy-data",
                    format_args!("{name:?}: metadata-only copy whose lower data is missing"),
                );
                return Err(Errno::IO);
            };
            let Objects::Leaf(top) = objects else {
                return Err(Errno::IO);
            };
            objects = Objects::Metacopy { top, data };
        }
        let recorded = match stack.is_upper(objects.top().layer) {
            true => objects
                .top()
                .fd
                .held()
                .and_then(|fd| recorded_ino(stack, fd)),
            false => None,
        };
        // An upper metadata-only copy the kernel made keeps its own number (not its data
        // file's, which other names may show: one number must never name two objects).
        let ino = match (recorded, m.origin) {
            (Some(ino), _) => ino,
            (None, Some((layer, real_ino))) => stack.stable_ino(layer, real_ino),
            (None, None) => stack.stable_ino(objects.top().layer, m.stat.st_ino),
        };
        return Ok(Some(Resolved {
            ino,
            stat: m.stat,
            objects,
            indexed_lower,
        }));
    }
    Ok(None)
}

/// Finds the regular file of a lower layer holding the data of the metadata-only copy found
/// in `from_layer` (as the kernel's lookup does): its redirect, or else the same name, in the
/// parent's lower directories; an absolute redirect is followed from the lower layers' roots,
/// data-only layers last. A lower metadata-only copy on the way is followed further down.
fn find_metacopy_data(
    stack: &LayerStack,
    mut from_layer: usize,
    below: &[(usize, BorrowedFd<'_>)],
    name: &OsStr,
    mut markers: whiteout::Metacopy,
) -> SysResult<Option<LayerObject>> {
    let mut target = Target::InParent(name.to_owned());
    // An opaque directory met on an absolute path: no layer below it is searched.
    let mut stop_after = None;
    loop {
        if let Some(value) = markers.redirect.take() {
            target.redirect(&value);
        }
        let next = match &mut target {
            Target::InParent(name) => below
                .iter()
                .find(|(layer, _)| *layer > from_layer)
                .map(|&(layer, dir)| (layer, Parent::Borrowed(dir), name.clone())),
            Target::FromRoot(path) => {
                first_from_root(&stack.layers, from_layer, path, &mut stop_after)?
            }
        };
        let Some((layer, parent, name)) = next else {
            return Ok(None);
        };
        let name = name.as_os_str();
        from_layer = layer;
        let st = match probe(parent.fd(), name)? {
            Probe::Absent => continue,
            Probe::Whiteout => return Ok(None),
            Probe::Present(st) => st,
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(None);
        }
        let fd = sys::open_path_at(parent.fd(), name)?;
        let lower_markers = if whiteout::may_be_metacopy(&st) {
            whiteout::metacopy_markers(fd.as_fd())?
        } else {
            None
        };
        match lower_markers {
            Some(next) => markers = next,
            None => {
                let data = LayerObject {
                    layer,
                    fd: ObjFd::open(fd),
                };
                return Ok(Some(data));
            }
        }
    }
}

/// The first of `layers` below `from_layer` (and not below a layer an opaque directory on the
/// way stopped the search at) where the absolute path `path` leads to a directory: that layer,
/// the directory and the last component of `path` (see [`walk_redirected`]).
fn first_from_root<'a>(
    layers: &[Layer],
    from_layer: usize,
    path: &mut Vec<OsString>,
    stop_after: &mut Option<usize>,
) -> SysResult<Option<(usize, Parent<'a>, OsString)>> {
    for l in layers.iter().filter(|l| l.index > from_layer) {
        if stop_after.is_some_and(|last_layer| l.index > last_layer) {
            break;
        }
        if let Some(dir) = walk_redirected(l, path, stop_after)? {
            let name = path.last().cloned().unwrap_or_default();
            return Ok(Some((l.index, Parent::Owned(dir), name)));
        }
    }
    Ok(None)
}

/// Opens, in `layer`, the parent directory of the absolute path `path` (from the layer
/// roots), as the kernel walks it: component by component as named, but a directory on the
/// way that carries a redirect changes the path looked for in the layers below, and an
/// opaque one (or a non-directory) ends the search after this layer. `path` becomes the one
/// for the layers below. `None`: no such directory here.
fn walk_redirected(
    layer: &Layer,
    path: &mut Vec<OsString>,
    stop_after: &mut Option<usize>,
) -> SysResult<Option<OwnedFd>> {
    let Some((_, dirs)) = path.split_last() else {
        return Ok(None);
    };
    let literal = dirs.to_vec();
    // The path for the layers below, up to the component walked so far.
    let mut below: Vec<OsString> = Vec::new();
    let mut dir = layer
        .root_fd()
        .try_clone_to_owned()
        .map_err(|_| Errno::MFILE)?;
    let mut walked = 0;
    let mut reached = true;
    for component in &literal {
        let next = match sys::open_path_at(dir.as_fd(), component) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                reached = false;
                break;
            }
            Err(e) => return Err(e),
        };
        if !sys::stat_fd(next.as_fd()).is_ok_and(|st| is_dir(&st)) {
            *stop_after = Some(layer.index);
            reached = false;
            break;
        }
        let markers = whiteout::dir_markers(next.as_fd())?;
        below.push(component.clone());
        match markers.redirect {
            Some(r) if r.starts_with(b"/") => {
                below = r
                    .split(|b| *b == b'/')
                    .filter(|c| !c.is_empty())
                    .map(|c| OsStr::from_bytes(c).to_owned())
                    .collect();
            }
            Some(r) => {
                if let Some(last) = below.last_mut() {
                    *last = OsStr::from_bytes(&r).to_owned();
                }
            }
            None => {}
        }
        if markers.opaque {
            *stop_after = Some(layer.index);
        }
        dir = next;
        walked += 1;
    }
    below.extend(path[walked..].iter().cloned());
    *path = below;
    Ok(reached.then_some(dir))
}

/// A lower multi-link file that the kernel's inode index holds a copy of shows that copy
/// (see the `index` module): the merge's object becomes the index entry. Returns the lower
/// object it stands for.
fn indexed_copy(stack: &LayerStack, m: &mut Merge) -> Option<(usize, u64)> {
    let index = stack.kernel_index.as_ref()?;
    let lower = m.objects.first()?;
    if is_dir(&m.stat) || m.stat.st_nlink < 2 || stack.is_upper(lower.layer) {
        return None;
    }
    let (upper, st) = index.upper_of(lower.layer, lower.fd.held()?)?;
    let found = (lower.layer, m.stat.st_ino);
    m.objects = vec![LayerObject {
        layer: 0,
        fd: ObjFd::open(upper),
    }];
    m.stat = st;
    // Numbered as the indexed copy is, wherever it is reached from.
    m.origin = None;
    Some(found)
}

/// The inode number an upper object had before its copy-up, if ovlfs recorded one (or,
/// for a hard link the kernel indexed, its lower inode's).
pub fn recorded_ino(stack: &LayerStack, fd: BorrowedFd<'_>) -> Option<u64> {
    if !stack.has_upper {
        return None;
    }
    if let Some(value) = sys::get_xattr(fd, stack.origin_xattr).ok()? {
        return std::str::from_utf8(&value).ok()?.parse().ok();
    }
    let origin = stack.kernel_index.as_ref()?.origin_of(fd)?;
    Some(stack.stable_ino(origin.layer, origin.ino))
}
