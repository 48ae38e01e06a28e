//! uid/gid mapping and squashing (fuse-overlayfs's `uidmapping=`, `gidmapping=`,
//! `squash_to_root`, `squash_to_uid=`, `squash_to_gid=`).
//!
//! Owners on disk are host ids; the merged view shows container ids. Ids outside every range
//! show as the overflow id, as the kernel does for unmapped ids.

use crate::options::{Config, IdRange};

pub const OVERFLOW_ID: u32 = 65534;

#[derive(Debug, Clone, Default)]
pub struct IdMap {
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
}

fn host_to_container(ranges: &[IdRange], host: u32) -> u32 {
    if ranges.is_empty() {
        return host;
    }
    ranges
        .iter()
        .find(|r| host >= r.host && host - r.host < r.size)
        .map_or(OVERFLOW_ID, |r| r.container + (host - r.host))
}

fn container_to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.size)
        .map(|r| r.host + (id - r.container))
}

impl IdMap {
    pub fn from_config(config: &Config) -> IdMap {
        let root = config.squash_to_root.then_some(0);
        IdMap {
            uids: config.uid_mapping.clone(),
            gids: config.gid_mapping.clone(),
            squash_uid: config.squash_to_uid.or(root),
            squash_gid: config.squash_to_gid.or(root),
        }
    }

    /// The owner shown through the mount for an on-disk uid.
    pub fn uid_to_user(&self, host: u32) -> u32 {
        self.squash_uid
            .unwrap_or_else(|| host_to_container(&self.uids, host))
    }

    pub fn gid_to_user(&self, host: u32) -> u32 {
        self.squash_gid
            .unwrap_or_else(|| host_to_container(&self.gids, host))
    }

    /// The on-disk uid for an id given through the mount; `None` if it maps nowhere.
    pub fn uid_to_host(&self, id: u32) -> Option<u32> {
        container_to_host(&self.uids, id)
    }

    pub fn gid_to_host(&self, id: u32) -> Option<u32> {
        container_to_host(&self.gids, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    host: 100_000,
                    size: 65536,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn maps_both_ways_and_overflows() {
        let m = map();
        assert_eq!(m.uid_to_user(1000), 0);
        assert_eq!(m.uid_to_user(100_000), 1);
        assert_eq!(m.uid_to_user(100_009), 10);
        assert_eq!(m.uid_to_user(5), OVERFLOW_ID);
        assert_eq!(m.uid_to_host(0), Some(1000));
        assert_eq!(m.uid_to_host(10), Some(100_009));
        assert_eq!(m.uid_to_host(70_000), None);
        // No gid ranges: identity.
        assert_eq!(m.gid_to_user(42), 42);
    }
}
