//! uid/gid mapping and squashing (fuse-overlayfs's `uidmapping=`, `gidmapping=`,
//! `squash_to_root`, `squash_to_uid=`, `squash_to_gid=`).
//!
//! Each `C:H:N` range says that ids `C..C+N` stored on disk show through the mount as
//! `H..H+N`: the layers hold the container's own ids (an image's root files are owned by 0),
//! and the mount shows the ids that the container's user namespace maps back to them. Ids
//! given through the mount (chown, the creator of a new object) go the other way. Where
//! ranges overlap, the last one given wins, as in fuse-overlayfs. An on-disk id outside every
//! range shows as the kernel's overflow id.

use crate::config::{Config, IdRange};

/// The overflow ids when `/proc/sys/kernel/overflow{u,g}id` cannot be read.
const DEFAULT_OVERFLOW_ID: u32 = 65534;

#[derive(Debug, Clone)]
pub struct IdMap {
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
    overflow_uid: u32,
    overflow_gid: u32,
}

impl Default for IdMap {
    fn default() -> IdMap {
        IdMap {
            uids: Vec::new(),
            gids: Vec::new(),
            squash_uid: None,
            squash_gid: None,
            overflow_uid: DEFAULT_OVERFLOW_ID,
            overflow_gid: DEFAULT_OVERFLOW_ID,
        }
    }
}

/// The kernel's overflow id from `/proc/sys/kernel/overflowuid` or `overflowgid`.
fn read_overflow_id(file: &str) -> u32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_OVERFLOW_ID)
}

/// The id shown for on-disk id `disk`; `None` when no range holds it.
fn disk_to_shown(ranges: &[IdRange], disk: u32) -> Option<u32> {
    if ranges.is_empty() {
        return Some(disk);
    }
    ranges
        .iter()
        .rev()
        .find(|r| disk >= r.container && disk - r.container < r.size)
        .map(|r| r.host + (disk - r.container))
}

/// The on-disk id for id `shown` given through the mount; `None` when no range holds it.
fn shown_to_disk(ranges: &[IdRange], shown: u32) -> Option<u32> {
    if ranges.is_empty() {
        return Some(shown);
    }
    ranges
        .iter()
        .rev()
        .find(|r| shown >= r.host && shown - r.host < r.size)
        .map(|r| r.container + (shown - r.host))
}

impl IdMap {
    pub fn from_config(config: &Config) -> IdMap {
        let root = config.squash_to_root.then_some(0);
        IdMap {
            uids: config.uid_mapping.clone(),
            gids: config.gid_mapping.clone(),
            squash_uid: config.squash_to_uid.or(root),
            squash_gid: config.squash_to_gid.or(root),
            overflow_uid: read_overflow_id("/proc/sys/kernel/overflowuid"),
            overflow_gid: read_overflow_id("/proc/sys/kernel/overflowgid"),
        }
    }

    /// The owner shown through the mount for an on-disk uid.
    pub fn uid_to_user(&self, disk: u32) -> u32 {
        self.squash_uid
            .or_else(|| disk_to_shown(&self.uids, disk))
            .unwrap_or(self.overflow_uid)
    }

    pub fn gid_to_user(&self, disk: u32) -> u32 {
        self.squash_gid
            .or_else(|| disk_to_shown(&self.gids, disk))
            .unwrap_or(self.overflow_gid)
    }

    /// The on-disk uid for an id given through the mount; `None` if it maps nowhere.
    pub fn uid_to_host(&self, shown: u32) -> Option<u32> {
        shown_to_disk(&self.uids, shown)
    }

    pub fn gid_to_host(&self, shown: u32) -> Option<u32> {
        shown_to_disk(&self.gids, shown)
    }

    /// The on-disk uid for the creator of a new object: the overflow uid when unmapped.
    pub fn uid_to_disk_or_overflow(&self, shown: u32) -> u32 {
        self.uid_to_host(shown).unwrap_or(self.overflow_uid)
    }

    pub fn gid_to_disk_or_overflow(&self, shown: u32) -> u32 {
        self.gid_to_host(shown).unwrap_or(self.overflow_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man-page example `0:1000:1:1:110000:65536`.
    fn map() -> IdMap {
        IdMap {
            uids: vec![
                IdRange {
                    container: 0,
                    host: 1000,
                    size: 1,
                },
                IdRange {
                    container: 1,
                    host: 110_000,
                    size: 65536,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn disk_ids_show_as_the_second_field() {
        let m = map();
        assert_eq!(m.uid_to_user(0), 1000);
        assert_eq!(m.uid_to_user(1), 110_000);
        assert_eq!(m.uid_to_user(1000), 110_999);
        assert_eq!(m.uid_to_user(70_000), DEFAULT_OVERFLOW_ID);
        assert_eq!(m.uid_to_host(1000), Some(0));
        assert_eq!(m.uid_to_host(110_009), Some(10));
        assert_eq!(m.uid_to_host(5), None);
        // No gid ranges: identity.
        assert_eq!(m.gid_to_user(42), 42);
        assert_eq!(m.gid_to_host(42), Some(42));
    }

    #[test]
    fn last_overlapping_range_wins() {
        let m = IdMap {
            uids: vec![
                IdRange {
                    container: 0,
                    host: 100,
                    size: 10,
                },
                IdRange {
                    container: 5,
                    host: 500,
                    size: 1,
                },
            ],
            ..Default::default()
        };
        assert_eq!(m.uid_to_user(5), 500);
        assert_eq!(m.uid_to_user(4), 104);
        assert_eq!(m.uid_to_host(500), Some(5));
    }

    #[test]
    fn squash_wins_over_ranges() {
        let m = IdMap {
            squash_uid: Some(0),
            ..map()
        };
        assert_eq!(m.uid_to_user(123_456), 0);
        assert_eq!(m.uid_to_host(1000), Some(0));
    }
}
