//! Unit tests of layer validation: which layer setups are refused, and that nothing on disk
//! changes whatever the outcome.

use super::tests::*;
use super::*;

#[test]
fn missing_lowerdir() {
    let t = Tree::new();
    let (_, u, w, m) = t.standard();
    err_contains(
        &["-o", &format!("upperdir={u},workdir={w}"), &m],
        &["no lowerdir"],
    );
    err_contains(&[&m], &["no lowerdir"]);
    err_contains(&["-o", "lowerdir=", &m], &["lowerdir is empty"]);
    err_contains(&["-o", "lowerdir=/a::", &m], &["empty element", "\"/a::\""]);
}

#[test]
fn layer_paths_must_be_directories() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let f = t.file("f");
    let gone = t.path("gone");
    let sub_of_file = format!("{f}/x");
    let run = |l: &str, u: &str, w: &str, m: &str| {
        err(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), m])
    };
    let nf = "No such file or directory";
    let nd = "Not a directory";
    let m1 = run(&format!("{l}:{gone}"), &u, &w, &m);
    assert_eq!(m1, format!("ovlfs: lowerdir \"{gone}\": {nf}"));
    let m1 = run(&f, &u, &w, &m);
    assert_eq!(m1, format!("ovlfs: lowerdir \"{f}\": {nd}"));
    assert!(run(&sub_of_file, &u, &w, &m).contains(nd));
    assert_eq!(
        run(&l, &gone, &w, &m),
        format!("ovlfs: upperdir \"{gone}\": {nf}")
    );
    assert_eq!(
        run(&l, &f, &w, &m),
        format!("ovlfs: upperdir \"{f}\": {nd}")
    );
    assert_eq!(
        run(&l, &u, &gone, &m),
        format!("ovlfs: workdir \"{gone}\": {nf}")
    );
    assert_eq!(run(&l, &u, &f, &m), format!("ovlfs: workdir \"{f}\": {nd}"));
    assert_eq!(
        run(&l, &u, &w, &gone),
        format!("ovlfs: mountpoint \"{gone}\": {nf}")
    );
    assert_eq!(
        run(&l, &u, &w, &f),
        format!("ovlfs: mountpoint \"{f}\": {nd}")
    );
    // A dangling symlink as a lower.
    std::os::unix::fs::symlink(&gone, t.path("dangling")).unwrap();
    assert!(run(&t.path("dangling"), &u, &w, &m).contains(nf));
}

#[test]
fn upper_and_work_go_together() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    err_contains(
        &["-o", &format!("lowerdir={l},upperdir={u}"), &m],
        &["upperdir given without workdir"],
    );
    err_contains(
        &["-o", &format!("lowerdir={l},workdir={w}"), &m],
        &["workdir given without upperdir"],
    );
    err_contains(
        &["-o", &format!("lowerdir={l},upperdir=,workdir={w}"), &m],
        &["upperdir is empty"],
    );
}

#[track_caller]
fn layout_err(l: &str, u: &str, w: &str, m: &str, needles: &[&str]) {
    err_contains(
        &["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), m],
        needles,
    );
}

#[test]
fn upper_work_overlap() {
    let t = Tree::new();
    let (l, u, _, m) = t.standard();
    layout_err(&l, &u, &u, &m, &["same directory", &u]);
    layout_err(
        &l,
        &u,
        &t.dir("u/work"),
        &m,
        &["workdir", "inside upperdir"],
    );
    let w = t.dir("w");
    layout_err(
        &l,
        &t.dir("w/upper"),
        &w,
        &m,
        &["upperdir", "inside workdir"],
    );
    // The same directory through a symlink is still the same directory.
    std::os::unix::fs::symlink(&u, t.path("ulink")).unwrap();
    layout_err(&l, &u, &t.path("ulink"), &m, &["same directory"]);
}

#[test]
fn upper_lower_overlap() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    layout_err(&l, &l, &w, &m, &["upperdir", "also a lowerdir"]);
    layout_err(&l, &t.dir("l/up"), &w, &m, &["upperdir", "inside lowerdir"]);
    layout_err(
        &t.dir("u/low"),
        &u,
        &w,
        &m,
        &["lowerdir", "inside upperdir"],
    );
    layout_err(
        &format!("{l}:{}", t.dir("u/low2")),
        &u,
        &w,
        &m,
        &["inside upperdir"],
    );
    layout_err(&l, &u, &t.dir("l/wk"), &m, &["workdir", "inside lowerdir"]);
    layout_err(&t.dir("w/low"), &u, &w, &m, &["lowerdir", "inside workdir"]);
    layout_err(&w, &u, &w, &m, &["workdir", "also a lowerdir"]);
}

