//! podman and buildah end to end, the way containers/storage drives a `mount_program`, with the
//! program under test (`ovlfs_bin()`: `OVLFS_TEST_BIN=/usr/bin/fuse-overlayfs` runs the same
//! scenarios against fuse-overlayfs): rootless `--userns=keep-id` (toolbox, distrobox),
//! `--uidmap` rootless and rootful, `overlay.force_mask` (which makes containers/storage pass
//! `xattr_permissions=2`), a RUN step writing into a sparse file with `dd`, the whiteouts of a
//! committed layer, and a rootless `buildah bud`.
//!
//! Rootless scenarios run as the unprivileged user `ovlfs-e2e` (created once, with subordinate
//! id ranges in /etc/subuid and /etc/subgid), with HOME, XDG_RUNTIME_DIR and the whole storage
//! under the scenario's scratch directory. Each scenario is bounded by `BUDGET` and cleans up
//! (containers, mounts, mount program daemons, the rootless pause process) even when it fails.
//!
//! Each test asserts what a correct filesystem does. fuse-overlayfs 1.10 passes keep-id, rootless
//! `--uidmap` and the sparse `dd`; where it fails, the test's comment says how.

use super::engine::*;
use super::images::*;
use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

const BASE: &str = "localhost/ovlfs-compat-base:1";

/// Prints the filesystem type of the container's root (`fuse.*` when the mount program serves it).
const SHOW_ROOTFS: &str = r#"show rootfs "$(awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' /proc/self/mountinfo)""#;

/// A podman whose overlay storage uses the mount program under test, with the base image
/// imported.
struct Scenario {
    // Fields drop in order: the cleanup runs while the scratch directory still exists.
    _cleanup: Cleanup,
    pm: Engine,
    root: PathBuf,
    user: Option<&'static TestUser>,
    /// Owner of /home/e2e in the base image: the test user when rootless.
    img_user: String,
    _t: tempfile::TempDir,
}

impl Scenario {
    fn start(test: &str, mode: Mode, storage_opts: &[&str]) -> Option<Scenario> {
        let user = setup(test, mode, &[])?;
        let (t, root) = scratch(&[]);
        let img_user = user.map_or((1000, 1000), |u| (u.uid, u.gid));
        let tarball = base_tarball(&root, img_user).expect("base image");
        let pm = Engine::podman(user, &root.join("state"), &driver_args(storage_opts));
        let cleanup = Cleanup::new(&pm, &root);
        pm.ok(&["import", &tarball, BASE], STEP);
        Some(Scenario {
            _cleanup: cleanup,
            pm,
            root,
            user,
            img_user: format!("{}:{}", img_user.0, img_user.1),
            _t: t,
        })
    }

    /// `podman run FLAGS IMAGE sh -c SCRIPT` (PRELUDE and SHOW_ROOTFS first); returns stdout.
    fn run_script(&self, image: &str, flags: &[&str], script: &str) -> String {
        let full = format!("{PRELUDE}\n{SHOW_ROOTFS}\n{script}");
        let mut args = vec!["run"];
        args.extend(RUN_FLAGS);
        args.extend(flags);
        args.extend([image, "sh", "-c", &full]);
        self.pm.ok(&args, STEP)
    }

    /// `podman commit` the container, `podman save` it as an OCI layout; returns the layout and
    /// the entries of its top layer (the container's changes).
    fn commit(&self, ctr: &str) -> (PathBuf, BTreeMap<String, TarEntry>) {
        let tag = format!("localhost/ovlfs-compat-{ctr}:1");
        self.pm.ok(&["commit", ctr, &tag], STEP);
        let oci = self.pm.out_dir().join(ctr);
        let oci_s = oci.to_string_lossy().into_owned();
        self.pm
            .ok(&["save", "--format", "oci-dir", "-o", &oci_s, &tag], STEP);
        let layers = oci_layers(&oci);
        let top = tar_index(layers.last().expect("a layer"));
        (oci, top)
    }
}

