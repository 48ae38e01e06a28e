//! The multi-link inodes of a layer: for each, every path naming it. Built once per layer, on
//! the first copy-up of a multi-link file, by one walk of that layer.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use rustix::fs::OFlags;

use crate::sys::{self, SysResult};

/// Paths (from the layer root, components joined by `/`) of each multi-link inode.
pub type LinkMap = HashMap<u64, Vec<OsString>>;

#[derive(Debug, Default)]
pub struct HardlinkIndex {
    layers: Mutex<HashMap<usize, Arc<LinkMap>>>,
}

impl HardlinkIndex {
    pub fn get_or_build(&self, layer: usize, root: BorrowedFd<'_>) -> Arc<LinkMap> {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        layers
            .entry(layer)
            .or_insert_with(|| {
                let mut map = LinkMap::new();
                if let Err(e) = walk(root, &mut Vec::new(), &mut map) {
                    log::warn!("indexing hard links of layer {layer}: {e}");
                }
                map.retain(|_, paths| paths.len() > 1);
                Arc::new(map)
            })
            .clone()
    }
}

/// The multi-link files below `dir` (paths relative to it), by one walk of that tree only.
pub fn multi_link_files(dir: BorrowedFd<'_>) -> LinkMap {
    let mut map = LinkMap::new();
    if let Err(e) = walk(dir, &mut Vec::new(), &mut map) {
        log::warn!("looking for hard links: {e}");
    }
    map
}

fn walk(dir: BorrowedFd<'_>, prefix: &mut Vec<u8>, map: &mut LinkMap) -> SysResult<()> {
    for entry in sys::read_dir(dir)? {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(entry.name.as_bytes());
        if entry.file_type == rustix::fs::FileType::Directory {
            if let Ok(sub) = sys::open_at(dir, &entry.name, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
                walk(sub.as_fd(), prefix, map)?;
            }
        } else if let Ok(st) = sys::stat_at(dir, &entry.name)
            && st.st_nlink > 1
        {
            map.entry(st.st_ino)
                .or_default()
                .push(OsStr::from_bytes(prefix).to_owned());
        }
        prefix.truncate(len);
    }
    Ok(())
}
