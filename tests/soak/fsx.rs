//! The fsx-style data-integrity checker: random writes, truncates, hole punches and reads of one file against a byte model.

use super::*;

// ---------------------------------------------------------------------------------------------
// fsx-style data integrity on one file
// ---------------------------------------------------------------------------------------------

pub(crate) struct Fsx {
    pub(crate) path: PathBuf,
    pub(crate) model: Vec<u8>,
    pub(crate) file: fs::File,
    pub(crate) reader: fs::File,
    pub(crate) rng: Rng,
    pub(crate) log: Vec<String>,
    pub(crate) ops: u64,
}

pub(crate) const FSX_MAX: u64 = 1 << 20;

impl Fsx {
    pub(crate) fn fail(&self, what: String) -> ! {
        panic!(
            "fsx diverged at operation {} on {}: {what}\n  last operations:\n    {}",
            self.ops,
            self.path.display(),
            self.log[self.log.len().saturating_sub(40)..].join("\n    ")
        );
    }

    pub(crate) fn check<T>(&self, what: &str, r: io::Result<T>) -> T {
        r.unwrap_or_else(|e| self.fail(format!("{what}: {e}")))
    }

    pub(crate) fn read_check(&mut self, through_reader: bool) {
        let len = self.model.len() as u64;
        let off = self.rng.below(len + 100);
        let n = self.rng.below(70000) as usize + 1;
        let mut buf = vec![0u8; n];
        let f = if through_reader {
            &self.reader
        } else {
            &self.file
        };
        let got = self.check("pread", read_at_full(f, &mut buf, off));
        let want_end = (off as usize + n).min(self.model.len());
        let want = if (off as usize) < self.model.len() {
            &self.model[off as usize..want_end]
        } else {
            &[][..]
        };
        self.log.push(format!(
            "read @{off} +{n} via {}: {got} bytes",
            if through_reader { "reader" } else { "writer" }
        ));
        if &buf[..got] != want {
            let first = buf[..got].iter().zip(want).position(|(a, b)| a != b);
            self.fail(format!(
                "read @{off} +{n}: got {got} bytes, expected {} (first bad byte at +{first:?})",
                want.len()
            ));
        }
    }

    pub(crate) fn step(&mut self) {
        self.ops += 1;
        match self.rng.below(12) {
            0..=3 => {
                let off = self.rng.below(FSX_MAX);
                let n = self.rng.below(65536) as usize + 1;
                let data = self.rng.bytes(n);
                self.log.push(format!("write @{off} +{n}"));
                self.check("pwrite", self.file.write_all_at(&data, off));
                let end = off as usize + n;
                if self.model.len() < end {
                    self.model.resize(end, 0);
                }
                self.model[off as usize..end].copy_from_slice(&data);
            }
            4 => {
                let size = self.rng.below(FSX_MAX);
                self.log.push(format!("ftruncate {size}"));
                self.check("ftruncate", self.file.set_len(size));
                self.model.resize(size as usize, 0);
            }
            5 => {
                let off = self.rng.below(self.model.len() as u64 + 1);
                let len = self.rng.below(100_000) + 1;
                self.log.push(format!("punch hole @{off} +{len}"));
                let r = rustix::fs::fallocate(
                    &self.file,
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                    off,
                    len,
                );
                match r {
                    Ok(()) => {
                        let end = ((off + len) as usize).min(self.model.len());
                        for b in &mut self.model[(off as usize).min(end)..end] {
                            *b = 0;
                        }
                    }
                    Err(e) if e == rustix::io::Errno::OPNOTSUPP => {}
                    Err(e) => self.fail(format!("punch hole: {e}")),
                }
            }
            6..=8 => self.read_check(false),
            9 => self.read_check(true),
            10 => {
                self.log.push("close + reopen (and a new reader)".into());
                self.check("fsync", self.file.sync_all());
                self.file = self.check(
                    "reopen",
                    fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&self.path),
                );
                self.reader = self.check("reopen reader", fs::File::open(&self.path));
            }
            _ => {
                let md = self.check("fstat", self.file.metadata());
                self.log.push(format!("stat: size {}", md.len()));
                if md.len() != self.model.len() as u64 {
                    self.fail(format!("size {} but model {}", md.len(), self.model.len()));
                }
                let mut all = Vec::new();
                let mut r = self.check("open", fs::File::open(&self.path));
                if self.ops.is_multiple_of(50) {
                    self.check("read whole", r.read_to_end(&mut all));
                    if all != self.model {
                        self.fail("whole-file read differs from the model".into());
                    }
                } else {
                    let _ = r.seek(SeekFrom::End(0));
                }
            }
        }
    }
}

pub(crate) fn read_at_full(f: &fs::File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
