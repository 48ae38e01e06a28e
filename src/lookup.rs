//! Resolving a name in a merged directory across layers (the kernel's namei.c).
//!
//! The topmost layer holding the name decides what it is. A directory merges with the
//! directories of the same name below it until one is opaque, a whiteout is met, or a lower
//! layer holds a non-directory there (which then is ignored, as the kernel does).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::layer::LayerStack;
use crate::sys::{self, Errno, Stat, SysResult};
use crate::whiteout;

/// One layer's object taking part in a merged node.
#[derive(Debug)]
pub struct LayerObject {
    pub layer: usize,
    /// `O_PATH | O_NOFOLLOW` handle.
    pub fd: OwnedFd,
}

/// The result of a successful lookup.
#[derive(Debug)]
pub struct Resolved {
    /// Stat of the topmost object.
    pub stat: Stat,
    /// Topmost first. Directories: every merged layer directory; others: exactly one.
    pub objects: Vec<LayerObject>,
    /// The inode number reported to users (see [`origin_ino`]).
    pub ino: u64,
}

impl Resolved {
    pub fn is_dir(&self) -> bool {
        is_dir(&self.stat)
    }
}

pub fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

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

impl Merge {
    /// Adds a lower layer's directory `dir/name` (if any). Returns whether merging goes on.
    fn step(
        &mut self,
        stack: &LayerStack,
        layer: usize,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> SysResult<bool> {
        let st = match probe(dir, name)? {
            Probe::Absent => return Ok(true),
            Probe::Whiteout => return Ok(false),
            Probe::Present(st) => st,
        };
        if !is_dir(&st) {
            // A lower non-directory under a directory ends the merge, unseen.
            return Ok(false);
        }
        let fd = sys::open_path_at(dir, name)?;
        let opaque = whiteout::is_opaque_dir(fd.as_fd())?;
        if self.origin.is_none() && !stack.is_upper(layer) {
            self.origin = Some((layer, st.st_ino));
        }
        self.objects.push(LayerObject { layer, fd });
        Ok(!opaque)
    }
}

/// Resolves `name` in the merged directory made of `parent_dirs` (topmost first).
/// `Ok(None)` means the name does not exist in the merged view.
pub fn lookup(
    stack: &LayerStack,
    parent_dirs: &[(usize, BorrowedFd<'_>)],
    name: &OsStr,
) -> SysResult<Option<Resolved>> {
    if whiteout::is_aufs_entry(name) {
        // AUFS bookkeeping never shows, whatever layer holds it.
        return Ok(None);
    }
    let mut merge = None;
    for (position, &(layer, dir)) in parent_dirs.iter().enumerate() {
        let st = match probe(dir, name)? {
            Probe::Absent => continue,
            Probe::Whiteout => break,
            Probe::Present(st) => st,
        };
        let fd = sys::open_path_at(dir, name)?;
        let below = &parent_dirs[position + 1..];
        let markers = if is_dir(&st) && !below.is_empty() {
            Some(whiteout::dir_markers(fd.as_fd())?)
        } else {
            None
        };
        let origin = (!stack.is_upper(layer)).then_some((layer, st.st_ino));
        let mut m = Merge {
            stat: st,
            objects: vec![LayerObject { layer, fd }],
            origin,
        };
        match markers {
            Some(markers) if !markers.opaque => match markers.redirect {
                Some(target) => merge_redirected(stack, &mut m, layer, below, &target)?,
                None => {
                    for &(layer, dir) in below {
                        if !m.step(stack, layer, dir, name)? {
                            break;
                        }
                    }
                }
            },
            _ => {}
        }
        merge = Some(m);
        break;
    }
    Ok(merge.map(|m| {
        let ino = match m.origin {
            Some((layer, real_ino)) => stack.stable_ino(layer, real_ino),
            None => recorded_ino(stack, m.objects[0].fd.as_fd())
                .unwrap_or_else(|| stack.stable_ino(m.objects[0].layer, m.stat.st_ino)),
        };
        Resolved {
            ino,
            stat: m.stat,
            objects: m.objects,
        }
    }))
}

/// Merges the lower part of a directory the kernel renamed with `redirect_dir=on`: a
/// relative redirect is a name in the same parent; an absolute one a path from each lower
/// layer's root (resolved component by component, never following symlinks).
fn merge_redirected(
    stack: &LayerStack,
    merge: &mut Merge,
    from_layer: usize,
    below: &[(usize, BorrowedFd<'_>)],
    target: &[u8],
) -> SysResult<()> {
    let Some(path) = target.strip_prefix(b"/") else {
        let name = OsStr::from_bytes(target);
        for &(layer, dir) in below {
            if !merge.step(stack, layer, dir, name)? {
                break;
            }
        }
        return Ok(());
    };
    let components: Vec<&OsStr> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(OsStr::from_bytes)
        .collect();
    let Some((last, dirs)) = components.split_last() else {
        return Ok(());
    };
    for layer in stack.layers.iter().filter(|l| l.index > from_layer) {
        let mut dir = layer.root.try_clone().map_err(|_| Errno::MFILE)?;
        let mut reachable = true;
        for component in dirs {
            match sys::open_path_at(dir.as_fd(), component) {
                Ok(next) if sys::stat_fd(next.as_fd()).is_ok_and(|st| is_dir(&st)) => dir = next,
                _ => {
                    reachable = false;
                    break;
                }
            }
        }
        if reachable && !merge.step(stack, layer.index, dir.as_fd(), last)? {
            break;
        }
    }
    Ok(())
}

/// The inode number an upper object had before its copy-up, if ovlfs recorded one.
pub fn recorded_ino(stack: &LayerStack, fd: BorrowedFd<'_>) -> Option<u64> {
    if !stack.has_upper {
        return None;
    }
    let value = sys::get_xattr(fd, stack.origin_xattr).ok()??;
    std::str::from_utf8(&value).ok()?.parse().ok()
}
