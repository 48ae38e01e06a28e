//! What `ovlfs --version` prints. The first line has the shape of fuse-overlayfs's
//! (`NAME: version X`); podman shows the whole output under `mount_program` in `podman info`.
//! The lines after it say what the binary was built from and with, one item per line.

/// The first line of `--version`.
pub const VERSION_LINE: &str = concat!("ovlfs: version ", env!("CARGO_PKG_VERSION"));

/// The FUSE kernel interface (protocol) version the FUSE library speaks: fuser 0.18 offers
/// 7.40 in its INIT reply (and logs `INIT response: ABI 7.40` under `-d`).
pub const FUSE_PROTOCOL: &str = "7.40";

/// The fuser release built in (from Cargo.lock; the requirement from Cargo.toml without it).
pub const FUSER_VERSION: &str = match option_env!("OVLFS_FUSER_VERSION") {
    Some(v) => v,
    None => "0.18",
};

/// The git commit built from (`abc1234`, `abc1234-dirty`), when built in a git checkout.
pub const COMMIT: Option<&str> = option_env!("OVLFS_GIT_COMMIT");

/// Optional behaviour this build has, one line each.
fn features() -> Vec<&'static str> {
    let mut f = vec![
        "FUSE passthrough of file data (used where the kernel offers it to the daemon)",
        "syslog once detached (/dev/log, or the socket OVLFS_SYSLOG_SOCKET names)",
        "mount helper (runs as mount.fuse.ovlfs for mount -t fuse.ovlfs)",
    ];
    if cfg!(target_env = "gnu") {
        f.push("malloc_trim (glibc): memory given back after big trees are forgotten");
    }
    f
}

/// The whole `--version` text, ending with a newline.
pub(crate) fn version_text() -> String {
    let mut out = format!("{VERSION_LINE}\n");
    if let Some(commit) = COMMIT {
        out.push_str(&format!("commit: {commit}\n"));
    }
    out.push_str(&format!(
        "FUSE kernel interface version {FUSE_PROTOCOL} (fuser {FUSER_VERSION}); the kernel's \
         own is negotiated at mount\n"
    ));
    let target = env!("OVLFS_TARGET");
    let rustc = env!("OVLFS_RUSTC");
    if !target.is_empty() {
        out.push_str(&format!("target: {target}"));
        if !rustc.is_empty() {
            out.push_str(&format!(", built with {rustc}"));
        }
        out.push('\n');
    }
    for f in features() {
        out.push_str(&format!("feature: {f}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_names_program_and_version() {
        let text = version_text();
        let first = text.lines().next().unwrap();
        assert_eq!(first, VERSION_LINE);
        assert_eq!(
            first,
            format!("ovlfs: version {}", env!("CARGO_PKG_VERSION"))
        );
        assert!(text.ends_with('\n'));
        assert!(text.contains(&format!("FUSE kernel interface version {FUSE_PROTOCOL}")));
        assert!(text.lines().any(|l| l.starts_with("feature: ")));
    }

    /// FUSE_PROTOCOL is what fuser 0.18 speaks: a fuser upgrade must revisit it.
    #[test]
    fn fuse_protocol_matches_the_fuser_built_in() {
        assert!(
            FUSER_VERSION == "0.18" || FUSER_VERSION.starts_with("0.18."),
            "fuser {FUSER_VERSION}: check the FUSE protocol version it speaks and update \
             FUSE_PROTOCOL"
        );
    }
}
