//! Initialisation schemes: how a freshly built backbone's parameters are drawn.
//!
//! Every layer of this crate is built with PyTorch's generic default (`nn.Conv2d`, `nn.Linear`:
//! uniform in ±1/√fan_in for weights and biases; norms at scale 1, shift 0; ViT and PiT
//! embeddings uniform with standard deviation 0.02): [`InitScheme::Uniform`]. The libraries the
//! architectures come from redraw some of them, and a paper reproduction may want theirs:
//!
//! | backbone     | [`InitScheme::Library`] (what [`Backbone::library_init`] says)            |
//! |--------------|---------------------------------------------------------------------------|
//! | ResNet       | torchvision: convolutions Kaiming-normal, fan-out, ReLU gain: N(0, 2/(O·k²)) |
//! | EfficientNet | timm (`_init_weight_goog`): convolutions N(0, 2/(O·k²/groups)), conv biases 0 |
//! | ViT          | timm (`init_weights_vit_timm`): Linear weights truncated N(0, 0.02²), biases 0; `pos_embed` truncated N(0, 0.02²), `cls_token` N(0, 1e-6²) |
//! | PiT          | timm: `pos_embed`, `cls_token` truncated N(0, 0.02²); the rest PyTorch's default |
//!
//! (timm truncates at ±2 absolute, which for std 0.02 cuts nothing measurable.)
//! [`InitScheme::Simsiam`] is what the official SimSiam code builds its encoder with: the
//! library's, plus torchvision's `zero_init_residual=True` for ResNet (the last BatchNorm's
//! scale of every residual block at 0, so each block starts as the identity).
//!
//! ```
//! use dfdx::prelude::*;
//! use siamlab_model::backbones::ResNet18CifarTiny;
//! use siamlab_model::init::{initialise, InitScheme};
//! let mut net = ResNet18CifarTiny::build(&Cpu::default());
//! initialise(&mut net, InitScheme::Simsiam, 0).unwrap();
//! assert!(net.layer1.0.bn2.weight.as_vec().iter().all(|&v| v == 0.0));
//! ```

use dfdx::prelude::{Cpu, SampleTensor};
use rand_distr::{Distribution, Normal, Uniform};

use crate::backbones::Backbone;
use crate::{Kernels, OpError};

/// How a backbone's parameters are drawn when it is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InitScheme {
    /// PyTorch's generic layer defaults (U(±1/√fan_in)), as the layers build themselves.
    #[default]
    Uniform,
    /// The architecture's library: torchvision for ResNet, timm for the others.
    Library,
    /// The official SimSiam encoder: [`Library`](InitScheme::Library), and for ResNet
    /// torchvision's `zero_init_residual=True`.
    Simsiam,
}

impl InitScheme {
    /// The names [`FromStr`](std::str::FromStr) reads, in variant order.
    pub const NAMES: [&'static str; 3] = ["uniform", "library", "simsiam"];

    /// The scheme's name (`uniform`, `library`, `simsiam`).
    pub fn name(self) -> &'static str {
        match self {
            InitScheme::Uniform => Self::NAMES[0],
            InitScheme::Library => Self::NAMES[1],
            InitScheme::Simsiam => Self::NAMES[2],
        }
    }
}

/// A name that is none of [`InitScheme::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown init scheme {name:?} ({})", InitScheme::NAMES.join(", "))]
pub struct UnknownInitScheme {
    /// The name given.
    pub name: String,
}

impl std::str::FromStr for InitScheme {
    type Err = UnknownInitScheme;
    fn from_str(s: &str) -> Result<Self, UnknownInitScheme> {
        [InitScheme::Uniform, InitScheme::Library, InitScheme::Simsiam]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownInitScheme { name: s.into() })
    }
}

/// One tensor's distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Draw {
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// Normal with mean 0 and standard deviation `std`, redrawn outside `[-bound, bound]`
    /// (timm's `trunc_normal_(std=std, a=-bound, b=bound)`).
    TruncNormal {
        /// Standard deviation.
        std: f64,
        /// The absolute bound.
        bound: f64,
    },
    /// Uniform in `[-b, b]`.
    Uniform(f64),
    /// Every value this one.
    Constant(f32),
}

impl Draw {
    /// Kaiming-normal with the ReLU gain over `fan` (PyTorch's `kaiming_normal_(nonlinearity="relu")`):
    /// N(0, 2/fan).
    pub fn kaiming_normal(fan: usize) -> Draw {
        Draw::Normal((2.0 / fan.max(1) as f64).sqrt())
    }

    /// `n` values drawn from `rng`.
    fn sample(self, rng: &Cpu, n: usize) -> Vec<f32> {
        match self {
            Draw::Constant(v) => vec![v; n],
            Draw::Uniform(b) => rng.sample_like(&(n,), Uniform::new_inclusive(-b as f32, b as f32)).as_vec(),
            Draw::Normal(std) => rng.sample_like(&(n,), normal(std)).as_vec(),
            Draw::TruncNormal { std, bound } => {
                let mut v: Vec<f32> = rng.sample_like(&(n,), normal(std)).as_vec();
                let outside = |x: f32| !(-bound as f32..=bound as f32).contains(&x);
                while v.iter().any(|&x| outside(x)) {
                    let redraw: Vec<f32> = rng.sample_like(&(n,), normal(std)).as_vec();
                    for (x, r) in v.iter_mut().zip(redraw) {
                        if outside(*x) {
                            *x = r;
                        }
                    }
                }
                v
            }
        }
    }
}

fn normal(std: f64) -> impl Distribution<f32> {
    Normal::new(0.0f32, std as f32).unwrap_or_else(|_| Normal::new(0.0, 0.0).expect("zero deviation is valid"))
}

/// The fan-out of a convolution weight `[O, I/groups, k, k]` as PyTorch computes it
/// (`O·k²`; groups do not enter).
pub fn conv_fan_out(shape: &[usize]) -> usize {
    shape.first().copied().unwrap_or(1) * shape.iter().skip(2).product::<usize>()
}

/// Redraws the parameters of `backbone` (freshly built) as `scheme` says, from an RNG seeded with
/// `seed`; [`InitScheme::Uniform`] leaves it as built. Buffers (running statistics) are not
/// touched. Works on any device (each tensor goes through the host once).
pub fn initialise<B: Backbone<F, D>, const F: usize, D: Kernels<f32>>(
    backbone: &mut B,
    scheme: InitScheme,
    seed: u64,
) -> Result<(), OpError> {
    if scheme == InitScheme::Uniform {
        return Ok(());
    }
    let rng = Cpu::seed_from_u64(seed);
    let residual = scheme == InitScheme::Simsiam;
    crate::walk_tensors::<D, B, OpError>(backbone, "", &mut |slot, values| {
        if !slot.trainable {
            return Ok(false);
        }
        match B::library_init(slot.name, slot.shape, residual) {
            Some(draw) => {
                *values = draw.sample(&rng, values.len());
                Ok(true)
            }
            None => Ok(false),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names_parse_and_an_unknown_one_is_named() {
        for name in InitScheme::NAMES {
            assert_eq!(name.parse::<InitScheme>().unwrap().name(), name);
        }
        let err = "kaiming".parse::<InitScheme>().unwrap_err();
        assert_eq!(err, UnknownInitScheme { name: "kaiming".into() });
        assert_eq!(err.to_string(), "unknown init scheme \"kaiming\" (uniform, library, simsiam)");
    }
}
