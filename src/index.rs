//! The kernel's inode index (`WORKDIR/index`), read so that hard links the kernel's overlayfs
//! copied up with `index=on` stay joined.
//!
//! With `index=on` the kernel copies up only the name that changed, tags the copy with
//! `overlay.origin` (a file handle of the lower inode) and hard-links it into `WORKDIR/index`
//! under the hex form of that handle. The other names of the lower inode stay lower-only in
//! the upper, yet the kernel shows them with the indexed copy's data and metadata, and the
//! link count `overlay.nlink` records. ovlfs finds the index entry of a multi-link lower file
//! the same way (the lower object's handle, in hex) and shows the entry instead. ovlfs never
//! writes index entries (docs/format.md says why).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys::{self, Stat};

/// `struct ovl_fb` (overlayfs.h): version, magic, total length, flags, handle type, the
/// filesystem's UUID, then the filesystem's own handle bytes.
const FB_MAGIC: u8 = 0xfb;
const FB_HEADER: usize = 5 + 16;
/// `OVL_FH_FLAG_PATH_UPPER`: a handle of an upper object (directory index entries).
const FB_FLAG_PATH_UPPER: u8 = 1 << 2;

const ORIGIN_XATTRS: [&str; 2] = ["trusted.overlay.origin", "user.overlay.origin"];
const NLINK_XATTRS: [&str; 2] = ["trusted.overlay.nlink", "user.overlay.nlink"];

/// A parsed `struct ovl_fb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginHandle {
    pub kind: i32,
    pub uuid: [u8; 16],
    pub fid: Vec<u8>,
}

impl OriginHandle {
    /// Parses the on-disk form (`overlay.origin`, or an index name decoded from hex).
    pub fn parse(raw: &[u8]) -> Option<OriginHandle> {
        if raw.len() <= FB_HEADER || raw[0] != 0 || raw[1] != FB_MAGIC {
            return None;
        }
        if raw[2] as usize != raw.len() || raw[3] & FB_FLAG_PATH_UPPER != 0 {
            return None;
        }
        Some(OriginHandle {
            kind: raw[4] as i32,
            uuid: raw[5..FB_HEADER].try_into().ok()?,
            fid: raw[FB_HEADER..].to_vec(),
        })
    }

    /// Whether a handle found in a layer whose filesystem reports `uuid` is this one. The
    /// kernel stores a null UUID with `uuid=null`/`off`; an unknown layer UUID matches any.
    fn matches(&self, kind: i32, fid: &[u8], uuid: Option<[u8; 16]>) -> bool {
        let uuid_ok = match uuid {
            Some(u) => self.uuid == u || self.uuid == [0; 16],
            None => true,
        };
        self.kind == kind && self.fid == fid && uuid_ok
    }
}

/// The lower inode an index entry stands for, when it could be decoded at mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub layer: usize,
    pub ino: u64,
    pub nlink: u64,
}

#[derive(Debug)]
struct Entry {
    name: OsString,
    handle: OriginHandle,
    origin: Option<Origin>,
}

/// A lower layer as the index needs it.
pub struct IndexedLayer<'a> {
    pub index: usize,
    pub root: BorrowedFd<'a>,
    pub dev: u64,
}

/// The entries of `WORKDIR/index`, keyed by the lower handle they stand for.
#[derive(Debug)]
pub struct KernelIndex {
    dir: OwnedFd,
    /// (handle type, handle bytes) → entries (normally one).
    entries: HashMap<(i32, Vec<u8>), Vec<Entry>>,
    /// The filesystem UUID of each layer (by layer index), where it reports one.
    uuids: Vec<Option<[u8; 16]>>,
}

