//! Tests of the inode table.

use super::*;
use crate::lookup::ObjFd;

fn leaf() -> NodeState {
    let fd = std::fs::File::open("/dev/null").expect("/dev/null");
    NodeState {
        objects: Objects::one(
            false,
            LayerObject {
                layer: 1,
                fd: ObjFd::open(fd.into()),
            },
        ),
        parent: None,
        name: "f".into(),
    }
}

fn table() -> InodeTable {
    let fd = std::fs::File::open("/").expect("/");
    let root = NodeState {
        objects: Objects::one(
            true,
            LayerObject {
                layer: 0,
                fd: ObjFd::open(fd.into()),
            },
        ),
        parent: None,
        name: Default::default(),
    };
    InodeTable::new(root, 2)
}

const REG: u32 = libc::S_IFREG;

#[test]
fn a_superseded_node_gets_a_successor_until_both_are_forgotten() {
    let t = table();
    let old = t.lookup_or_insert(500, REG, leaf());
    assert_eq!(old.id, 500, "node id = inode number normally");
    assert!(Arc::ptr_eq(&t.lookup_or_insert(500, REG, leaf()), &old));
    old.superseded.store(true, Ordering::Release);
    let new = t.lookup_or_insert(500, REG, leaf());
    assert_ne!(new.id, 500, "a fresh id for the successor");
    assert_eq!(new.ino, 500, "the same inode number");
    assert!(Arc::ptr_eq(&t.lookup_or_insert(500, REG, leaf()), &new));
    assert!(Arc::ptr_eq(&t.current(500).expect("current"), &new));
    // The old node goes with its last reference; the number still leads to the successor.
    t.forget(500, 2);
    assert!(t.get(500).is_none());
    assert!(Arc::ptr_eq(&t.lookup_or_insert(500, REG, leaf()), &new));
    // Then the successor and its alias go: the number is its own id again.
    t.forget(new.id, 3);
    assert!(t.get(new.id).is_none());
    assert!(t.current(500).is_none());
    let again = t.lookup_or_insert(500, REG, leaf());
    assert_eq!(again.id, 500);
    assert_eq!(t.alias_count.load(Ordering::Acquire), 0);
}

#[test]
fn forgetting_the_successor_first_leaves_the_old_node_alone() {
    let t = table();
    let old = t.lookup_or_insert(700, REG, leaf());
    old.superseded.store(true, Ordering::Release);
    let new = t.lookup_or_insert(700, REG, leaf());
    t.forget(new.id, 1);
    assert!(t.get(new.id).is_none());
    assert!(Arc::ptr_eq(&t.get(700).expect("old node"), &old));
    // A later lookup makes another successor: the old id still serves the old opens.
    let newer = t.lookup_or_insert(700, REG, leaf());
    assert_ne!(newer.id, 700);
    assert_ne!(newer.id, new.id);
    assert_eq!(t.len(), 3, "root, old node, newer successor");
}

/// What a worker taking over finds: a renamed successor's superseded node by the new
/// name, lookups of the number on the successor (never the superseded id), a fresh id
/// once the successor is forgotten.
#[test]
fn a_new_worker_keeps_a_superseded_node_and_its_successor_apart() {
    use std::os::fd::AsFd;
    let fd = crate::kernel_refs::create().expect("memfd");
    let attached = || {
        let t = table();
        t.attach_refs(Arc::new(KernelRefs::open(fd.as_fd()).expect("map")));
        t
    };
    let t1 = attached();
    let old = t1.lookup_or_insert(500, REG, leaf());
    old.superseded.store(true, Ordering::Release);
    t1.note_superseded(&old);
    let new = t1.lookup_or_insert(500, REG, leaf());
    let root = t1.get(ROOT_ID).expect("root");
    t1.set_name(&new, &mut new.write(), root, OsStr::new("moved"));

    let t2 = attached();
    let record = t2.inherited(500).expect("the superseded node's record");
    assert!(record.superseded);
    assert_eq!(record.name, "moved", "it follows its successor's rename");
    let again = t2.lookup_or_insert(500, REG, leaf());
    assert_eq!(
        again.id, new.id,
        "the kernel's successor id serves the number"
    );
    assert!(
        t2.restore(500, REG, leaf())
            .expect("restored")
            .is_superseded()
    );

    let t3 = attached();
    t3.forget(new.id, 2);
    let newer = t3.lookup_or_insert(500, REG, leaf());
    assert!(newer.id != 500 && newer.id != new.id, "id {}", newer.id);
}

#[test]
fn an_inode_number_equal_to_a_taken_id_gets_an_id_of_its_own() {
    let t = table();
    // The root's id is 1; an object whose number is 1 must not become the root.
    let node = t.lookup_or_insert(ROOT_ID, REG, leaf());
    assert_ne!(node.id, ROOT_ID);
    assert_eq!(node.ino, ROOT_ID);
    assert!(t.get(ROOT_ID).expect("root").is_dir());
}
