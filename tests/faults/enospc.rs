//! ENOSPC on a small upper: clean failures, no partial state, and the daemon keeps serving.

use super::*;
use common::rng::Rng;
use std::fs;
use std::io::Write;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// ENOSPC
// ---------------------------------------------------------------------------------------------

#[test]
fn enospc_upper_full_fails_cleanly_and_keeps_serving() {
    const TEST: &str = "enospc_upper_full_fails_cleanly_and_keeps_serving";
    if !require_root(TEST) {
        return;
    }
    let (_t, root) = scratch(&["lower", "upfs", "mnt"]);
    let lower = root.join("lower");
    let mut rng = Rng::new(42);
    write_random_file(&lower.join("big"), 16 << 20, &mut rng);
    write_random_file(&lower.join("small"), 8 << 10, &mut rng);
    write_random_file(&lower.join("tree/a"), 4 << 10, &mut rng);
    write_random_file(&lower.join("tree/b"), 12 << 20, &mut rng);
    write_random_file(&lower.join("tree/c"), 4 << 10, &mut rng);
    write_random_file(&lower.join("victim"), 4 << 10, &mut rng);
    write_random_file(&lower.join("dir/x"), 100, &mut rng);
    let lower_before = snapshot_tree(&lower);

    let fsdir = root.join("upfs");
    let _tmpfs = MountGuard::mount(&["-t", "tmpfs", "-o", "size=8m,mode=755", "tmpfs"], &fsdir)
        .unwrap_or_else(|e| panic!("{e}"));
    let (upper, work) = (fsdir.join("upper"), fsdir.join("work"));
    mkdirs(&upper);
    mkdirs(&work);
    let ov = Ovlfs::new([&lower]).upper(&upper, &work);
    let mnt = root.join("mnt");
    let m = ov.mount(&mnt);
    let workwork = work.join("work");
    let enospc = Some(libc::ENOSPC);

    // 1. Copy-up of a 16 MiB file into 8 MiB.
    let r = fs::OpenOptions::new().append(true).open(mnt.join("big"));
    assert_eq!(
        errno(&r),
        enospc,
        "append to a 16 MiB lower file on an 8 MiB upper: {} instead of ENOSPC",
        errno_name(errno(&r))
    );
    drop(r);
    assert_alive(&m, "after the failed copy-up");
    same_content(&mnt.join("big"), &lower.join("big"))
        .unwrap_or_else(|e| panic!("after the failed copy-up: {e}"));
    assert!(
        !upper.join("big").exists(),
        "a partial copy of big is in the upper"
    );
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "temp leftovers after the failed copy-up"
    );

    // 2. Directory rename whose tree copy-up runs out of space half-way (tree/b is 12 MiB).
    let r = fs::rename(mnt.join("tree"), mnt.join("tree2"));
    assert_eq!(
        errno(&r),
        enospc,
        "rename of a lower directory holding 12 MiB on an 8 MiB upper: {}",
        errno_name(errno(&r))
    );
    assert_alive(&m, "after the failed tree copy-up");
    assert!(
        !mnt.join("tree2").exists(),
        "tree2 appeared although the rename failed"
    );
    assert_eq!(
        sorted_names(&mnt.join("tree")),
        ["a", "b", "c"],
        "merged tree/ after the failed rename"
    );
    for f in ["a", "b", "c"] {
        same_content(&mnt.join("tree").join(f), &lower.join("tree").join(f))
            .unwrap_or_else(|e| panic!("after the failed tree copy-up: {e}"));
    }
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "temp leftovers after the failed rename"
    );

    // 3. Fill the upper through the mount: the writer must see ENOSPC (on write or fsync).
    let mut fill = fs::File::create(mnt.join("fill")).expect("create fill");
    let chunk = rng.bytes(256 << 10);
    let mut written = 0u64;
    let fill_err = loop {
        match fill.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break Some(e),
        }
        if written > 64 << 20 {
            break None;
        }
    };
    let fill_err = match fill_err {
        Some(e) => e,
        None => panic!("wrote {written} bytes into an 8 MiB upper without an error"),
    };
    let sync = fill.sync_all();
    drop(fill);
    assert_eq!(
        fill_err.raw_os_error(),
        enospc,
        "filling the upper failed with {} instead of ENOSPC (after {written} bytes)",
        errno_of(&fill_err)
    );
    if let Err(e) = &sync {
        assert_eq!(e.raw_os_error(), enospc, "fsync of the full file: {e}");
    }
    assert_alive(&m, "with the upper full");

    // 4. With the upper full: a small copy-up fails with ENOSPC and leaves the lower view.
    let r = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("small"))
        .and_then(|mut f| {
            f.write_all(b"appended")?;
            f.sync_all()
        });
    assert_eq!(
        errno(&r),
        enospc,
        "appending to a lower file with the upper full: {}",
        errno_name(errno(&r))
    );
    let small_now = fs::read(mnt.join("small")).expect("read small");
    let small_lower = fs::read(lower.join("small")).expect("read lower small");
    assert!(
        small_now == small_lower,
        "after the failed append, small has {} bytes (lower {}): a partial copy-up or write shows",
        small_now.len(),
        small_lower.len()
    );
    // ... and the daemon keeps serving everything that needs no space.
    assert_eq!(
        sorted_names(&mnt),
        ["big", "dir", "fill", "small", "tree", "victim"]
    );
    same_content(&mnt.join("big"), &lower.join("big")).expect("read big with the upper full");
    same_content(&mnt.join("dir/x"), &lower.join("dir/x")).expect("read dir/x with the upper full");
    fs::remove_file(mnt.join("victim"))
        .expect("unlink of a lower file (whiteout) with the upper full");
    assert!(!mnt.join("victim").exists());
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "temp leftovers with the upper full"
    );

    // 5. Free the space: everything works again.
    fs::remove_file(mnt.join("fill")).expect("unlink fill");
    // The daemon releases the deleted file's last descriptor when the kernel's RELEASE and
    // FORGET arrive (asynchronously): the space must come back promptly, not only at unmount.
    let freed_in = wait_free_space(&fsdir, 4 << 20, Duration::from_secs(5)).unwrap_or_else(|free| {
        panic!(
            "5 s after unlinking the file that filled the upper, the upper still has only {free} \
             bytes free: the daemon keeps the deleted file open"
        )
    });
    visible(&format!(
        "{TEST}: space of the deleted file released after {freed_in:?}"
    ));
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("small"))
        .expect("append to small after freeing space");
    f.write_all(b"appended").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    let mut expect_small = small_lower.clone();
    expect_small.extend_from_slice(b"appended");
    assert!(fs::read(mnt.join("small")).expect("read small") == expect_small);
    fs::write(mnt.join("newfile"), b"new").expect("create after freeing space");
    assert_alive(&m, "after freeing space");
    m.assert_no_panic_logged(TEST);
    drop(m);

    // 6. Remount: the same tree, no leftovers.
    let m = ov.mount(&mnt);
    assert_eq!(
        work_leftovers(&workwork),
        Vec::<String>::new(),
        "WORKDIR/work after the remount"
    );
    assert_eq!(
        sorted_names(&mnt),
        ["big", "dir", "newfile", "small", "tree"]
    );
    same_content(&mnt.join("big"), &lower.join("big")).expect("big after remount");
    for f in ["a", "b", "c"] {
        same_content(&mnt.join("tree").join(f), &lower.join("tree").join(f))
            .unwrap_or_else(|e| panic!("after remount: {e}"));
    }
    assert!(fs::read(mnt.join("small")).expect("read small") == expect_small);
    drop(m);
    assert_tree_unchanged("lower", &lower_before, &lower);
}