fn driver_args(storage_opts: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--storage-driver=overlay".to_string(),
        format!(
            "--storage-opt=overlay.mount_program={}",
            ovlfs_bin().display()
        ),
    ];
    v.extend(storage_opts.iter().map(|o| format!("--storage-opt={o}")));
    v
}

fn s(v: &str) -> String {
    v.to_string()
}

/// The container's root must be the mount program's FUSE mount (else nothing was tested).
fn assert_fuse_root(kv: &BTreeMap<String, String>, out: &str) {
    assert!(
        kv.get("rootfs").is_some_and(|t| t.starts_with("fuse")),
        "the container's root is not a FUSE mount (is the mount program used?):\n{out}"
    );
}

/// Owners (`UID:GID`) of entries of a committed layer.
fn assert_layer_owners(what: &str, layer: &BTreeMap<String, TarEntry>, want: &[(&str, String)]) {
    let diffs: Vec<String> = want
        .iter()
        .filter(|(n, o)| layer.get(*n).map(|e| &e.owner) != Some(o))
        .map(|(n, o)| {
            format!(
                "{n}: want owner {o}, got {:?}",
                layer.get(*n).map(|e| &e.owner)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: owners in the committed layer:\n  {}\nlayer: {layer:#?}",
        diffs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Rootless --userns=keep-id
// ---------------------------------------------------------------------------------------------

/// Rootless `podman run --userns=keep-id` with a volume: the user is the same uid inside,
/// sees its own files (image and volume) as its own, creates and writes files, appends to an
/// image file it owns; the committed layer records the user's ids for what it created.
#[test]
fn rootless_keep_id_shows_the_users_ids() {
    let test = "rootless_keep_id_shows_the_users_ids";
    let Some(sc) = Scenario::start(test, Mode::Rootless, &[]) else {
        return;
    };
    let u = sc.user.expect("a rootless scenario has the test user");
    let ug = format!("{}:{}", u.uid, u.gid);
    let vol = sc.root.join("vol");
    mkdirs(&vol);
    chown(&vol, u.uid, u.gid);
    file_full(&vol.join("f"), "vf\n", 0o644, u.uid, u.gid);
    let vol_arg = format!("{}:/vol", vol.display());
    let out = sc.run_script(
        BASE,
        &["--name=keepid", "--userns=keep-id", "-v", &vol_arg],
        r#"
show id "$(id -u):$(id -g)"
show busybox "$(stat -c %u:%g /bin/busybox)"
show owned "$(stat -c %u:%g /home/e2e/owned)"
show owned23 "$(stat -c %u:%g /etc/owned23)"
show vol_f "$(stat -c %u:%g /vol/f)"
run touch /tmp/y
show tmp_y "$(stat -c %u:%g /tmp/y)"
run sh -c 'echo data > /tmp/w'
show tmp_w "$(cat /tmp/w)"
run sh -c 'echo more >> /home/e2e/owned'
show owned_text "$(tr '\n' '|' < /home/e2e/owned)"
run sh -c 'echo v > /vol/new'
"#,
    );
    let kv = assert_report(
        "rootless podman run --userns=keep-id",
        &out,
        &[
            ("id", ug.clone()),
            ("busybox", s("0:0")),
            ("owned", ug.clone()),
            ("owned23", s("2:3")),
            ("vol_f", ug.clone()),
            ("tmp_y", ug.clone()),
            ("tmp_w", s("data")),
            ("owned_text", s("owned|more|")),
        ],
    );
    assert_fuse_root(&kv, &out);
    let new = vol.join("new");
    let md = fs::metadata(&new).expect("the volume file written in the container");
    assert_eq!(
        (md.uid(), md.gid()),
        (u.uid, u.gid),
        "owner of {} on the host",
        new.display()
    );
    assert_eq!(fs::read_to_string(&new).expect("read"), "v\n");

    let (_, top) = sc.commit("keepid");
    assert_layer_owners(
        "keep-id",
        &top,
        &[
            ("tmp/y", ug.clone()),
            ("tmp/w", ug.clone()),
            ("home/e2e/owned", ug.clone()),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// --uidmap
// ---------------------------------------------------------------------------------------------

/// `podman run --uidmap MAP --gidmap MAP`: the image's owners unchanged inside, chown and
/// creating files work, and the committed layer has the ids the container set.
fn uidmap_scenario(test: &str, mode: Mode, map: &str) {
    let Some(sc) = Scenario::start(test, mode, &[]) else {
        return;
    };
    let uidmap = format!("--uidmap={map}");
    let gidmap = format!("--gidmap={map}");
    let out = sc.run_script(
        BASE,
        &["--name=idmapped", &uidmap, &gidmap],
        r#"
show id "$(id -u):$(id -g)"
show sh "$(stat -c %u:%g /bin/sh)"
show busybox "$(stat -c %u:%g /bin/busybox)"
show owned "$(stat -c %u:%g /home/e2e/owned)"
show owned23 "$(stat -c %u:%g /etc/owned23)"
run chown 123:456 /etc/owned23
show owned23_after "$(stat -c %u:%g /etc/owned23)"
run touch /new
show new "$(stat -c %u:%g /new)"
run chown 7:8 /new
show new_after "$(stat -c %u:%g /new)"
run mkdir /newdir
show newdir "$(stat -c %u:%g /newdir)"
run sh -c 'echo w > /etc/created'
show created "$(cat /etc/created) $(stat -c %u:%g /etc/created)"
"#,
    );
    let what = format!("{mode:?} podman run {uidmap} {gidmap}");
    let kv = assert_report(
        &what,
        &out,
        &[
            ("id", s("0:0")),
            ("sh", s("0:0")),
            ("busybox", s("0:0")),
            ("owned", sc.img_user.clone()),
            ("owned23", s("2:3")),
            ("owned23_after", s("123:456")),
            ("new", s("0:0")),
            ("new_after", s("7:8")),
            ("newdir", s("0:0")),
            ("created", s("w 0:0")),
        ],
    );
    assert_fuse_root(&kv, &out);
    let (_, top) = sc.commit("idmapped");
    assert_layer_owners(
        &what,
        &top,
        &[
            ("etc/owned23", s("123:456")),
            ("new", s("7:8")),
            ("newdir", s("0:0")),
            ("etc/created", s("0:0")),
        ],
    );
}

/// Rootless `--uidmap 0:1:65536`: container ids 0.. on ids 1.. of the user's namespace (its
/// subordinate ids), so the user itself is not mapped; containers/storage hands the mount
/// program `uidmapping=`/`gidmapping=`.
#[test]
fn rootless_uidmap_keeps_image_owners() {
    uidmap_scenario(
        "rootless_uidmap_keeps_image_owners",
        Mode::Rootless,
        "0:1:65536",
    );
}

/// Rootful `--uidmap 0:100000:65536`. Where the kernel has idmapped mounts, containers/storage
/// passes no mapping option: it gives the mount program idmapped mounts of the lower layers
/// (detached as soon as the mount program returns) and chowns the merged root to 100000:100000.
/// The kernel's overlayfs passes this; fuse-overlayfs 1.10 shows the lower files as 65534 and
/// the container does not start (runc: "open .../merged/etc/hosts: permission denied").
#[test]
fn rootful_uidmap_keeps_image_owners() {
    uidmap_scenario(
        "rootful_uidmap_keeps_image_owners",
        Mode::Rootful,
        "0:100000:65536",
    );
}

// ---------------------------------------------------------------------------------------------
// overlay.force_mask
// ---------------------------------------------------------------------------------------------

/// `--storage-opt overlay.force_mask=0700`: containers/storage stores image files with mode
/// 0700 and the real owner and mode in `user.containers.override_stat`, and passes
/// `xattr_permissions=2` to the mount program, which must show the image's modes and owners.
/// Modes and owners set in the container survive a restart (a new mount). fuse-overlayfs 1.10
/// fails the chown-then-chmod step: the chmod puts back the owner from before the chown.
fn force_mask_scenario(test: &str, mode: Mode) {
    let Some(sc) = Scenario::start(test, mode, &["overlay.force_mask=0700"]) else {
        return;
    };
    // Precondition: on disk the image layer is masked, else this tests nothing.
    let on_disk: Vec<PathBuf> = fs::read_dir(sc.pm.storage_root().join("overlay"))
        .expect("overlay storage")
        .flatten()
        .map(|e| e.path().join("diff/m644"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(on_disk.len(), 1, "the image layer's m644: {on_disk:?}");
    let md = fs::symlink_metadata(&on_disk[0]).expect("stat m644 on disk");
    let xattr = get_xattr(&on_disk[0], "user.containers.override_stat")
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    assert!(
        md.mode() & 0o7777 == 0o700 && xattr.as_deref().is_ok_and(|v| v.ends_with(":0644")),
        "force_mask did not mask {}: mode {:o}, user.containers.override_stat {xattr:?}",
        on_disk[0].display(),
        md.mode() & 0o7777
    );

    let script = format!(
        "{PRELUDE}\n{SHOW_ROOTFS}\n{}",
        r#"
modes() { stat -c '%a %u:%g' "$1"; }
show m644 "$(modes /m644)"
show d755 "$(modes /d755)"
show busybox "$(modes /bin/busybox)"
show owned "$(modes /home/e2e/owned)"
show ls_m644 "$(ls -ln /m644 | cut -d' ' -f1)"
show ls_d755 "$(ls -lnd /d755 | cut -d' ' -f1)"
if [ -e /tmp/n ]; then
  show pass 2
else
  show pass 1
  show owned23 "$(modes /etc/owned23)"
  run touch /tmp/n
  run chmod 0640 /tmp/n
  run mkdir -m 0750 /newd
  run chown 5:6 /etc/owned23
  show owned23_chown "$(modes /etc/owned23)"
  run chmod 0600 /etc/owned23
fi
show tmp_n "$(modes /tmp/n)"
show newd "$(modes /newd)"
show owned23_after "$(modes /etc/owned23)"
"#
    );
    let mut args = vec!["create", "--name=masked"];
    args.extend(RUN_FLAGS);
    args.extend([BASE, "sh", "-c", &script]);
    sc.pm.ok(&args, STEP);
    // `init` mounts the container's storage without starting it: the mount program's argv.
    sc.pm.ok(&["init", "masked"], STEP);
    let argvs: Vec<String> = mount_program_daemons_under(&sc.root)
        .into_iter()
        .map(cmdline)
        .collect();
    assert!(
        !argvs.is_empty() && argvs.iter().all(|a| a.contains("xattr_permissions=2")),
        "the mount program did not get xattr_permissions=2: {argvs:#?}"
    );

    let what = format!("{mode:?} podman with overlay.force_mask=0700");
    let image = [
        ("m644", s("644 0:0")),
        ("d755", s("755 0:0")),
        ("busybox", s("755 0:0")),
        ("owned", format!("644 {}", sc.img_user)),
        ("ls_m644", s("-rw-r--r--")),
        ("ls_d755", s("drwxr-xr-x")),
        ("tmp_n", s("640 0:0")),
        ("newd", s("750 0:0")),
        ("owned23_after", s("600 5:6")),
    ];
    for pass in ["1", "2"] {
        let out = sc.pm.ok(&["start", "--attach", "masked"], STEP);
        let mut want = image.to_vec();
        want.push(("pass", s(pass)));
        if pass == "1" {
            want.push(("owned23", s("640 2:3")));
            want.push(("owned23_chown", s("640 5:6")));
        }
        let kv = assert_report(&format!("{what}, run {pass}"), &out, &want);
        assert_fuse_root(&kv, &out);
    }
}

#[test]
fn rootless_force_mask_shows_image_modes() {
    force_mask_scenario("rootless_force_mask_shows_image_modes", Mode::Rootless);
}

#[test]
fn rootful_force_mask_shows_image_modes() {
    force_mask_scenario("rootful_force_mask_shows_image_modes", Mode::Rootful);
}

// ---------------------------------------------------------------------------------------------
// A sparse dd in a rootless build
// ---------------------------------------------------------------------------------------------

/// RUN steps that open files write-only and write part of a page: extending a new file with
/// `seek` and writing one byte into it, creating a file and writing one byte past a hole in the
/// same open, and overwriting one byte of an image file (copy-up). Unprivileged, the kernel's
/// FUSE writeback cache turns such writes into reads of the page through the write-only open.
const DD_STEPS: &str = "RUN dd if=/dev/zero of=/f bs=1 count=0 seek=8192 \
                        && printf x | dd of=/f bs=1 seek=100 conv=notrunc\n\
                        RUN printf x | dd of=/g bs=1 seek=100\n\
                        RUN printf y | dd of=/m644 bs=1 seek=1 conv=notrunc\n";

/// Checks /f (8192 bytes), /g (101 bytes), both zero but an `x` at 100, and /m644 (`my`) in a
/// built tree.
fn assert_dd_results(what: &str, tree: &Path) {
    for (name, len) in [("f", 8192), ("g", 101)] {
        let f = fs::read(tree.join(name)).unwrap_or_else(|e| panic!("{what}: read /{name}: {e}"));
        let stray: Vec<usize> = f
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b != if i == 100 { b'x' } else { 0 })
            .map(|(i, _)| i)
            .take(10)
            .collect();
        assert!(
            f.len() == len && stray.is_empty(),
            "{what}: /{name} has {} bytes (want {len}), wrong bytes at {stray:?}",
            f.len()
        );
    }
    assert_eq!(
        fs::read_to_string(tree.join("m644")).expect("read /m644"),
        "my",
        "{what}: /m644"
    );
}

/// Rootless `podman build` whose RUN steps write with `dd` into a sparse file and into an image
/// file; then the image is run, and saved and unpacked.
#[test]
fn rootless_build_sparse_dd() {
    let test = "rootless_build_sparse_dd";
    let Some(sc) = Scenario::start(test, Mode::Rootless, &[]) else {
        return;
    };
    let ctx = sc.root.join("ctx");
    mkdirs(&ctx);
    chmod(&ctx, 0o755);
    let cf = ctx.join("Containerfile");
    write_file(&cf, format!("FROM {BASE}\n{DD_STEPS}"));
    chmod(&cf, 0o644);
    let tag = "localhost/ovlfs-compat-dd:1";
    let (cf_s, ctx_s) = (cf.display().to_string(), ctx.display().to_string());
    let mut args = vec!["build"];
    args.extend(RUN_FLAGS);
    args.extend(["-t", tag, "-f", &cf_s, &ctx_s]);
    sc.pm.ok(&args, STEP);

    let out = sc.run_script(
        tag,
        &["--rm"],
        r#"
show f_size "$(stat -c %s /f)"
show f_100 "$(dd if=/f bs=1 skip=100 count=1 2>/dev/null)"
show f_nonzero "$(tr -d '\000' < /f)"
show g_size "$(stat -c %s /g)"
show g_nonzero "$(tr -d '\000' < /g)"
show m644 "$(cat /m644)"
"#,
    );
    let kv = assert_report(
        "a container of the image built with dd",
        &out,
        &[
            ("f_size", s("8192")),
            ("f_100", s("x")),
            ("f_nonzero", s("x")),
            ("g_size", s("101")),
            ("g_nonzero", s("x")),
            ("m644", s("my")),
        ],
    );
    assert_fuse_root(&kv, &out);

    let oci = sc.pm.out_dir().join("dd");
    let oci_s = oci.display().to_string();
    sc.pm
        .ok(&["save", "--format", "oci-dir", "-o", &oci_s, tag], STEP);
    let tree = sc.root.join("tree");
    apply_oci_layers(&oci, &tree);
    assert_dd_results("the saved image", &tree);
}

// ---------------------------------------------------------------------------------------------
// Whiteouts of a committed layer
// ---------------------------------------------------------------------------------------------

/// Changes made on top of the base image: delete a lower directory (/data/sub) and a lower
/// file (/keep/k), rename a lower directory (/ren -> /renamed), replace one (/rep).
const CHANGES: &str = "rm -rf /data/sub && mv /ren /renamed && rm -rf /rep && mkdir /rep \
                       && echo n > /rep/n && rm /keep/k && echo more >> /keep/k2";

/// The layer holding `CHANGES`: a whiteout for each deleted name, the renamed directory's
/// contents under the new name, and the replaced directory's old children hidden.
/// containers/storage makes a mount program's layers by comparing the mounted trees, which
/// hides a replaced directory's children with one `.wh.NAME` each; the kernel driver's native
/// diff marks the directory opaque (`.wh..wh..opq`) instead. Either is right.
fn assert_changes_layer(what: &str, layer: &BTreeMap<String, TarEntry>) {
    let mut problems = Vec::new();
    for n in [
        "data/.wh.sub",
        "keep/.wh.k",
        ".wh.ren",
        "renamed/a",
        "renamed/sub/b",
        "rep/n",
        "keep/k2",
    ] {
        if !layer.contains_key(n) {
            problems.push(format!("missing {n}"));
        }
    }
    if !layer.contains_key("rep/.wh..wh..opq") && !layer.contains_key("rep/.wh.old") {
        problems.push("neither rep/.wh..wh..opq nor rep/.wh.old: /rep/old comes back".into());
    }
    for n in layer.keys() {
        if n.starts_with("ren/") || n.starts_with("data/sub/") || n == "rep/old" {
            problems.push(format!("unexpected {n}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: the new layer is wrong:\n  {}\nits entries: {:#?}",
        problems.join("\n  "),
        layer.keys().collect::<Vec<_>>()
    );
}

/// The base image with `CHANGES` applied, as unpacked from saved layers.
fn assert_changed_tree(what: &str, tree: &Path) {
    let got = |rel: &str| sorted_names(&tree.join(rel));
    let want: [(&str, &[&str]); 5] = [
        ("data", &["g"]),
        ("keep", &["k2"]),
        ("renamed", &["a", "sub"]),
        ("renamed/sub", &["b"]),
        ("rep", &["n"]),
    ];
    let diffs: Vec<String> = want
        .iter()
        .filter(|(d, names)| got(d) != *names)
        .map(|(d, names)| format!("/{d}: want {names:?}, got {:?}", got(d)))
        .collect();
    assert!(
        diffs.is_empty() && !tree.join("ren").exists(),
        "{what}: unpacked image:\n  {}\n  /ren exists: {}",
        diffs.join("\n  "),
        tree.join("ren").exists()
    );
    for (f, want) in [
        ("renamed/a", "a\n"),
        ("renamed/sub/b", "b\n"),
        ("rep/n", "n\n"),
        ("keep/k2", "k2\nmore\n"),
    ] {
        assert_eq!(
            fs::read_to_string(tree.join(f)).unwrap_or_else(|e| format!("<{e}>")),
            want,
            "{what}: /{f}"
        );
    }
}

/// `podman commit` of a container that made `CHANGES`, then `podman save`: the new layer
/// records them (see `assert_changes_layer`) and the unpacked image has the container's tree.
/// fuse-overlayfs 1.10 fails on /rep: once /rep was listed, a lookup of `old` finds the lower
/// file again, so containers/storage's comparison of the mounted trees sees it unchanged and
/// the layer does not hide it.
fn commit_scenario(test: &str, mode: Mode) {
    let Some(sc) = Scenario::start(test, mode, &[]) else {
        return;
    };
    let out = sc.run_script(
        BASE,
        &["--name=changed"],
        &format!(
            r#"
run sh -c '{CHANGES}'
show data "$(lst /data)"
show rep "$(lst /rep)"
show renamed "$(lst /renamed)"
show ren "$(st /ren)"
"#
        ),
    );
    let what = format!("{mode:?} podman commit");
    let kv = assert_report(
        &what,
        &out,
        &[
            ("data", s("g")),
            ("rep", s("n")),
            ("renamed", s("a sub")),
            ("ren", s("ENOENT")),
        ],
    );
    assert_fuse_root(&kv, &out);
    let (oci, top) = sc.commit("changed");
    assert_changes_layer(&what, &top);
    let tree = sc.root.join("tree");
    apply_oci_layers(&oci, &tree);
    assert_changed_tree(&what, &tree);
}

#[test]
fn rootful_commit_records_whiteouts_and_renames() {
    commit_scenario(
        "rootful_commit_records_whiteouts_and_renames",
        Mode::Rootful,
    );
}

#[test]
fn rootless_commit_records_whiteouts_and_renames() {
    commit_scenario(
        "rootless_commit_records_whiteouts_and_renames",
        Mode::Rootless,
    );
}

// ---------------------------------------------------------------------------------------------
// buildah
// ---------------------------------------------------------------------------------------------

/// Rootless `buildah bud --layers`: the base image from a tarball (`ADD`), the `dd` steps, and
/// a step making `CHANGES`; pushed as an OCI layout, its last layer records the changes and
/// the unpacked image has the built tree. fuse-overlayfs 1.10 fails on /rep as in
/// `commit_scenario`.
#[test]
fn rootless_buildah_bud() {
    let test = "rootless_buildah_bud";
    let Some(user) = setup(test, Mode::Rootless, &["buildah"]) else {
        return;
    };
    let u = user.expect("a rootless scenario has the test user");
    let (_t, root) = scratch(&[]);
    let tarball = base_tarball(&root, (u.uid, u.gid)).expect("base image");
    let ctx = root.join("ctx");
    mkdirs(&ctx);
    chmod(&ctx, 0o755);
    fs::copy(&tarball, ctx.join("base.tar")).expect("copy base.tar");
    chmod(&ctx.join("base.tar"), 0o644);
    let cf = ctx.join("Containerfile");
    write_file(
        &cf,
        format!("FROM scratch\nADD base.tar /\n{DD_STEPS}RUN {CHANGES}\n"),
    );
    chmod(&cf, 0o644);
    let bh = Engine::buildah(user, &root.join("state"), &driver_args(&[]));
    let _cleanup = Cleanup::new(&bh, &root);
    let tag = "localhost/ovlfs-compat-bud:1";
    let (cf_s, ctx_s) = (cf.display().to_string(), ctx.display().to_string());
    let mut args = vec![
        "bud",
        "--layers",
        "--network=none",
        "--pull=never",
        "--ulimit=nofile=1024:1024",
    ];
    if have("runc") {
        // crun refuses hybrid cgroup hierarchies; runc copes with them.
        args.push("--runtime=runc");
    }
    args.extend(["-t", tag, "-f", &cf_s, &ctx_s]);
    bh.ok(&args, STEP);

    let oci = bh.out_dir().join("bud");
    let dest = format!("oci:{}", oci.display());
    bh.ok(&["push", tag, &dest], STEP);
    let layers = oci_layers(&oci);
    let top = tar_index(layers.last().expect("a layer"));
    assert_changes_layer("buildah bud", &top);
    let tree = root.join("tree");
    apply_oci_layers(&oci, &tree);
    assert_changed_tree("buildah bud", &tree);
    assert_dd_results("buildah bud", &tree);
}
