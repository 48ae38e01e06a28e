//! A layer of the overlay: its root directory fd, position and device.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::stat_override::StatXattr;
use crate::sys::{self, SysResult};

/// One layer. Layer 0 is the upper when the mount has one; lowers follow, topmost first.
#[derive(Debug)]
pub struct Layer {
    pub index: usize,
    pub path: PathBuf,
    /// `O_PATH` fd of the layer's root directory; every lookup in the layer starts here.
    pub root: std::sync::Arc<OwnedFd>,
    /// st_dev of the root; objects of this layer are reported with inode numbers built from it.
    pub dev: u64,
    /// Small index of `dev` among the distinct devices of all layers (see [`LayerStack::stable_ino`]).
    pub dev_index: u64,
    pub writable: bool,
    /// The xattr this layer keeps owners and modes in, if any (see [`crate::stat_override`]).
    pub stat_xattr: Option<StatXattr>,
    /// The layer was given as an id-mapped mount: the owners its objects show are already
    /// mapped (containers/storage hands such lowers to mount programs).
    pub idmapped: bool,
    /// Copy-ups from this layer may try a reflink (FICLONE) first; cleared the first time the
    /// filesystems refuse one, so later copy-ups skip the failing call.
    pub reflink_to_upper: AtomicBool,
}

impl Layer {
    pub fn open(index: usize, path: &Path, writable: bool) -> SysResult<Layer> {
        let root = std::sync::Arc::new(sys::open_layer_root(path)?);
        let dev = sys::stat_fd(root.as_fd())?.st_dev;
        let stat_xattr = StatXattr::of_layer_root(root.as_fd());
        // Only lowers: owners written through an id-mapped upper would be mapped twice.
        let idmapped = !writable && sys::on_idmapped_mount(root.as_fd());
        log::debug!(
            "layer {}: owner-and-mode xattr {stat_xattr:?}, id-mapped mount: {idmapped}",
            path.display()
        );
        Ok(Layer {
            index,
            path: path.to_owned(),
            root,
            dev,
            dev_index: 0,
            writable,
            stat_xattr,
            idmapped,
            reflink_to_upper: AtomicBool::new(true),
        })
    }

    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// Opens the layers (upper first if any) and numbers their devices.
pub fn open_layers(upper: Option<&Path>, lowers: &[PathBuf]) -> SysResult<Vec<Layer>> {
    let mut layers = Vec::with_capacity(lowers.len() + 1);
    if let Some(upper) = upper {
        layers.push(Layer::open(0, upper, true)?);
    }
    for lower in lowers {
        let index = layers.len();
        layers.push(Layer::open(index, lower, false)?);
    }
    let mut devs: Vec<u64> = Vec::new();
    for layer in &mut layers {
        layer.dev_index = match devs.iter().position(|d| *d == layer.dev) {
            Some(i) => i as u64,
            None => {
                devs.push(layer.dev);
                (devs.len() - 1) as u64
            }
        };
    }
    Ok(layers)
}

/// All layers of a mount, upper first when there is one.
#[derive(Debug)]
pub struct LayerStack {
    pub layers: Vec<Layer>,
    pub has_upper: bool,
    /// The xattr holding an upper object's pre-copy-up inode number.
    pub origin_xattr: &'static str,
    /// How many of the last layers are data-only: never merged, listed or looked up by
    /// name, only read through the absolute redirects of metadata-only copies.
    pub data_only: usize,
    /// The kernel's inode index in the workdir, when an `index=on` mount left entries there.
    pub kernel_index: Option<crate::index::KernelIndex>,
}

impl LayerStack {
    pub fn new(
        upper: Option<&Path>,
        lowers: &[PathBuf],
        origin_xattr: &'static str,
    ) -> SysResult<LayerStack> {
        Ok(LayerStack {
            layers: open_layers(upper, lowers)?,
            has_upper: upper.is_some(),
            origin_xattr,
            data_only: 0,
            kernel_index: None,
        })
    }

    /// The layers names are looked up in: all but the data-only ones.
    pub fn regular_layers(&self) -> &[Layer] {
        &self.layers[..self.layers.len() - self.data_only]
    }

    pub fn upper(&self) -> Option<&Layer> {
        if self.has_upper {
            self.layers.first()
        } else {
            None
        }
    }

    /// Index of the topmost lower layer.
    pub fn first_lower(&self) -> usize {
        usize::from(self.has_upper)
    }

    pub fn is_upper(&self, layer: usize) -> bool {
        self.has_upper && layer == 0
    }

    /// The inode number reported for an object with real inode `ino` in `layer`: the real
    /// number itself when all layers share one filesystem (as the kernel does), else the
    /// device's index in the top bits so objects of different filesystems never collide.
    pub fn stable_ino(&self, layer: usize, ino: u64) -> u64 {
        const DEV_SHIFT: u32 = 48;
        let dev_index = self.layers[layer].dev_index;
        let ino = if dev_index == 0 {
            ino
        } else {
            (dev_index << DEV_SHIFT) | (ino & ((1 << DEV_SHIFT) - 1))
        };
        // 0 is invalid and 1 is the FUSE root's node id: move them out of the way.
        if ino <= 1 { ino | (1 << 63) } else { ino }
    }
}
