//! Checking the layer setup: every path exists, has the right type, and the layers do not
//! overlap. Nothing is created or changed on disk.

#[allow(unused_imports)]
use super::*;

/// A directory named on the command line, resolved and checked.
pub(super) struct Dir {
    /// Canonical absolute path.
    path: PathBuf,
    dev: u64,
    /// (st_dev, st_ino) of the directory and of each of its ancestors.
    chain: Vec<(u64, u64)>,
}

/// Read and search access to a layer root; upper and work also need write access.
const READ: u32 = (libc::R_OK | libc::X_OK) as u32;
const WRITE: u32 = READ | libc::W_OK as u32;

impl Dir {
    /// Resolves `given` (relative to the cwd, symlinks followed), checks it is a directory
    /// and that the mounting user has `access` to it (`READ`, `WRITE` or 0 for no check):
    /// a layer the daemon cannot read would mount and then fail every access.
    fn resolve(what: &str, given: &Path, access: u32) -> Result<Dir> {
        let fail = |e: &io::Error| {
            OptionsError::new(format_args!(
                "{what} {}: {}{}",
                quote_path(given),
                errno_text(e),
                dead_mount_hint(given, e)
            ))
        };
        let path = fs::canonicalize(given).map_err(|e| fail(&e))?;
        // A dead FUSE mount still answers from the kernel's attribute cache: ask it.
        crate::sys::stat_uncached(&path).map_err(|e| fail(&e.into()))?;
        let meta = fs::metadata(&path).map_err(|e| fail(&e))?;
        if !meta.is_dir() {
            return Err(fail(&io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        if access != 0
            && let Err(e) = crate::sys::access_path(&path, access)
        {
            let needs = if access == WRITE {
                "read, write and search"
            } else {
                "read and search"
            };
            return Err(OptionsError::new(format_args!(
                "{what} {}: {} (the mounting user needs {needs} access to it)",
                quote_path(given),
                errno_text(&e.into())
            )));
        }
        let chain = path
            .ancestors()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        Ok(Dir {
            path,
            dev: meta.dev(),
            chain,
        })
    }

    fn id(&self) -> (u64, u64) {
        self.chain[0]
    }

    fn same_as(&self, other: &Dir) -> bool {
        self.id() == other.id()
    }

    /// This directory is `other` or below it.
    fn within(&self, other: &Dir) -> bool {
        self.chain.contains(&other.id())
    }

    fn shown(&self) -> String {
        quote_path(&self.path)
    }
}

/// For ENOTCONN, what to do about it: the path is on a FUSE mount whose daemon has died (it
/// was killed, or crashed), which stays in the way until it is unmounted.
fn dead_mount_hint(given: &Path, err: &io::Error) -> String {
    if err.raw_os_error() != Some(libc::ENOTCONN) {
        return String::new();
    }
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(given))
        .unwrap_or_else(|_| given.to_path_buf());
    // The dead mount is the shortest prefix that cannot be stat'ed: its parent still can.
    let mut prefix = PathBuf::new();
    let mut dead = absolute.clone();
    for component in absolute.components() {
        prefix.push(component);
        if let Err(e) = fs::symlink_metadata(&prefix)
            && e.raw_os_error() == Some(libc::ENOTCONN)
        {
            dead = prefix;
            break;
        }
    }
    let shown = dead.to_string_lossy();
    let arg = if shown
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"/._-+,:=@".contains(&c))
    {
        shown.into_owned()
    } else {
        format!("'{}'", shown.replace('\'', "'\\''"))
    };
    format!(
        " (the daemon serving {} has died: run fusermount3 -u {arg})",
        quote_path(&dead)
    )
}

/// Checks every path and the relations between the layers; builds the [`Config`].
pub(super) fn validate(raw: Raw) -> Result<Config> {
    let mut positionals = raw.positionals.into_iter();
    let (source, mount_arg) = match (positionals.next(), positionals.next(), positionals.next()) {
        (None, _, _) => {
            return Err(OptionsError::new(
                "no mountpoint given (usage: ovlfs [-f] [-d] [-o OPTS]... MERGED)",
            ));
        }
        (Some(m), None, _) => (None, m),
        (Some(s), Some(m), None) => (Some(s.to_string_lossy().into_owned()), m),
        (Some(_), Some(_), Some(extra)) => {
            return Err(OptionsError::new(format_args!(
                "too many arguments: {} (expected at most SOURCE and MERGED)",
                quote(extra.as_bytes())
            )));
        }
    };

    let lowers = match raw.lowers {
        None => {
            return Err(OptionsError::new(
                "no lowerdir given (-o lowerdir=DIR[:DIR...])",
            ));
        }
        Some(l) if l.is_empty() && !raw.datadirs.is_empty() => {
            return Err(OptionsError::new(
                "data-only layers need at least one regular lower layer above them \
                 (lowerdir=L::DATA or lowerdir+=L,datadir+=DATA)",
            ));
        }
        Some(l) if l.is_empty() => return Err(OptionsError::new("lowerdir is empty")),
        Some(l) => l,
    };
    match (&raw.upper, &raw.work) {
        (Some(_), None) => {
            return Err(OptionsError::new(
                "upperdir given without workdir (add -o workdir=DIR)",
            ));
        }
        (None, Some(_)) => {
            return Err(OptionsError::new(
                "workdir given without upperdir (add -o upperdir=DIR)",
            ));
        }
        _ => {}
    }

    let regular_count = lowers.len();
    let lowers = lowers
        .iter()
        .map(|l| Dir::resolve("lowerdir", l, READ))
        .chain(
            raw.datadirs
                .iter()
                .map(|d| Dir::resolve("datadir", d, READ)),
        )
        .collect::<Result<Vec<Dir>>>()?;
    let upper = raw
        .upper
        .as_deref()
        .map(|u| Dir::resolve("upperdir", u, WRITE))
        .transpose()?;
    let work = raw
        .work
        .as_deref()
        .map(|w| Dir::resolve("workdir", w, WRITE))
        .transpose()?;
    let mountpoint = Dir::resolve("mountpoint", Path::new(&mount_arg), 0)?;

    if let (Some(upper), Some(work)) = (&upper, &work) {
        if upper.same_as(work) {
            return Err(OptionsError::new(format_args!(
                "upperdir and workdir are the same directory {}",
                upper.shown()
            )));
        }
        if work.within(upper) {
            return Err(OptionsError::new(format_args!(
                "workdir {} is inside upperdir {}",
                work.shown(),
                upper.shown()
            )));
        }
        if upper.within(work) {
            return Err(OptionsError::new(format_args!(
                "upperdir {} is inside workdir {}",
                upper.shown(),
                work.shown()
            )));
        }
        if upper.dev != work.dev {
            return Err(OptionsError::new(format_args!(
                "workdir {} is not on the same filesystem as upperdir {}",
                work.shown(),
                upper.shown()
            )));
        }
    }
    for (what, dir) in [("upperdir", &upper), ("workdir", &work)] {
        let Some(dir) = dir else { continue };
        for lower in &lowers {
            if dir.same_as(lower) {
                return Err(OptionsError::new(format_args!(
                    "{what} {} is also a lowerdir",
                    dir.shown()
                )));
            }
            if dir.within(lower) {
                return Err(OptionsError::new(format_args!(
                    "{what} {} is inside lowerdir {}",
                    dir.shown(),
                    lower.shown()
                )));
            }
            if lower.within(dir) {
                return Err(OptionsError::new(format_args!(
                    "lowerdir {} is inside {what} {}",
                    lower.shown(),
                    dir.shown()
                )));
            }
        }
        // The daemon would have to look itself up through its own mount.
        if mountpoint.within(dir) && !mountpoint.same_as(dir) {
            return Err(OptionsError::new(format_args!(
                "mountpoint {} is inside {what} {}",
                mountpoint.shown(),
                dir.shown()
            )));
        }
    }

    // fusermount3 (as root) decides whether to unmount by opening the mountpoint, which an
    // owner-only mount refuses to root: fuser therefore refuses auto_unmount there.
    let has = |name: &str| raw.fuse_options.iter().any(|o| o == name);
    if has("auto_unmount")
        && !has("allow_other")
        && !has("allow_root")
        && crate::sys::geteuid() != 0
    {
        return Err(OptionsError::new(
            "option auto_unmount needs allow_other or allow_root (which /etc/fuse.conf must \
             permit) when not mounting as root",
        ));
    }

    let mut threads = raw.threads;
    if threads.is_none() && (raw.single_threaded || raw.threaded == Some(false)) {
        threads = Some(1);
    }
    Ok(Config {
        datadirs: lowers[regular_count..]
            .iter()
            .map(|d| d.path.clone())
            .collect(),
        lowerdirs: lowers
            .into_iter()
            .take(regular_count)
            .map(|d| d.path)
            .collect(),
        upperdir: upper.map(|d| d.path),
        workdir: work.map(|d| d.path),
        mountpoint: mountpoint.path,
        source,
        foreground: raw.foreground || raw.debug,
        debug: raw.debug || raw.debug_in_background,
        whiteout: raw.whiteout,
        userxattr: raw.userxattr,
        metacopy: raw.metacopy,
        passthrough: raw.passthrough,
        threads,
        timeout: raw.timeout,
        fsync: raw.fsync.unwrap_or(true) && !raw.volatile,
        volatile: raw.volatile,
        writeback: raw.writeback.unwrap_or(true),
        supervisor: raw.supervisor,
        uid_mapping: raw.uid_mapping,
        gid_mapping: raw.gid_mapping,
        squash_to_root: raw.squash_to_root,
        squash_to_uid: raw.squash_to_uid,
        squash_to_gid: raw.squash_to_gid,
        static_nlink: raw.static_nlink,
        noacl: raw.noacl,
        ino32: raw.ino32,
        xattr_permissions: raw.xattr_permissions,
        redirect_dir: raw.redirect_dir,
        fuse_options: raw.fuse_options,
        ignored_options: raw.ignored_options,
    })
}
