//! The bad command lines: each case sets its layers up and says what its one stderr line
//! must mention.

use super::*;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        // ---- command line shape ----
        Case {
            name: "no arguments at all",
            setup: |_| run(&[], &["mountpoint"]),
        },
        Case {
            name: "options but no mountpoint",
            setup: |c| {
                run(
                    &["-o", &format!("lowerdir={}", c.dir("l"))],
                    &["mountpoint"],
                )
            },
        },
        Case {
            name: "unknown short flag",
            setup: |c| {
                let (l, _, _, m) = c.std();
                run(&["-x", "-o", &format!("lowerdir={l}"), &m], &["-x"])
            },
        },
        Case {
            name: "unknown long flag",
            setup: |c| {
                let (l, _, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l}"), "--frobnicate", &m],
                    &["--frobnicate"],
                )
            },
        },
        Case {
            name: "-o without its argument",
            setup: |c| run(&[&c.dir("m"), "-o"], &["-o"]),
        },
        Case {
            name: "three positionals",
            setup: |c| {
                let (l, u, w, m) = c.std();
                run(
                    &["src", &m, "extra-arg", "-o", &luw(&l, &u, &w)],
                    &["extra-arg"],
                )
            },
        },
        // ---- lowerdir ----
        Case {
            name: "no lowerdir option",
            setup: |c| {
                let (_, u, w, m) = c.std();
                run(
                    &["-o", &format!("upperdir={u},workdir={w}"), &m],
                    &["lowerdir"],
                )
            },
        },
        Case {
            name: "empty lowerdir",
            setup: |c| run(&["-o", "lowerdir=", &c.dir("m")], &["lowerdir"]),
        },
        Case {
            name: "lowerdir with an empty element",
            setup: |c| {
                let (l, m) = (c.dir("l"), c.dir("m"));
                let l2 = c.dir("l2");
                run(
                    &["-o", &format!("lowerdir={l}:{l2}::"), &m],
                    &["lowerdir", "empty element"],
                )
            },
        },
        Case {
            name: "lowerdir with a leading colon",
            setup: |c| {
                let (l, m) = (c.dir("l"), c.dir("m"));
                run(
                    &["-o", &format!("lowerdir=:{l}"), &m],
                    &["lowerdir", "empty"],
                )
            },
        },
        Case {
            name: "lowerdir with a trailing colon",
            setup: |c| {
                let (l, m) = (c.dir("l"), c.dir("m"));
                run(
                    &["-o", &format!("lowerdir={l}:"), &m],
                    &["lowerdir", "empty"],
                )
            },
        },
        Case {
            name: "missing lower",
            setup: |c| {
                let (_, u, w, m) = c.std();
                let gone = c.path("no-such-lower");
                run(&["-o", &luw(&gone, &u, &w), &m], &[&gone, "No such file"])
            },
        },
        Case {
            name: "missing second lower",
            setup: |c| {
                let (l, u, w, m) = c.std();
                let gone = c.path("no-such-lower");
                let lowers = format!("{l}:{gone}");
                run(&["-o", &luw(&lowers, &u, &w), &m], &[&gone])
            },
        },
        Case {
            name: "lower is a file",
            setup: |c| {
                let (_, u, w, m) = c.std();
                let f = c.file("lower-file");
                run(&["-o", &luw(&f, &u, &w), &m], &[&f, "Not a directory"])
            },
        },
        Case {
            name: "lower is a dangling symlink",
            setup: |c| {
                let (_, u, w, m) = c.std();
                let link = c.path("dangling");
                std::os::unix::fs::symlink(c.path("nowhere"), &link).unwrap();
                run(&["-o", &luw(&link, &u, &w), &m], &[&link])
            },
        },
        Case {
            name: "501 lowers",
            setup: |c| {
                let m = c.dir("m");
                let lowers: Vec<String> = (0..501).map(|i| c.dir(&format!("l/{i}"))).collect();
                run(
                    &["-o", &format!("lowerdir={}", lowers.join(":")), &m],
                    &["501"],
                )
            },
        },
        Case {
            name: "a regular lower layer below a data-only one",
            setup: |c| {
                let extra = format!("datadir+={},lowerdir+={}", c.dir("data"), c.dir("l2"));
                with_opt(c, &extra, &["lowerdir+", "data-only"])
            },
        },
        Case {
            name: "a regular lower layer after a \"::\"",
            setup: |c| {
                let (l, d, l2, m) = (c.dir("l"), c.dir("d"), c.dir("l2"), c.dir("m"));
                run(
                    &["-o", &format!("lowerdir={l}::{d}:{l2}"), &m],
                    &["lowerdir", "data-only"],
                )
            },
        },
        // ---- upperdir / workdir ----
        Case {
            name: "upperdir without workdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l},upperdir={u}"), &m],
                    &["workdir"],
                )
            },
        },
        Case {
            name: "workdir without upperdir",
            setup: |c| {
                let (l, _, w, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l},workdir={w}"), &m],
                    &["upperdir"],
                )
            },
        },
        Case {
            name: "missing upper",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let gone = c.path("no-such-upper");
                run(&["-o", &luw(&l, &gone, &w), &m], &["upperdir", &gone])
            },
        },
        Case {
            name: "relative missing upper",
            setup: |c| {
                let (l, _, w, m) = c.std();
                run(
                    &["-o", &luw(&l, "rel-upper", &w), &m],
                    &["upperdir", "rel-upper"],
                )
            },
        },
        Case {
            name: "upper is a file",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let f = c.file("upper-file");
                run(&["-o", &luw(&l, &f, &w), &m], &["upperdir", &f])
            },
        },
        Case {
            name: "missing workdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let gone = c.path("no-such-work");
                run(&["-o", &luw(&l, &u, &gone), &m], &["workdir", &gone])
            },
        },
        Case {
            name: "workdir is a file",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let f = c.file("work-file");
                run(&["-o", &luw(&l, &u, &f), &m], &["workdir", &f])
            },
        },
        Case {
            name: "upperdir equals workdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                run(&["-o", &luw(&l, &u, &u), &m], &["upperdir", "workdir", &u])
            },
        },
        Case {
            name: "workdir inside upperdir",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let w = c.dir("u/work");
                run(&["-o", &luw(&l, &u, &w), &m], &["workdir", "upperdir", &w])
            },
        },
        Case {
            name: "upperdir inside workdir",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let u = c.dir("w/upper");
                run(&["-o", &luw(&l, &u, &w), &m], &["upperdir", "workdir", &u])
            },
        },
        Case {
            name: "workdir on another filesystem",
            setup: |c| {
                let Some(other) = &c.other else {
                    return Setup::Skip("/dev/shm is missing or on the same filesystem");
                };
                let (l, u, _, m) = c.std();
                let w = other.path().join("work");
                fs::create_dir(&w).unwrap();
                let w = w.to_str().unwrap();
                run(&["-o", &luw(&l, &u, w), &m], &["workdir", "filesystem", w])
            },
        },
        Case {
            name: "upperdir is a lower",
            setup: |c| {
                let (l, _, w, m) = c.std();
                run(&["-o", &luw(&l, &l, &w), &m], &["upperdir", "lowerdir", &l])
            },
        },
        Case {
            name: "upperdir inside a lower",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let u = c.dir("l/upper");
                run(&["-o", &luw(&l, &u, &w), &m], &["upperdir", "lowerdir", &u])
            },
        },
        Case {
            name: "lower inside the upperdir",
            setup: |c| {
                let (l, u, w, m) = c.std();
                let inner = c.dir("u/lower");
                let lowers = format!("{l}:{inner}");
                run(
                    &["-o", &luw(&lowers, &u, &w), &m],
                    &["lowerdir", "upperdir", &inner],
                )
            },
        },
        Case {
            name: "upperdir reached through a symlinked lower",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let link = c.path("lowerlink");
                std::os::unix::fs::symlink(&l, &link).unwrap();
                let u = c.dir("l/up");
                run(&["-o", &luw(&link, &u, &w), &m], &["upperdir", "lowerdir"])
            },
        },
        Case {
            name: "workdir inside a lower",
            setup: |c| {
                let (l, u, _, m) = c.std();
                let w = c.dir("l/work");
                run(&["-o", &luw(&l, &u, &w), &m], &["workdir", "lowerdir", &w])
            },
        },
        // ---- mountpoint ----
        Case {
            name: "missing mountpoint",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let gone = c.path("no-such-mnt");
                run(&["-o", &luw(&l, &u, &w), &gone], &["mountpoint", &gone])
            },
        },
        Case {
            name: "mountpoint is a file",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let f = c.file("mnt-file");
                run(&["-o", &luw(&l, &u, &w), &f], &["mountpoint", &f])
            },
        },
        Case {
            name: "mountpoint inside the upperdir",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let m = c.dir("u/mnt");
                run(&["-o", &luw(&l, &u, &w), &m], &["mountpoint", "upperdir"])
            },
        },
        Case {
            name: "mount helper form with a missing mountpoint",
            setup: |c| {
                let (l, u, w, _) = c.std();
                let gone = c.path("no-such-mnt");
                run(
                    &["overlay", &gone, "-o", &luw(&l, &u, &w)],
                    &["mountpoint", &gone],
                )
            },
        },
        // ---- id mappings ----
        Case {
            name: "uidmapping not in triples",
            setup: |c| with_opt(c, "uidmapping=0:1000", &["uidmapping", "0:1000"]),
        },
        Case {
            name: "gidmapping with a non-number",
            setup: |c| with_opt(c, "gidmapping=0:abc:1", &["gidmapping", "abc"]),
        },
        Case {
            name: "uidmapping with a negative id",
            setup: |c| with_opt(c, "uidmapping=:0:-1:1", &["uidmapping", "-1"]),
        },
        Case {
            name: "uidmapping with size 0",
            setup: |c| with_opt(c, "uidmapping=0:1000:0", &["uidmapping", "size 0"]),
        },
        Case {
            name: "gidmapping overflowing u32",
            setup: |c| {
                with_opt(
                    c,
                    "gidmapping=0:4294967000:1000",
                    &["gidmapping", "4294967000"],
                )
            },
        },
        Case {
            name: "uidmapping with an empty element",
            setup: |c| with_opt(c, "uidmapping=0:1000:1::1:2:3", &["uidmapping"]),
        },
        // ---- other option values ----
        Case {
            name: "unknown whiteout mode",
            setup: |c| with_opt(c, "whiteout=aufs", &["whiteout", "aufs"]),
        },
        Case {
            name: "whiteout without a value",
            setup: |c| with_opt(c, "whiteout", &["whiteout"]),
        },
        Case {
            name: "unknown passthrough mode",
            setup: |c| with_opt(c, "passthrough=sometimes", &["passthrough", "sometimes"]),
        },
        Case {
            name: "threads=0",
            setup: |c| with_opt(c, "threads=0", &["threads", "0"]),
        },
        Case {
            name: "threads not a number",
            setup: |c| with_opt(c, "threads=many", &["threads", "many"]),
        },
        Case {
            name: "threaded=2",
            setup: |c| with_opt(c, "threaded=2", &["threaded", "2"]),
        },
        Case {
            name: "fsync=yes",
            setup: |c| with_opt(c, "fsync=yes", &["fsync", "yes"]),
        },
        Case {
            name: "writeback=on",
            setup: |c| with_opt(c, "writeback=on", &["writeback", "on"]),
        },
        Case {
            name: "negative timeout",
            setup: |c| with_opt(c, "timeout=-1", &["timeout", "-1"]),
        },
        Case {
            name: "squash_to_uid not a u32",
            setup: |c| {
                with_opt(
                    c,
                    "squash_to_uid=4294967296",
                    &["squash_to_uid", "4294967296"],
                )
            },
        },
        Case {
            name: "unknown xino value",
            setup: |c| with_opt(c, "xino=sometimes", &["xino", "sometimes"]),
        },
        Case {
            name: "value on a flag option",
            setup: |c| with_opt(c, "squash_to_root=1", &["squash_to_root"]),
        },
        Case {
            name: "bad option in a second -o",
            setup: |c| {
                let (l, u, w, m) = c.std();
                run(
                    &["-o", &luw(&l, &u, &w), "-othreads=-3", &m],
                    &["threads", "-3"],
                )
            },
        },
        Case {
            name: "subtype with a slash",
            setup: |c| with_opt(c, "subtype=a/b", &["subtype", "a/b"]),
        },
        // ---- typos that would otherwise give another mount than asked for ----
        Case {
            name: "misspelt upperdir (would mount read-only)",
            setup: |c| {
                let (l, u, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdir={l},uperdir={u}"), &m],
                    &["\"uperdir=", "did you mean \"upperdir\""],
                )
            },
        },
        Case {
            name: "lowerdirs",
            setup: |c| {
                let (l, _, _, m) = c.std();
                run(
                    &["-o", &format!("lowerdirs={l}"), &m],
                    &["\"lowerdirs=", "did you mean \"lowerdir\""],
                )
            },
        },
        Case {
            name: "spaces after the commas",
            setup: |c| {
                let (l, u, w, m) = c.std();
                run(
                    &[
                        "-o",
                        &format!("lowerdir={l}, upperdir={u}, workdir={w}"),
                        &m,
                    ],
                    &["\" upperdir=", "spaces"],
                )
            },
        },
        Case {
            name: "unescaped comma in upperdir",
            setup: |c| {
                let (l, _, w, m) = c.std();
                let cut = c.dir("x/u");
                let whole = c.dir("x/u,v");
                run(
                    &["-o", &luw(&l, &whole, &w), &m],
                    &["\"v\"", &cut, "\"\\,\""],
                )
            },
        },
        Case {
            name: "near-miss of a flag",
            setup: |c| with_opt(c, "static_nlnk", &["did you mean \"static_nlink\""]),
        },
        // ---- as an unprivileged user ----
        Case {
            name: "unreadable lower (unprivileged)",
            setup: |c| {
                let (_, u, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let secret = root_dir(c, "secret", 0o700);
                run_as_nobody(
                    &["-o", &luw(&secret, &u, &w), &m],
                    &["lowerdir", &secret, "Permission denied"],
                )
            },
        },
        Case {
            name: "lower without search permission (unprivileged)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let listed = root_dir(c, "listed", 0o744);
                let lowers = format!("{l}:{listed}");
                run_as_nobody(
                    &["-o", &luw(&lowers, &u, &w), &m],
                    &["lowerdir", &listed, "Permission denied"],
                )
            },
        },
        Case {
            name: "upper not writable (unprivileged)",
            setup: |c| {
                let (l, _, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let u = root_dir(c, "root-upper", 0o755);
                run_as_nobody(&["-o", &luw(&l, &u, &w), &m], &["upperdir", &u, "write"])
            },
        },
        Case {
            name: "workdir not writable (unprivileged)",
            setup: |c| {
                let (l, u, _, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                let w = root_dir(c, "root-work", 0o755);
                run_as_nobody(&["-o", &luw(&l, &u, &w), &m], &["workdir", &w, "write"])
            },
        },
        Case {
            name: "auto_unmount of an owner-only mount (unprivileged)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                run_as_nobody(
                    &["-o", &format!("{},auto_unmount", luw(&l, &u, &w)), &m],
                    &["auto_unmount", "allow_other"],
                )
            },
        },
        Case {
            name: "allow_other refused by fusermount3 (unprivileged, late failure)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if user_allow_other() {
                    return Setup::Skip("/etc/fuse.conf has user_allow_other");
                }
                // A leftover of an earlier mount: only a mount that goes ahead may clear it.
                fs::create_dir(Path::new(&w).join("work")).unwrap();
                fs::write(Path::new(&w).join("work/#ovlfs.1.1"), b"partial").unwrap();
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                run_as_nobody(
                    &["-o", &format!("{},allow_other", luw(&l, &u, &w)), &m],
                    &["cannot mount", "allow_other"],
                )
            },
        },
        Case {
            name: "allow_other refused by fusermount3, in the foreground (unprivileged)",
            setup: |c| {
                let (l, u, w, m) = c.std();
                if user_allow_other() {
                    return Setup::Skip("/etc/fuse.conf has user_allow_other");
                }
                if let Err(skip) = nobody_tree(c) {
                    return skip;
                }
                run_as_nobody(
                    &["-f", "-o", &format!("{},allow_other", luw(&l, &u, &w)), &m],
                    &["cannot mount", "allow_other"],
                )
            },
        },
    ]
}
