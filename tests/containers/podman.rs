//! podman end-to-end, with ovlfs as `mount_program` (skipped visibly where podman cannot run).

use super::engine::*;
use super::images::*;
use super::*;
use std::fs;
use std::thread;
use std::time::Instant;

/// Rootful podman with ovlfs as `mount_program`: import a local base image from a tarball,
/// build an image whose RUN steps delete and recreate lower directories, run containers
/// (`--network=none`), check files, and check the saved layers reproduce the tree.
/// (fuse-overlayfs 1.10 fails the second RUN step: after `ls /data`, `stat /data/old` finds the
/// deleted lower file under the recreated directory.)
#[test]
fn podman_end_to_end_with_ovlfs_mount_program() {
    let test = "podman_end_to_end_with_ovlfs_mount_program";
    if setup(test, Mode::Rootful, &[]).is_none() {
        return;
    }
    let (_t, root) = scratch(&["ctx", "saved_tree"]);
    let tarball_s = base_tarball(&root, (1000, 1000)).expect("base image");

    // The real thing: overlay driver with ovlfs as mount_program.
    let pm = Engine::podman(
        None,
        &root.join("ovl"),
        &[
            "--storage-driver=overlay".to_string(),
            format!(
                "--storage-opt=overlay.mount_program={}",
                ovlfs_bin().display()
            ),
        ],
    );
    let _cleanup = Cleanup::new(&pm, &root);
    let long = STEP;
    let info = pm.ok(&["info", "--format", "{{.Store.GraphOptions}}"], long);
    assert!(
        info.contains("mount_program") && info.contains(&*ovlfs_bin().to_string_lossy()),
        "podman does not use ovlfs as mount_program: {info}"
    );
    pm.ok(&["import", &tarball_s, "localhost/ovlfs-e2e-base:1"], long);

    // RUN steps that delete and recreate lower directories.
    let containerfile = "FROM localhost/ovlfs-e2e-base:1\n\
        RUN mkdir -p /data/sub /keep /nest/a/b && echo a > /data/sub/f && echo b > /data/g \
            && echo old > /data/old && echo k > /keep/k && echo k2 > /keep/k2 && echo deep > /nest/a/b/c\n\
        RUN rm -rf /data && mkdir /data && echo new > /data/n && rm /keep/k \
            && rm -rf /nest/a && mkdir -p /nest/a && echo fresh > /nest/a/fresh \
            && ls -la /data /nest/a >/dev/null && for p in /data/old /data/g /data/sub /nest/a/b; do if stat $p >/dev/null 2>&1; then echo \"STILL THERE: $p\"; exit 1; fi; done\n\
        RUN echo appended >> /keep/k2 && rm -rf /data && mkdir /data && echo newer > /data/m\n";
    write_file(&root.join("ctx/Containerfile"), containerfile);
    let ctx = root.join("ctx").to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["build"];
    args.extend(RUN_FLAGS);
    args.extend(["-t", "localhost/ovlfs-e2e:1", "-f"]);
    let cf = format!("{ctx}/Containerfile");
    args.push(&cf);
    args.push(&ctx);
    let o = pm.run(&args, long);
    assert!(
        o.success(),
        "podman build with ovlfs failed:\n{}\n{}",
        o.stdout,
        o.stderr
    );

    // Run a container: the final tree, and that its root is an ovlfs mount.
    let check = "ls -A /data | tr '\\n' ' '; echo '|'; ls -A /keep | tr '\\n' ' '; echo '|'; \
                 cat /data/m /keep/k2 /nest/a/fresh; ls -A /nest/a | tr '\\n' ' '; echo '|'; \
                 for p in /data/n /data/old /keep/k /nest/a/b; do stat $p >/dev/null 2>&1 && echo \"visible $p\"; done; \
                 cat /proc/self/mountinfo";
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e:1", "sh", "-c", check]);
    let out = pm.ok(&args, long);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("m |"), "/data in the container:\n{out}");
    assert_eq!(lines.next(), Some("k2 |"), "/keep in the container:\n{out}");
    assert_eq!(lines.next(), Some("newer"));
    assert_eq!(lines.next(), Some("k2"));
    assert_eq!(lines.next(), Some("appended"));
    assert_eq!(lines.next(), Some("fresh"));
    assert_eq!(
        lines.next(),
        Some("fresh |"),
        "/nest/a in the container:\n{out}"
    );
    assert!(
        !out.contains("visible "),
        "deleted paths visible in the container:\n{out}"
    );
    let root_line = out
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in the container's mountinfo:\n{out}"));
    assert!(
        root_line.contains(" - fuse"),
        "the container's root is not a FUSE (ovlfs) mount: {root_line}"
    );

    // rm -rf / mkdir at container run time, on the image's lower layers.
    let trap = "rm -rf /data /nest && mkdir /data /nest && ls -A /data /nest; \
                for p in /data/m /nest/a /nest/a/fresh; do stat $p >/dev/null 2>&1 && echo \"visible $p\"; done; echo done";
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e:1", "sh", "-c", trap]);
    let out = pm.ok(&args, long);
    assert!(
        !out.contains("visible "),
        "rm -rf/mkdir trap in a container:\n{out}"
    );
    assert!(out.contains("done"), "{out}");

    // The saved layers reproduce the same tree.
    let saved = pm.out_dir().join("saved");
    let saved_s = saved.to_string_lossy().into_owned();
    pm.ok(
        &[
            "save",
            "--format",
            "oci-dir",
            "-o",
            &saved_s,
            "localhost/ovlfs-e2e:1",
        ],
        long,
    );
    let tree = root.join("saved_tree");
    let listings = apply_oci_layers(&saved, &tree);
    let got = |rel: &str| names(&tree.join(rel));
    assert_eq!(
        got("data"),
        vec!["m"],
        "/data from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        got("keep"),
        vec!["k2"],
        "/keep from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        got("nest/a"),
        vec!["fresh"],
        "/nest/a from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        fs::read_to_string(tree.join("keep/k2")).expect("keep/k2"),
        "k2\nappended\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("data/m")).expect("data/m"),
        "newer\n"
    );

    // No ovlfs daemon outlives the containers.
    pm.ok(&["rm", "-a", "-f"], long);
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while !mount_program_daemons_under(&root).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left = mount_program_daemons_under(&root);
    assert!(
        left.is_empty(),
        "ovlfs daemons still running after the containers ended: {left:?}"
    );
}
