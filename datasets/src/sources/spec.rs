//! A source named by its kind and options — what `siamlab ingest`'s arguments and an experiment
//! file's `[datasets.ID]` both describe — checked and opened in one place, so that both get
//! exactly the same checks.

use std::path::Path;

use crate::error::{Error, Result};
use crate::record::Source;
use crate::sources::{CelebA, Cifar, Folder, Random, RandomSpec, Shapes, ShapesSpec, Stl10};

/// The source kinds, as named on the command line and in experiment files.
pub const KINDS: [&str; 7] = ["cifar10", "cifar100", "stl10", "celeba", "folder", "random", "shapes"];

/// A source kind and its options; unset options take the source's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceSpec<'a> {
    /// One of [`KINDS`].
    pub kind: &'a str,
    /// Archive or folder (file sources).
    pub src: Option<&'a Path>,
    /// random / shapes: (training) images.
    pub count: Option<u64>,
    /// shapes: test images.
    pub test_count: Option<u64>,
    /// random / shapes: side in pixels.
    pub size: Option<u32>,
    /// random / shapes: seed.
    pub seed: Option<u64>,
    /// random: Gaussian mean.
    pub mean: Option<f64>,
    /// random: Gaussian standard deviation.
    pub std: Option<f64>,
}

impl SourceSpec<'_> {
    fn file_source(&self) -> bool {
        !matches!(self.kind, "random" | "shapes")
    }

    fn random(&self) -> RandomSpec {
        let d = RandomSpec::default();
        RandomSpec {
            count: self.count.unwrap_or(d.count),
            size: self.size.unwrap_or(d.size),
            seed: self.seed.unwrap_or(d.seed),
            mean: self.mean.unwrap_or(d.mean),
            std: self.std.unwrap_or(d.std),
        }
    }

    fn shapes(&self) -> ShapesSpec {
        let d = ShapesSpec::default();
        ShapesSpec {
            train: self.count.unwrap_or(d.train),
            test: self.test_count.unwrap_or(d.test),
            size: self.size.unwrap_or(d.size),
            seed: self.seed.unwrap_or(d.seed),
        }
    }

    fn src(&self) -> Result<&Path> {
        self.src.ok_or_else(|| {
            Error::Usage(format!("source {} needs a path: --src PATH (src = PATH in an experiment file)", self.kind))
        })
    }

    /// Checks what can be checked without reading the source: a known kind, a `src` for file
    /// sources, valid numbers for generated ones.
    pub fn check(&self) -> Result<()> {
        if !KINDS.contains(&self.kind) {
            return Err(Error::Usage(format!("unknown source {:?} (known: {})", self.kind, KINDS.join(", "))));
        }
        if self.file_source() {
            // Whether it exists is for `open` to say: a plan may be made before the data is there.
            return self.src().map(drop);
        }
        self.open().map(drop)
    }

    /// Opens the source (file sources read their index: archive listing, annotation files).
    pub fn open(&self) -> Result<Box<dyn Source>> {
        Ok(match self.kind {
            "cifar10" => Box::new(Cifar::open(self.src()?, false)?),
            "cifar100" => Box::new(Cifar::open(self.src()?, true)?),
            "stl10" => Box::new(Stl10::open(self.src()?)?),
            "celeba" => Box::new(CelebA::open(self.src()?)?),
            "folder" => Box::new(Folder::open(self.src()?)?),
            "random" => Box::new(Random::new(self.random())?),
            "shapes" => Box::new(Shapes::new(self.shapes())?),
            other => return Err(Error::Usage(format!("unknown source {other:?} (known: {})", KINDS.join(", ")))),
        })
    }
}