impl KernelIndex {
    /// Reads `WORKDIR/index` if the kernel left one with entries. Each entry is decoded to
    /// its lower inode where the daemon may (`open_by_handle_at`), so that every name of it
    /// reports the lower inode number, as the kernel does.
    pub fn load(workdir: &Path, lowers: &[IndexedLayer<'_>]) -> Option<KernelIndex> {
        let dir = sys::open_layer_root(&workdir.join("index")).ok()?;
        let listing = sys::read_dir(dir.as_fd()).ok()?;
        let layer_count = lowers.iter().map(|l| l.index + 1).max().unwrap_or(0);
        let mut uuids = vec![None; layer_count];
        for l in lowers {
            uuids[l.index] = sys::fs_uuid(l.root);
        }
        let mut entries: HashMap<(i32, Vec<u8>), Vec<Entry>> = HashMap::new();
        for raw in listing {
            let Some(handle) =
                hex_decode(raw.name.as_bytes()).and_then(|b| OriginHandle::parse(&b))
            else {
                continue;
            };
            let origin = decode(&handle, lowers, &uuids);
            entries
                .entry((handle.kind, handle.fid.clone()))
                .or_default()
                .push(Entry {
                    name: raw.name,
                    handle,
                    origin,
                });
        }
        if entries.is_empty() {
            return None;
        }
        log::debug!("kernel index: {} entries", entries.len());
        Some(KernelIndex {
            dir,
            entries,
            uuids,
        })
    }

    /// The index entry standing for lower object `fd` of `layer` (a multi-link file): an
    /// `O_PATH` fd of the indexed upper copy and its stat.
    pub fn upper_of(&self, layer: usize, fd: BorrowedFd<'_>) -> Option<(OwnedFd, Stat)> {
        let (kind, fid) = sys::file_handle(fd).ok()?;
        let uuid = self.uuids.get(layer).copied().flatten();
        let entry = self
            .entries
            .get(&(kind, fid.clone()))?
            .iter()
            .find(|e| e.handle.matches(kind, &fid, uuid))?;
        let upper = sys::open_path_at(self.dir.as_fd(), &entry.name).ok()?;
        let st = sys::stat_fd(upper.as_fd()).ok()?;
        // Only a regular copy (a whiteout entry records a deleted directory).
        (st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some((upper, st))
    }

    /// The lower inode of an indexed upper object (by its `overlay.origin`), if its index
    /// entry exists and was decoded.
    pub fn origin_of(&self, upper: BorrowedFd<'_>) -> Option<Origin> {
        self.entry_of(upper)?.origin
    }

    /// The index entry an upper object's `overlay.origin` names, if there is one.
    fn entry_of(&self, upper: BorrowedFd<'_>) -> Option<&Entry> {
        let raw = ORIGIN_XATTRS
            .iter()
            .find_map(|name| sys::get_xattr(upper, name).ok().flatten())?;
        let handle = OriginHandle::parse(&raw)?;
        self.entries
            .get(&(handle.kind, handle.fid.clone()))?
            .iter()
            .find(|e| e.handle == handle)
    }

    /// The link count users see of an indexed upper object: its real one corrected by
    /// `overlay.nlink`, which counts names still lower-only and not the index entry.
    pub fn shown_nlink(&self, upper: BorrowedFd<'_>, st: &Stat) -> Option<u64> {
        let entry = self.entry_of(upper)?;
        let value = NLINK_XATTRS
            .iter()
            .find_map(|name| sys::get_xattr(upper, name).ok().flatten())?;
        let lower_nlink = entry.origin.map_or(0, |o| o.nlink);
        indexed_nlink(&value, st.st_nlink, lower_nlink)
    }
}

/// Opens the lower inode a handle names (on the first lower filesystem whose UUID fits).
fn decode(
    handle: &OriginHandle,
    lowers: &[IndexedLayer<'_>],
    uuids: &[Option<[u8; 16]>],
) -> Option<Origin> {
    let mut tried = Vec::new();
    for l in lowers {
        if tried.contains(&l.dev) || !handle.matches(handle.kind, &handle.fid, uuids[l.index]) {
            continue;
        }
        tried.push(l.dev);
        let fd = match sys::open_by_handle(l.root, handle.kind, &handle.fid) {
            Ok(fd) => fd,
            Err(e) => {
                log::debug!(
                    "kernel index: cannot decode a handle in layer {}: {e}",
                    l.index
                );
                continue;
            }
        };
        let Ok(st) = sys::stat_fd(fd.as_fd()) else {
            continue;
        };
        let layer = lowers.iter().find(|x| x.dev == st.st_dev)?.index;
        return Some(Origin {
            layer,
            ino: st.st_ino,
            nlink: st.st_nlink,
        });
    }
    None
}

/// `overlay.nlink`: `U±N` (relative to the upper inode's count) or `L±N` (to the lower's).
pub fn indexed_nlink(value: &[u8], upper_nlink: u64, lower_nlink: u64) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let (base, diff) = match text.as_bytes().first()? {
        b'U' => (upper_nlink, &text[1..]),
        b'L' => (lower_nlink, &text[1..]),
        _ => return None,
    };
    if !diff.starts_with(['+', '-']) {
        return None;
    }
    let n = base as i64 + diff.parse::<i64>().ok()?;
    (n > 0).then_some(n as u64)
}

/// The `overlay.nlink` value once every name of an indexed file is linked into the upper:
/// all its upper links but the index entry.
pub const ALL_LINKED_UP: &[u8] = b"U-1";

/// Records `overlay.nlink` on an indexed upper object, in the namespace its origin uses.
pub fn set_nlink(upper: BorrowedFd<'_>, value: &[u8]) -> sys::SysResult<()> {
    let name = ORIGIN_XATTRS
        .iter()
        .zip(NLINK_XATTRS)
        .find(|(origin, _)| sys::get_xattr(upper, origin).ok().flatten().is_some())
        .map_or(NLINK_XATTRS[0], |(_, nlink)| nlink);
    sys::set_xattr(upper, std::ffi::OsStr::new(name), value, 0)
}

fn hex_decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index entry name of a handle (lower-case hex of its on-disk form).
    fn index_name(handle: &OriginHandle) -> OsString {
        let mut raw = vec![0, FB_MAGIC, (FB_HEADER + handle.fid.len()) as u8, 0];
        raw.push(handle.kind as u8);
        raw.extend_from_slice(&handle.uuid);
        raw.extend_from_slice(&handle.fid);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        OsString::from(hex)
    }

    #[test]
    fn kernel_index_name_round_trips() {
        // As the kernel wrote it for an ext4 inode (FILEID_INO32_GEN, null UUID).
        let name = b"00fb1d0001000000000000000000000000000000004bc19800029f788f";
        let raw = hex_decode(name).unwrap();
        let handle = OriginHandle::parse(&raw).unwrap();
        assert_eq!(handle.kind, 1);
        assert_eq!(handle.uuid, [0; 16]);
        assert_eq!(handle.fid, [0x4b, 0xc1, 0x98, 0, 0x02, 0x9f, 0x78, 0x8f]);
        assert_eq!(index_name(&handle).as_bytes(), name);
        assert!(handle.matches(1, &handle.fid, Some([7; 16])));
        assert!(!handle.matches(2, &handle.fid, None));
        // Wrong magic, length, or an upper handle: not an origin.
        assert!(OriginHandle::parse(&raw[..raw.len() - 1]).is_none());
        let mut upper = raw.clone();
        upper[3] = FB_FLAG_PATH_UPPER;
        assert!(OriginHandle::parse(&upper).is_none());
        assert!(hex_decode(b"0g").is_none());
    }

    #[test]
    fn nlink_relative_to_upper_or_lower() {
        assert_eq!(indexed_nlink(b"U+1", 2, 3), Some(3));
        assert_eq!(indexed_nlink(b"U-1", 4, 3), Some(3));
        assert_eq!(indexed_nlink(b"L-1", 9, 3), Some(2));
        assert_eq!(indexed_nlink(b"U+0", 2, 3), Some(2));
        assert_eq!(indexed_nlink(b"U1", 2, 3), None);
        assert_eq!(indexed_nlink(b"X+1", 2, 3), None);
        assert_eq!(indexed_nlink(b"U-2", 2, 3), None);
    }
}