#[test]
fn lowers_may_repeat_and_nest() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let inner = t.dir("l/inner");
    let c = config(&[
        "-o",
        &format!("lowerdir={l}:{l}:{inner},upperdir={u},workdir={w}"),
        &m,
    ]);
    assert_eq!(c.lowerdirs.len(), 3);
}

#[test]
fn mountpoint_placement() {
    let t = Tree::new();
    let (l, u, w, _) = t.standard();
    layout_err(
        &l,
        &u,
        &w,
        &t.dir("u/mnt"),
        &["mountpoint", "inside upperdir"],
    );
    layout_err(
        &l,
        &u,
        &w,
        &t.dir("w/mnt"),
        &["mountpoint", "inside workdir"],
    );
    // On a layer itself, or inside a lower, is allowed (like mounting over /usr).
    config(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), &u]);
    config(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), &l]);
    config(&[
        "-o",
        &format!("lowerdir={l},upperdir={u},workdir={w}"),
        &t.dir("l/mnt"),
    ]);
}

#[test]
fn workdir_on_another_filesystem() {
    let shm = Path::new("/dev/shm");
    let t = Tree::new();
    let Ok(other) = tempfile::tempdir_in(shm) else {
        eprintln!("no /dev/shm: skipped");
        return;
    };
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    if dev(other.path()) == dev(t.0.path()) {
        eprintln!("/dev/shm is on the same filesystem as the temp dir: skipped");
        return;
    }
    let (l, u, _, m) = t.standard();
    let w = other.path().to_str().unwrap();
    layout_err(
        &l,
        &u,
        w,
        &m,
        &["workdir", "not on the same filesystem", w, &u],
    );
}

#[test]
fn too_many_lowers() {
    let t = Tree::new();
    let m = t.dir("m");
    let dirs: Vec<String> = (0..501).map(|i| t.dir(&format!("l{i}"))).collect();
    let c = config(&["-o", &format!("lowerdir={}", dirs[..500].join(":")), &m]);
    assert_eq!(c.lowerdirs.len(), 500);
    err_contains(
        &["-o", &format!("lowerdir={}", dirs.join(":")), &m],
        &["501", "500"],
    );
    let plus: Vec<String> = dirs.iter().map(|d| format!("lowerdir+={d}")).collect();
    err_contains(&["-o", &plus.join(","), &m], &["501"]);
}

#[test]
fn messages_stay_on_one_line() {
    let t = Tree::new();
    let (l, m) = (t.dir("l"), t.dir("m"));
    let weird = t.path("new\nline");
    let msg = err(&["-o", &format!("lowerdir={l}:{weird}"), &m]);
    assert!(msg.contains(r"new\nline"), "{msg}");
    err(&["-o", "whiteout=a\nb", &m]);
    err(&["-\n"]);
}

#[test]
fn nothing_is_created() {
    let t = Tree::new();
    let (l, u, w, m) = t.standard();
    let snapshot = || {
        let mut v: Vec<_> = walk(t.0.path());
        v.sort();
        v
    };
    let before = snapshot();
    config(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), &m]);
    err(&[
        "-o",
        &format!("lowerdir={l},upperdir={u},workdir={}", t.path("nowork")),
        &m,
    ]);
    err(&[
        "-o",
        &format!("lowerdir={l},upperdir={},workdir={w}", t.path("noup")),
        &m,
    ]);
    err(&[
        "-o",
        &format!("lowerdir={l},upperdir={u},workdir={w}"),
        &t.path("nomnt"),
    ]);
    assert_eq!(before, snapshot());
}

fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        out.push((e.path(), meta.mtime_nsec() as u64 ^ meta.size()));
        if meta.is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn error_type() {
    let e = OptionsError::new("x");
    assert_eq!(e.to_string(), "ovlfs: x");
    let _: &dyn std::error::Error = &e;
    let io = io::Error::from_raw_os_error(libc::ENOENT);
    assert_eq!(errno_text(&io), "No such file or directory");
}
