//! Command line and `-o` option parsing into a validated [`Config`].
//!
//! Every user-facing error message of the program lives in this module. The command line is
//! that of fuse-overlayfs (docs/options.md): `ovlfs [-f] [-d] [-o OPT[,OPT...]]... MERGED`, and the
//! mount helper form `ovlfs SOURCE MERGED -o OPTS` as mount.fuse3 calls it.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) mod help;
mod helper;
mod unknown;
mod validate;
mod values;
mod version;

pub use helper::{HelperArgs, invoked_as_mount_helper, mount_helper_args};
pub use version::VERSION_LINE;

use validate::validate;
use values::*;

pub use crate::config::{Config, IdRange, PassthroughMode, WhiteoutMode, XattrPermissions};

/// What the command line asks the program to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Help,
    Version,
    Mount(Box<Config>),
}

/// The kernel's limit on stacked lower layers (OVL_MAX_STACK).
pub const MAX_LOWER_LAYERS: usize = 500;

/// Upper bound for `threads=N`.
pub const MAX_THREADS: usize = 1024;

/// The first line `--version` prints (`ovlfs: version 0.1.0`).
pub fn version_line() -> &'static str {
    VERSION_LINE
}

/// The whole `--version` text (the version, then the commit, the FUSE protocol, the target
/// and the features built in, one per line), ending with a newline.
pub fn version() -> String {
    version::version_text()
}

/// The `--help` text, ending with a newline: rendered from the option table that the man
/// page is rendered from too.
pub fn usage() -> String {
    help::render_usage()
}

/// A command line error: one line naming the problem, starting with `ovlfs: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionsError(String);

impl OptionsError {
    fn new(message: impl fmt::Display) -> OptionsError {
        OptionsError(format!("ovlfs: {message}"))
    }

