//! Clap value parsers for typed names (backbones, recipes, sources): each hands the name to
//! `siamlab_trainer::names`, which accepts `-`/`_` and any case, and yields the canonical name.

use std::ffi::OsStr;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;

/// A forgiving name parser: `resolve` maps a typed name to its canonical one; `values` are
/// listed in `--help` (with a line of help each where given).
#[derive(Clone, Copy)]
pub struct Name {
    resolve: fn(&str) -> siamlab_trainer::Result<&'static str>,
    values: &'static [(&'static str, &'static str)],
}

/// Backbones (`--backbone`).
pub const BACKBONE: Name = Name { resolve: siamlab_trainer::names::backbone, values: &[] };
/// Augmentation recipes (`--recipe`, `--augment`).
pub const RECIPE: Name = Name { resolve: siamlab_trainer::names::recipe, values: &[] };

/// Source kinds (`siamlab ingest SOURCE`), each with its line of help.
pub const SOURCE: Name = Name {
    resolve: siamlab_trainer::names::source,
    values: &[
        ("cifar10", "CIFAR-10: cifar-10-binary.tar.gz / cifar-10-python.tar.gz or their extracted folders"),
        ("cifar100", "CIFAR-100: cifar-100-binary.tar.gz / cifar-100-python.tar.gz or extracted"),
        ("stl10", "STL-10: stl10_binary.tar.gz or stl10_binary/"),
        ("celeba", "CelebA: folder with img_align_celeba/ (or .zip) and the attribute / partition files"),
        ("folder", "Any image folder: root/<class>/*.jpg or root/<split>/<class>/*.jpg"),
        ("random", "Seeded Gaussian-noise images (--count, --size, --seed, --mean, --std)"),
        ("shapes", "Procedurally drawn shapes, 10 classes (--count train images, --test-count, --size, --seed)"),
    ],
};

impl TypedValueParser for Name {
    type Value = String;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<String, clap::Error> {
        let flag = arg
            .map(|a| {
                a.get_long().map_or_else(|| format!("<{}>", a.get_id().as_str().to_uppercase()), |l| format!("--{l}"))
            })
            .unwrap_or_default();
        let text = value.to_str().ok_or_else(|| clap::Error::new(ErrorKind::InvalidUtf8).with_cmd(cmd))?;
        // Without the command attached, clap prints the message alone: one line.
        (self.resolve)(text)
            .map(String::from)
            .map_err(|e| clap::Error::raw(ErrorKind::InvalidValue, format!("{flag}: {e}\n")))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        if self.values.is_empty() {
            return None;
        }
        Some(Box::new(self.values.iter().map(|&(name, help)| PossibleValue::new(name).help(help))))
    }
}
