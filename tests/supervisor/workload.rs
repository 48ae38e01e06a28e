//! A reader/writer workload on a mount that keeps a model of what each thread wrote: creates,
//! writes, read-verifies, renames, unlinks and listings, plus files held open (and written
//! and read through the same fd) for the whole run. Every failed call is an error: under a
//! supervisor no caller may see one while workers are killed.

use crate::common::rng::Rng;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Lower files each thread starts with (`w{t}/l{k}`), so renames, unlinks and writes copy
/// up and write whiteouts.
pub const LOWER_FILES: usize = 6;

/// Content of lower file `k` of thread `t`.
pub fn lower_content(t: usize, k: usize) -> Vec<u8> {
    let mut rng = Rng::new(1000 + (t * 100 + k) as u64);
    let len = 1 + rng.below(20_000) as usize;
    rng.bytes(len)
}

/// Creates the lower tree for `threads` threads.
pub fn populate_lower(lower: &Path, threads: usize) {
    for t in 0..threads {
        let dir = lower.join(format!("w{t}"));
        fs::create_dir_all(&dir).unwrap();
        for k in 0..LOWER_FILES {
            fs::write(dir.join(format!("l{k}")), lower_content(t, k)).unwrap();
        }
    }
}

/// What a thread's directory must hold: file name → content.
pub type Model = BTreeMap<String, Vec<u8>>;

pub struct Workload {
    pub stop: Arc<AtomicBool>,
    pub ops: Arc<AtomicU64>,
    pub errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<Model>>,
}

