//! Merged directory listings (the kernel's readdir.c): built once per open handle.
//!
//! Layers are read top to bottom; the first layer holding a name decides it, whiteouts of
//! every format hide the name below, and the bookkeeping entries themselves never show.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;

use rustix::fs::FileType as RawType;

use crate::layer::LayerStack;
use crate::lookup;
use crate::sys::{self, SysResult};
use crate::whiteout;

/// One entry of a merged listing.
#[derive(Debug, Clone)]
pub struct MergedEntry {
    pub name: OsString,
    /// `S_IFMT` bits.
    pub file_type: u32,
    /// Equal to the st_ino a lookup of the name reports.
    pub ino: u64,
}

fn mode_of(t: RawType) -> Option<u32> {
    Some(match t {
        RawType::RegularFile => libc::S_IFREG,
        RawType::Directory => libc::S_IFDIR,
        RawType::Symlink => libc::S_IFLNK,
        RawType::Fifo => libc::S_IFIFO,
        RawType::Socket => libc::S_IFSOCK,
        RawType::CharacterDevice => libc::S_IFCHR,
        RawType::BlockDevice => libc::S_IFBLK,
        RawType::Unknown => return None,
    })
}

/// Lists the merged directory made of `dirs` (topmost first, as in the node's state).
pub fn list(stack: &LayerStack, dirs: &[(usize, BorrowedFd<'_>)]) -> SysResult<Vec<MergedEntry>> {
    let mut seen: HashSet<OsString> = HashSet::new();
    let mut out = Vec::new();
    for (position, &(layer, dir)) in dirs.iter().enumerate() {
        let raw = sys::read_dir(dir)?;
        let mut hidden_below = Vec::new();
        for entry in raw {
            if let Some(target) = whiteout::aufs_whiteout_target(&entry.name) {
                hidden_below.push(target.to_owned());
                continue;
            }
            if whiteout::is_aufs_entry(&entry.name) || seen.contains(&entry.name) {
                continue;
            }
            let Some(file_type) = classify(dir, &entry.name, entry.file_type) else {
                // A whiteout, or an entry that vanished: it hides the name below all the same.
                seen.insert(entry.name);
                continue;
            };
            let has_lower = position + 1 < dirs.len();
            let ino = if file_type == libc::S_IFDIR && stack.is_upper(layer) && has_lower {
                // An upper directory may merge with a lower one: its inode is the lower's.
                match lookup::lookup(stack, dirs, &entry.name)? {
                    Some(resolved) => resolved.ino,
                    None => stack.stable_ino(layer, entry.ino),
                }
            } else if stack.is_upper(layer) {
                // A copied-up object keeps the inode number it had in the lower layer.
                sys::open_path_at(dir, &entry.name)
                    .ok()
                    .and_then(|fd| lookup::recorded_ino(stack, std::os::fd::AsFd::as_fd(&fd)))
                    .unwrap_or_else(|| stack.stable_ino(layer, entry.ino))
            } else {
                stack.stable_ino(layer, entry.ino)
            };
            seen.insert(entry.name.clone());
            out.push(MergedEntry {
                name: entry.name,
                file_type,
                ino,
            });
        }
        seen.extend(hidden_below);
    }
    Ok(out)
}

/// The entry's type, or `None` when it is a whiteout (or vanished).
fn classify(dir: BorrowedFd<'_>, name: &OsStr, raw: RawType) -> Option<u32> {
    let needs_stat = matches!(
        raw,
        RawType::RegularFile | RawType::CharacterDevice | RawType::Unknown
    );
    if !needs_stat {
        return mode_of(raw);
    }
    let st = sys::stat_at(dir, name).ok()?;
    if whiteout::is_whiteout_at(dir, name, &st) {
        return None;
    }
    Some(st.st_mode & libc::S_IFMT)
}
