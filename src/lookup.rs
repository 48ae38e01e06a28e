//! Resolving a name in a merged directory across layers (the kernel's namei.c).
//!
//! The topmost layer holding the name decides what it is. A directory merges with the
//! directories of the same name below it until one is opaque, a whiteout is met, or a lower
//! layer holds a non-directory there (which then is ignored, as the kernel does).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

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
    let mut found: Option<(Stat, Vec<LayerObject>)> = None;
    // Inode of the topmost lower object of a merged directory (its origin).
    let mut origin: Option<(usize, u64)> = None;
    for (position, &(layer, dir)) in parent_dirs.iter().enumerate() {
        let st = match probe(dir, name)? {
            Probe::Absent => continue,
            Probe::Whiteout => break,
            Probe::Present(st) => st,
        };
        match &mut found {
            None => {
                let fd = sys::open_path_at(dir, name)?;
                let more_below = position + 1 < parent_dirs.len();
                let dir_continues =
                    is_dir(&st) && more_below && !whiteout::is_opaque_dir(fd.as_fd())?;
                if !stack.is_upper(layer) {
                    origin = Some((layer, st.st_ino));
                }
                found = Some((st, vec![LayerObject { layer, fd }]));
                if !dir_continues {
                    break;
                }
            }
            Some((_, objects)) => {
                if !is_dir(&st) {
                    // A lower non-directory under a directory ends the merge, unseen.
                    break;
                }
                let fd = sys::open_path_at(dir, name)?;
                let opaque = whiteout::is_opaque_dir(fd.as_fd())?;
                if origin.is_none() {
                    origin = Some((layer, st.st_ino));
                }
                objects.push(LayerObject { layer, fd });
                if opaque {
                    break;
                }
            }
        }
    }
    Ok(found.map(|(stat, objects)| {
        let ino = match origin {
            Some((layer, real_ino)) => stack.stable_ino(layer, real_ino),
            None => recorded_ino(stack, objects[0].fd.as_fd())
                .unwrap_or_else(|| stack.stable_ino(objects[0].layer, stat.st_ino)),
        };
        Resolved { ino, stat, objects }
    }))
}

/// The inode number an upper object had before its copy-up, if ovlfs recorded one.
pub fn recorded_ino(stack: &LayerStack, fd: BorrowedFd<'_>) -> Option<u64> {
    if !stack.has_upper {
        return None;
    }
    let value = sys::get_xattr(fd, stack.origin_xattr).ok()??;
    std::str::from_utf8(&value).ok()?.parse().ok()
}