    /// The full one-line message (what `Display` prints).
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionsError {}

type Result<T> = std::result::Result<T, OptionsError>;

/// Generic FUSE / VFS mount options passed through to the mount as they are.
const FUSE_FLAGS: &[&str] = &[
    "allow_other",
    "allow_root",
    "default_permissions",
    "auto_unmount",
    "ro",
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "sync",
    "async",
    "dirsync",
    "nonempty",
];

/// fstab-only options that mount(8) or mount.fuse3 may leave in the list: dropped silently.
const FSTAB_ONLY: &[&str] = &[
    "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner", "group",
];

/// Generic FUSE mount options with a value, passed through as they are.
const FUSE_VALUED: &[&str] = &["fsname", "subtype", "max_read", "blksize"];

/// Shows a user-supplied string quoted and escaped, so a message stays on one line.
fn quote(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn quote_path(path: &Path) -> String {
    quote(path.as_os_str().as_bytes())
}

/// `No such file or directory`, without the ` (os error 2)` std appends.
fn errno_text(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The command line as scanned, before the file system is looked at.
#[derive(Debug, Default)]
struct Raw {
    lowers: Option<Vec<PathBuf>>,
    /// Data-only lower layers (`lowerdir=A::B`, `datadir+=B`).
    datadirs: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    positionals: Vec<OsString>,
    foreground: bool,
    debug: bool,
    /// `--debug`: debug logging that, unlike `-d`, does not keep the process in front.
    debug_in_background: bool,
    whiteout: WhiteoutMode,
    userxattr: bool,
    metacopy: bool,
    passthrough: PassthroughMode,
    supervisor: Option<bool>,
    threads: Option<usize>,
    threaded: Option<bool>,
    single_threaded: bool,
    timeout: Option<Duration>,
    fsync: Option<bool>,
    volatile: bool,
    writeback: Option<bool>,
    uid_mapping: Vec<IdRange>,
    gid_mapping: Vec<IdRange>,
    squash_to_root: bool,
    squash_to_uid: Option<u32>,
    squash_to_gid: Option<u32>,
    static_nlink: bool,
    noacl: bool,
    ino32: bool,
    xattr_permissions: XattrPermissions,
    redirect_dir: bool,
    fuse_options: Vec<String>,
    ignored_options: Vec<String>,
}

/// Parses the command line (without argv\[0\]) and validates every path it names.
///
/// Nothing on disk is created or changed, whatever the outcome.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Action> {
    let mut raw = Raw::default();
    let mut args = args.into_iter();
    let mut only_positionals = false;
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if only_positionals || bytes.len() < 2 || bytes[0] != b'-' {
            raw.positionals.push(arg);
            continue;
        }
        match bytes {
            b"--" => only_positionals = true,
            b"-h" | b"--help" => return Ok(Action::Help),
            b"-V" | b"--version" => return Ok(Action::Version),
            b"--debug" => raw.debug_in_background = true,
            b"-o" => match args.next() {
                Some(opts) => parse_option_list(&mut raw, opts.as_bytes())?,
                None => return Err(OptionsError::new("option -o needs an argument")),
            },
            _ if bytes.starts_with(b"-o") => parse_option_list(&mut raw, &bytes[2..])?,
            _ if bytes[1] != b'-' && bytes[1..].iter().all(|c| b"fds".contains(c)) => {
                for c in &bytes[1..] {
                    match c {
                        b'f' => raw.foreground = true,
                        b'd' => raw.debug = true,
                        _ => raw.single_threaded = true,
                    }
                }
            }
            _ => {
                return Err(OptionsError::new(format_args!(
                    "unknown flag {} (see ovlfs --help)",
                    quote(bytes)
                )));
            }
        }
    }
    validate(raw).map(|c| Action::Mount(Box::new(c)))
}

/// `-o` options that take no value.
const NO_VALUE: &[&str] = &[
    "squash_to_root",
    "static_nlink",
    "noacl",
    "volatile",
    "ino32_t",
    "userxattr",
    "debug",
];

/// Parses one `-o` field (`name` or `name=value`). `after_path` is the field before it in
/// the same `-o` list, with the path it named, when it was a layer option.
fn parse_option(raw: &mut Raw, field: &[u8], after_path: Option<&(&[u8], PathBuf)>) -> Result<()> {
    let (name_bytes, value) = match field.iter().position(|&c| c == b'=') {
        Some(i) => (&field[..i], Some(&field[i + 1..])),
        None => (field, None),
    };
    let whole = String::from_utf8_lossy(field).into_owned();
    let Ok(name) = std::str::from_utf8(name_bytes) else {
        unknown::check(
            field,
            &String::from_utf8_lossy(name_bytes),
            value,
            after_path,
        )?;
        raw.ignored_options.push(whole);
        return Ok(());
    };
    if value.is_some() && (NO_VALUE.contains(&name) || FUSE_FLAGS.contains(&name)) {
        return Err(OptionsError::new(format_args!(
            "option {name} takes no value (got {})",
            quote(field)
        )));
    }
    let need = || {
        value.ok_or_else(|| {
            OptionsError::new(format_args!("option {name} needs a value ({name}=...)"))
        })
    };
    let need_path = || -> Result<PathBuf> {
        let v = need()?;
        if v.is_empty() {
            return Err(OptionsError::new(format_args!("{name} is empty")));
        }
        Ok(path_of(unescape(v)))
    };
    match name {
        // Layers.
        "lowerdir" => {
            let (regular, data) = split_lowerdir(need()?)?;
            raw.lowers = Some(regular);
            raw.datadirs = data;
        }
        "lowerdir+" | "datadir+" => {
            let v = need()?;
            if v.is_empty() {
                return Err(OptionsError::new(format_args!("{name} is empty")));
            }
            if name == "lowerdir+" && !raw.datadirs.is_empty() {
                return Err(OptionsError::new(
                    "a regular lower layer (lowerdir+=) cannot follow a data-only one \
                     (datadir+= or after \"::\")",
                ));
            }
            let path = path_of(v.to_vec());
            let lowers = raw.lowers.get_or_insert_with(Vec::new);
            if name == "lowerdir+" {
                lowers.push(path);
            } else {
                raw.datadirs.push(path);
            }
            check_layer_count(lowers.len() + raw.datadirs.len())?;
        }
        "upperdir" => raw.upper = Some(need_path()?),
        "workdir" => raw.work = Some(need_path()?),

        // ovlfs's own.
        "whiteout" => {
            let v = need()?;
            raw.whiteout = match v {
                b"chardev" => WhiteoutMode::Chardev,
                b"xattr" => WhiteoutMode::Xattr,
                b"auto" => WhiteoutMode::Auto,
                _ => return Err(bad_value(name, v, "chardev, xattr or auto")),
            };
        }
        "userxattr" => raw.userxattr = true,
        "metacopy" => {
            let v = need()?;
            raw.metacopy = match v {
                b"on" => true,
                b"off" => false,
                _ => return Err(bad_value(name, v, "on or off")),
            };
        }
        "passthrough" => {
            let v = need()?;
            raw.passthrough = match v {
                b"auto" => PassthroughMode::Auto,
                b"on" => PassthroughMode::On,
                b"off" => PassthroughMode::Off,
                _ => return Err(bad_value(name, v, "auto, on or off")),
            };
        }
        "supervisor" => {
            let v = need()?;
            raw.supervisor = match v {
                b"auto" => None,
                b"on" => Some(true),
                b"off" => Some(false),
                _ => return Err(bad_value(name, v, "auto, on or off")),
            };
        }
        "threads" => {
            let v = need()?;
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(parse_u32)
                .filter(|&n| n >= 1 && n as usize <= MAX_THREADS)
                .ok_or_else(|| {
                    bad_value(name, v, &format!("an integer from 1 to {MAX_THREADS}"))
                })?;
            raw.threads = Some(n as usize);
        }

        // fuse-overlayfs's.
        "threaded" => raw.threaded = Some(parse_bool01(name, need()?)?),
        "fsync" => raw.fsync = Some(parse_bool01(name, need()?)?),
        "writeback" => raw.writeback = Some(parse_bool01(name, need()?)?),
        "volatile" => raw.volatile = true,
        "timeout" => raw.timeout = Some(parse_timeout(need()?)?),
        "squash_to_root" => raw.squash_to_root = true,
        "squash_to_uid" | "squash_to_gid" => {
            let v = need()?;
            let id = std::str::from_utf8(v)
                .ok()
                .and_then(parse_u32)
                .ok_or_else(|| bad_value(name, v, &format!("a number from 0 to {}", u32::MAX)))?;
            if name == "squash_to_uid" {
                raw.squash_to_uid = Some(id);
            } else {
                raw.squash_to_gid = Some(id);
            }
        }
        "uidmapping" => raw.uid_mapping = parse_mapping(name, need()?)?,
        "gidmapping" => raw.gid_mapping = parse_mapping(name, need()?)?,
        "static_nlink" => raw.static_nlink = true,
        "noacl" => raw.noacl = true,
        "ino32_t" => raw.ino32 = true,
        "debug" => raw.debug = true,
        "xino" => {
            let v = need()?;
            if !matches!(v, b"on" | b"off" | b"auto") {
                return Err(bad_value(name, v, "on, off or auto"));
            }
            raw.ignored_options.push(whole);
        }
        "xattr_permissions" => {
            let v = need()?;
            raw.xattr_permissions = match v {
                b"0" => XattrPermissions::Off,
                b"1" => XattrPermissions::Privileged,
                b"2" => XattrPermissions::User,
                _ => return Err(bad_value(name, v, "0, 1 or 2")),
            };
        }
        "context" | "plugins" => {
            need()?;
            raw.ignored_options.push(whole);
        }
        "redirect_dir" => match need()? {
            b"on" => raw.redirect_dir = true,
            // `off` (fuse-overlayfs's only value) is the default; redirects found in the
            // layers are always followed, so `nofollow` cannot be honoured.
            b"off" | b"follow" => raw.redirect_dir = false,
            b"nofollow" => {
                raw.redirect_dir = false;
                raw.ignored_options.push(whole);
            }
            v => return Err(bad_value(name, v, "on, off, follow or nofollow")),
        },
        "fast_ino" | "noxattrs" => raw.ignored_options.push(whole),

        // Generic FUSE / mount options.
        _ if FUSE_FLAGS.contains(&name) => raw.fuse_options.push(whole),
        _ if FUSE_VALUED.contains(&name) => {
            let v = need()?;
            if matches!(name, "max_read" | "blksize") {
                let ok = std::str::from_utf8(v)
                    .ok()
                    .and_then(parse_u32)
                    .is_some_and(|n| n > 0);
                if !ok {
                    return Err(bad_value(name, v, "a positive integer"));
                }
            } else if v.is_empty() {
                return Err(OptionsError::new(format_args!("{name} is empty")));
            }
            if name == "subtype"
                && !v
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"._-+".contains(c))
            {
                return Err(bad_value(name, v, "letters, digits, '.', '_', '-' and '+'"));
            }
            // The kernel takes blksize= only for block-device FUSE mounts (fuseblk).
            if name == "blksize" {
                raw.ignored_options.push(whole);
            } else {
                raw.fuse_options.push(whole);
            }
        }
        _ if value.is_none() && FSTAB_ONLY.contains(&name) => {}
        _ if name.starts_with("x-") || name == "comment" => {}
        _ => {
            unknown::check(field, name, value, after_path)?;
            raw.ignored_options.push(whole);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_tests;
#[cfg(test)]
mod validate_tests;
