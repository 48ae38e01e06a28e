//! The kernel overlayfs mount guard (the reference of the differential tests).

use super::*;

// ---------------------------------------------------------------------------------------------
// Kernel overlayfs guard
// ---------------------------------------------------------------------------------------------

pub struct KernelOverlay {
    mnt: PathBuf,
}

pub fn dmesg_tail() -> String {
    let mut c = Command::new("dmesg");
    match run_cmd(&mut c, Duration::from_secs(5)) {
        Ok(o) => {
            let lines: Vec<&str> = o.stdout.lines().filter(|l| l.contains("overlay")).collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        }
        Err(_) => String::new(),
    }
}

impl KernelOverlay {
    /// `mount -t overlay overlay -o lowerdir=..[,upperdir=..,workdir=..][,extra] MNT`.
    pub fn mount(
        lowers: &[&Path],
        upper_work: Option<(&Path, &Path)>,
        extra: &[&str],
        mnt: &Path,
    ) -> KernelOverlay {
        let mnt = canon(mnt);
        let l: Vec<String> = lowers.iter().map(|p| escape_layer(p)).collect();
        let mut opts = vec![format!("lowerdir={}", l.join(":"))];
        if let Some((u, w)) = upper_work {
            opts.push(format!("upperdir={}", u.display()));
            opts.push(format!("workdir={}", w.display()));
        }
        opts.extend(extra.iter().map(|s| s.to_string()));
        let opts = opts.join(",");
        let mut c = Command::new("mount");
        c.args(["-t", "overlay", "overlay", "-o", &opts]).arg(&mnt);
        let out = run_cmd(&mut c, MOUNT_TIMEOUT).expect("run mount");
        let guard = KernelOverlay { mnt: mnt.clone() };
        let mounted = find_mount(&mnt).is_some_and(|m| m.fstype == "overlay");
        if !out.success() || !mounted {
            panic!(
                "kernel overlay mount failed ({:?}) with -o {opts}: {}\ndmesg: {}",
                out.status,
                out.stderr.trim(),
                dmesg_tail()
            );
        }
        guard
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    fn is_mounted(&self) -> bool {
        find_mount(&self.mnt).is_some_and(|m| m.fstype == "overlay")
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        if self.is_mounted() && !quiesced(|| run_quiet("umount", &[self.mnt.as_os_str()])) {
            run_quiet("umount", &["-l".as_ref(), self.mnt.as_os_str()]);
        }
        if self.is_mounted() {
            visible(&format!(
                "kernel overlay guard: WARNING: {} is still mounted",
                self.mnt.display()
            ));
        }
    }
}
