//! Where siamlab and the official SimSiam code (facebookresearch/simsiam, `main_simsiam.py`,
//! `simsiam/builder.py`) differ by choice, each offered as an option of the run (part of its
//! `config.json`, so a resume with other settings is refused): the README's "Fidelity" section
//! lists them with their defaults. This module turns the options into the optimizer's
//! [`ParamGroups`]; the initialisation schemes are the model crate's ([`InitScheme`]).

use serde::{Deserialize, Deserializer, Serializer};
use siamlab_model::init::InitScheme;

use crate::optim::ParamGroups;

/// The tensors the official projector does not train: the bias of its last Linear
/// (`self.encoder.fc[6].bias.requires_grad = False`: it feeds a BatchNorm, so its gradient is
/// zero in exact arithmetic) and the affine parameters of its output BatchNorm
/// (`nn.BatchNorm1d(dim, affine=False)`: kept at scale 1 and shift 0 they are the identity).
pub const FROZEN_PROJECTOR_OUTPUT: [&str; 3] = ["projector.6.bias", "projector.7.weight", "projector.7.bias"];

/// The prefix of the predictor's tensors (the official `fix_lr` group).
pub const PREDICTOR: &str = "predictor.";

/// The parameter groups of a SimSiam run: `frozen_projector_output` freezes
/// [`FROZEN_PROJECTOR_OUTPUT`], `fix_pred_lr` steps the predictor at `base_lr` throughout,
/// `no_decay_norm_bias` exempts biases and normalisation parameters from weight decay.
pub fn ssl_groups(
    frozen_projector_output: bool,
    fix_pred_lr: bool,
    no_decay_norm_bias: bool,
    base_lr: f64,
) -> ParamGroups {
    ParamGroups {
        frozen: if frozen_projector_output {
            FROZEN_PROJECTOR_OUTPUT.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        },
        fixed_lr: fix_pred_lr.then(|| (PREDICTOR.to_string(), base_lr)),
        no_decay_norm_bias,
    }
}

/// `#[serde(with = "crate::choices::init_scheme")]`: an [`InitScheme`] as its name.
pub mod init_scheme {
    use super::*;

    /// Writes the scheme's name.
    pub fn serialize<S: Serializer>(scheme: &InitScheme, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(scheme.name())
    }

    /// Reads a scheme's name.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<InitScheme, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::TensorStep;

    #[test]
    fn groups_name_the_official_tensors() {
        let g = ssl_groups(true, true, false, 0.05);
        for name in FROZEN_PROJECTOR_OUTPUT {
            assert_eq!(g.step_of(name, 1, 0.01, 1e-4), TensorStep::Frozen, "{name}");
        }
        assert_eq!(g.step_of("projector.6.weight", 2, 0.01, 1e-4), TensorStep::Step { lr: 0.01, wd: 1e-4 });
        assert_eq!(g.step_of("predictor.3.bias", 1, 0.01, 1e-4), TensorStep::Step { lr: 0.05, wd: 1e-4 });
        assert_eq!(g.step_of("backbone.conv1.weight", 4, 0.01, 1e-4), TensorStep::Step { lr: 0.01, wd: 1e-4 });
        let plain = ssl_groups(false, false, false, 0.05);
        assert_eq!(plain, ParamGroups::default());
        assert_eq!(plain.step_of("projector.6.bias", 1, 0.01, 1e-4), TensorStep::Step { lr: 0.01, wd: 1e-4 });
        let no_decay = ssl_groups(false, false, true, 0.05);
        for (name, ndim) in [("backbone.bn1.weight", 1), ("projector.6.bias", 1), ("backbone.pos_embed", 3)] {
            assert_eq!(no_decay.step_of(name, ndim, 0.01, 1e-4), TensorStep::Step { lr: 0.01, wd: 0.0 }, "{name}");
        }
        assert_eq!(no_decay.step_of("backbone.conv1.weight", 4, 0.01, 1e-4), TensorStep::Step { lr: 0.01, wd: 1e-4 });
    }
}
