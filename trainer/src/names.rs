//! Names a user types — backbones, augmentation recipes, dataset sources — matched forgivingly
//! by [`siamlab_datasets::names`]: `-` and `_` are the same and case does not matter (`ResNet18-CIFAR` is `resnet18_cifar`,
//! `CIFAR-10` is `cifar10`). The one place that maps a typed name to the canonical one the
//! library crates know; the command line's flags and the trainer's configuration and experiment
//! files all go through it, so run folders record canonical names.
//!
//! ```
//! use siamlab_trainer::names;
//! assert_eq!(names::backbone("ResNet18-CIFAR").unwrap(), "resnet18_cifar");
//! let e = names::backbone("resnet18_cifr").unwrap_err().to_string();
//! assert!(e.contains("did you mean resnet18_cifar?"), "{e}");
//! ```

use siamlab_datasets::names::match_name;
use siamlab_datasets::sources::KINDS;
use siamlab_model::backbones::BACKBONE_NAMES;
use siamlab_pipeline::augment::RECIPE_NAMES;

use crate::error::{Error, Result};

/// The known name `given` means (`what` names the kind in the error: "backbone"); for an
/// unknown name, a one-line error with the closest known name when one is near
/// ([`siamlab_datasets::names::match_name`]).
pub fn canonical<'a>(what: &str, given: &str, known: &[&'a str]) -> Result<&'a str> {
    match_name(given, known).map_err(|closest| {
        let hint = closest.map(|n| format!("; did you mean {n}?")).unwrap_or_default();
        Error::config(format!("unknown {what} {given:?}{hint} (known: {})", known.join(", ")))
    })
}

/// A backbone name ([`BACKBONE_NAMES`]).
pub fn backbone(given: &str) -> Result<&'static str> {
    canonical("backbone", given, BACKBONE_NAMES)
}

/// An augmentation recipe name ([`RECIPE_NAMES`]).
pub fn recipe(given: &str) -> Result<&'static str> {
    canonical("recipe", given, &RECIPE_NAMES)
}

/// A dataset source kind ([`KINDS`]).
pub fn source(given: &str) -> Result<&'static str> {
    canonical("source", given, &KINDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashes_underscores_and_case_are_the_same() {
        for typed in ["resnet18_cifar", "resnet18-cifar", "ResNet18_CIFAR", "RESNET18-CIFAR", "resnet18cifar"] {
            assert_eq!(backbone(typed).unwrap(), "resnet18_cifar", "{typed}");
        }
        assert_eq!(backbone("ViT-S").unwrap(), "vit_s");
        assert_eq!(backbone("EfficientNet-B0").unwrap(), "efficientnet_b0");
        assert_eq!(recipe("SimSiam").unwrap(), "simsiam");
        assert_eq!(source("CIFAR-10").unwrap(), "cifar10");
        assert_eq!(source("stl_10").unwrap(), "stl10");
        assert_eq!(source("CelebA").unwrap(), "celeba");
    }

    #[test]
    fn every_known_name_is_its_own_canonical_and_no_two_collide() {
        for known in [BACKBONE_NAMES, &RECIPE_NAMES[..], &KINDS[..]] {
            for (i, a) in known.iter().enumerate() {
                assert_eq!(canonical("x", a, known).unwrap(), *a);
                for b in &known[i + 1..] {
                    assert_ne!(
                        siamlab_datasets::names::name_key(a),
                        siamlab_datasets::names::name_key(b),
                        "{a} and {b} would be the same name"
                    );
                }
            }
        }
    }

    #[test]
    fn an_unknown_name_suggests_the_closest_known_one_on_one_line() {
        let e = backbone("resnet18-cifr").unwrap_err().to_string();
        assert!(
            e.starts_with("unknown backbone \"resnet18-cifr\"; did you mean resnet18_cifar? (known: resnet18,"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(backbone("resnet50").unwrap_err().to_string().contains("did you mean resnet18?"));
        assert!(recipe("simsam").unwrap_err().to_string().contains("did you mean simsiam?"));
        assert!(source("cifar-1000").unwrap_err().to_string().contains("did you mean cifar100?"));
        // Nothing near: no guess, the list.
        let e = backbone("transformer").unwrap_err().to_string();
        assert!(!e.contains("did you mean"), "{e}");
        assert!(e.contains("known: resnet18"), "{e}");
    }
}