impl Workload {
    pub fn start(mnt: &Path, threads: usize, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|t| {
                let dir = mnt.join(format!("w{t}"));
                let (stop, ops, errors) = (stop.clone(), ops.clone(), errors.clone());
                thread::Builder::new()
                    .name(format!("workload-{t}"))
                    .spawn(move || run_thread(t, &dir, seed, &stop, &ops, &errors))
                    .unwrap()
            })
            .collect();
        Workload {
            stop,
            ops,
            errors,
            threads: handles,
        }
    }

    /// Stops the threads; each thread's model, by thread.
    pub fn finish(self) -> Vec<Model> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|h| h.join().expect("workload thread panicked"))
            .collect()
    }

    pub fn error_list(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// A file held open for the whole run, with what it must contain.
struct Held {
    name: String,
    file: File,
    content: Vec<u8>,
}

fn run_thread(
    t: usize,
    dir: &Path,
    seed: u64,
    stop: &AtomicBool,
    ops: &AtomicU64,
    errors: &Mutex<Vec<String>>,
) -> Model {
    let mut rng = Rng::new(seed * 1000 + t as u64);
    let fail = |what: String| {
        let mut e = errors.lock().unwrap();
        if e.len() < 50 {
            e.push(format!("thread {t}: {what}"));
        }
    };
    let mut model: Model = (0..LOWER_FILES)
        .map(|k| (format!("l{k}"), lower_content(t, k)))
        .collect();
    let mut held = Vec::new();
    for h in 0..2 {
        let name = format!("h{h}");
        let path = dir.join(&name);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
        {
            Ok(file) => held.push(Held {
                name,
                file,
                content: Vec::new(),
            }),
            Err(e) => fail(format!("create {}: {e}", path.display())),
        }
    }
    // A lower file read through one fd for the whole run.
    let lower_fd = File::open(dir.join("l0")).map_err(|e| fail(format!("open l0: {e}")));
    let lower_l0 = lower_content(t, 0);
    // The held lower file's name (renames move it): never unlinked, since an open lower file
    // whose name is deleted does not survive a restart (docs/design.md, "The supervisor").
    let mut held_lower_name = "l0".to_string();
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) {
        counter += 1;
        let names: Vec<String> = model.keys().cloned().collect();
        let pick = |rng: &mut Rng| names[rng.below(names.len() as u64) as usize].clone();
        match rng.below(10) {
            0 | 1 => {
                let name = format!("f{counter}");
                let len = 1 + rng.below(64 * 1024) as usize;
                let data = rng.bytes(len);
                match fs::write(dir.join(&name), &data) {
                    Ok(()) => {
                        model.insert(name, data);
                    }
                    Err(e) => fail(format!("write {name}: {e}")),
                }
            }
            2 | 3 if !names.is_empty() => {
                let name = pick(&mut rng);
                match fs::read(dir.join(&name)) {
                    Ok(data) if data == model[&name] => {}
                    Ok(data) => fail(format!(
                        "read {name}: {} bytes, expected {}; first difference at {}",
                        data.len(),
                        model[&name].len(),
                        data.iter()
                            .zip(&model[&name])
                            .position(|(a, b)| a != b)
                            .unwrap_or(data.len().min(model[&name].len()))
                    )),
                    Err(e) => fail(format!("read {name}: {e}")),
                }
            }
            4 if !names.is_empty() => {
                let (from, to) = (pick(&mut rng), format!("r{counter}"));
                match fs::rename(dir.join(&from), dir.join(&to)) {
                    Ok(()) => {
                        if from == held_lower_name {
                            held_lower_name = to.clone();
                        }
                        let data = model.remove(&from).unwrap();
                        model.insert(to, data);
                    }
                    Err(e) => fail(format!("rename {from} {to}: {e}")),
                }
            }
            5 if names.len() > 3 => {
                let name = pick(&mut rng);
                if name == held_lower_name {
                    continue;
                }
                match fs::remove_file(dir.join(&name)) {
                    Ok(()) => {
                        model.remove(&name);
                    }
                    Err(e) => fail(format!("unlink {name}: {e}")),
                }
            }
            6 => match fs::read_dir(dir) {
                Ok(rd) => {
                    let mut seen: Vec<String> = Vec::new();
                    for e in rd {
                        match e {
                            Ok(e) => seen.push(e.file_name().to_string_lossy().into_owned()),
                            Err(e) => fail(format!("readdir entry: {e}")),
                        }
                    }
                    seen.sort();
                    let mut want: Vec<String> = model.keys().cloned().collect();
                    want.extend(held.iter().map(|h| h.name.clone()));
                    want.sort();
                    if seen != want {
                        fail(format!("readdir: {seen:?}, expected {want:?}"));
                    }
                }
                Err(e) => fail(format!("readdir: {e}")),
            },
            7 | 8 if !held.is_empty() => {
                let which = rng.below(held.len() as u64) as usize;
                let h = &mut held[which];
                let off = rng.below(h.content.len() as u64 + 4096) as usize;
                let len = 1 + rng.below(8192) as usize;
                let data = rng.bytes(len);
                match h.file.write_all_at(&data, off as u64) {
                    Ok(()) => {
                        if h.content.len() < off + data.len() {
                            h.content.resize(off + data.len(), 0);
                        }
                        h.content[off..off + data.len()].copy_from_slice(&data);
                    }
                    Err(e) => fail(format!("pwrite {}: {e}", h.name)),
                }
                let mut back = vec![0u8; h.content.len()];
                match h.file.read_exact_at(&mut back, 0) {
                    Ok(()) if back == h.content => {}
                    Ok(()) => fail(format!("pread {}: content differs", h.name)),
                    Err(e) => fail(format!("pread {}: {e}", h.name)),
                }
            }
            _ => {
                if let Ok(f) = &lower_fd {
                    let mut back = vec![0u8; lower_l0.len()];
                    match f.read_exact_at(&mut back, 0) {
                        Ok(()) if back == lower_l0 => {}
                        Ok(()) => fail("pread of the held lower file: content differs".into()),
                        Err(e) => fail(format!("pread of the held lower file: {e}")),
                    }
                }
            }
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
    for h in held {
        model.insert(h.name, h.content);
    }
    model
}

/// Differences between what the threads' directories under `root` hold and their models.
pub fn compare(root: &Path, models: &[Model]) -> Vec<String> {
    let mut diffs = Vec::new();
    for (t, model) in models.iter().enumerate() {
        let dir: PathBuf = root.join(format!("w{t}"));
        let mut names: Vec<String> = match fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) => {
                diffs.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        names.sort();
        let want: Vec<String> = model.keys().cloned().collect();
        if names != want {
            diffs.push(format!("w{t}: names {names:?}, expected {want:?}"));
        }
        for (name, content) in model {
            match fs::read(dir.join(name)) {
                Ok(data) if &data == content => {}
                Ok(data) => diffs.push(format!(
                    "w{t}/{name}: {} bytes differ from the expected {}",
                    data.len(),
                    content.len()
                )),
                Err(e) => diffs.push(format!("w{t}/{name}: {e}")),
            }
        }
    }
    diffs
}
