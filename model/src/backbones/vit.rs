//! Vision Transformer (Dosovitskiy et al. 2021) as timm's `VisionTransformer` without `head`:
//! class token, learned position embedding, pre-norm blocks, final LayerNorm, the class token's
//! output as features. timm's parameter names (`patch_embed.proj.weight`, `cls_token`,
//! `pos_embed`, `blocks.3.attn.qkv.weight`, `blocks.3.mlp.fc1.bias`, `norm.weight`).
//!
//! | stage        | output            | layers                                                  |
//! |--------------|-------------------|---------------------------------------------------------|
//! | patch_embed  | (S/P)² tokens × D | P×P stride-P conv 3 → D                                 |
//! | tokens       | T = (S/P)² + 1    | class token prepended, position embedding `[1, T, D]` added |
//! | blocks × L   | T × D             | x + attn(norm1(x)); x + mlp(norm2(x)), H heads, MLP D → M → D, GELU |
//! | norm         | T × D             | LayerNorm (ε 1e-6)                                      |
//! | features     | D                 | the class token                                         |
//!
//! The position embedding is a parameter of `T` rows, so `T` (and the patch size `P`) are in the
//! type and fix the input size: ViT-S is 4-px patches at 32 px ([`VitS32`]), 8 at 64 and 96 px,
//! 16 at 128 and 224 px. `Q` is `3·D` (the fused `qkv` projection), spelled out because stable
//! Rust cannot compute it from `D`.

use dfdx::nn::modules::{Linear, Repeated};
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::nn::NumParams;
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

use super::Backbone;
use crate::backbones::trace::StageTrace;
use crate::init::Draw;
use crate::layers::{AnyTape, Block, Conv2dBias, LayerNorm, Mode};
use crate::ready::mark;
use crate::{Image, Kernels, OpError};

/// Tokens of a batch: `[N, T, D]`.
pub type Tokens<const D: usize, T, Dev = Cpu> = Tensor<(usize, usize, Const<D>), f32, Dev, T>;

/// Multi-head self-attention with timm's fused `qkv` projection (`D → 3D`, bias) and `proj`.
#[derive(Clone, Debug)]
pub struct Attention<const D: usize, const H: usize, const Q: usize, E: Dtype = f32, Dev: Storage<E> = Cpu> {
    /// `D → 3D`: queries, keys, values (in that order along the output).
    pub qkv: Linear<D, Q, E, Dev>,
    /// `D → D`.
    pub proj: Linear<D, D, E, Dev>,
}

/// The transformer MLP: `fc1` D → M, GELU, `fc2` M → D.
#[derive(Clone, Debug)]
pub struct Mlp<const D: usize, const M: usize, E: Dtype = f32, Dev: Storage<E> = Cpu> {
    /// `D → M`.
    pub fc1: Linear<D, M, E, Dev>,
    /// `M → D`.
    pub fc2: Linear<M, D, E, Dev>,
}

/// A pre-norm transformer block, with stochastic depth on both residual branches.
#[derive(Clone, Debug)]
pub struct TransformerBlock<
    const D: usize,
    const H: usize,
    const M: usize,
    const Q: usize,
    E: Dtype = f32,
    Dev: Storage<E> = Cpu,
> {
    /// Before attention.
    pub norm1: LayerNorm<D, E, Dev>,
    /// Self-attention.
    pub attn: Attention<D, H, Q, E, Dev>,
    /// Before the MLP.
    pub norm2: LayerNorm<D, E, Dev>,
    /// The MLP.
    pub mlp: Mlp<D, M, E, Dev>,
    /// Drop-path probability of both branches (a training setting, not a weight: 0 when built).
    pub drop_path: f64,
}

/// The patch embedding: a `P×P` stride-`P` convolution (`patch_embed.proj`).
#[derive(Clone, Debug)]
pub struct PatchEmbed<const D: usize, const P: usize, E: Dtype = f32, Dev: Storage<E> = Cpu> {
    /// `3 → D`, kernel = stride = `P`.
    pub proj: Conv2dBias<3, D, P, P, 0, 3, E, Dev>,
}

/// ViT with patch size `P`, `T` tokens (class token included), width `D`, `H` heads, MLP width
/// `M`, `Q = 3D`, depth `L`.
#[derive(Clone, Debug)]
pub struct Vit<
    const P: usize,
    const T: usize,
    const D: usize,
    const H: usize,
    const M: usize,
    const Q: usize,
    const L: usize,
    E: Dtype = f32,
    Dev: Storage<E> = Cpu,
> {
    /// Pixels to patch tokens.
    pub patch_embed: PatchEmbed<D, P, E, Dev>,
    /// The class token, `[1, 1, D]`.
    pub cls_token: Tensor<Rank3<1, 1, D>, E, Dev>,
    /// Learned positions, `[1, T, D]`.
    pub pos_embed: Tensor<Rank3<1, T, D>, E, Dev>,
    /// The `L` blocks.
    pub blocks: Repeated<TransformerBlock<D, H, M, Q, E, Dev>, L>,
    /// Final LayerNorm.
    pub norm: LayerNorm<D, E, Dev>,
}

/// ViT-S/4 for 32 px (CIFAR): 21,338,496 parameters.
pub type VitS32<Dev = Cpu> = Vit<4, 65, 384, 6, 1536, 1152, 12, f32, Dev>;
/// ViT-S/8 for 64 px (CelebA-size).
pub type VitS64<Dev = Cpu> = Vit<8, 65, 384, 6, 1536, 1152, 12, f32, Dev>;
/// ViT-S/8 for 96 px (STL-10).
pub type VitS96<Dev = Cpu> = Vit<8, 145, 384, 6, 1536, 1152, 12, f32, Dev>;
/// ViT-S/16 for 128 px.
pub type VitS128<Dev = Cpu> = Vit<16, 65, 384, 6, 1536, 1152, 12, f32, Dev>;
/// timm `vit_small_patch16_224` without head: 21,665,664 parameters.
pub type VitS224<Dev = Cpu> = Vit<16, 197, 384, 6, 1536, 1152, 12, f32, Dev>;
/// Width/8 (D = 48, 6 heads of 8), depth 2, patch 4 at 32 px: for tests and demos.
pub type VitTiny32<Dev = Cpu> = Vit<4, 65, 48, 6, 192, 144, 2, f32, Dev>;
/// As [`VitTiny32`], patch 8 at 96 px.
pub type VitTiny96<Dev = Cpu> = Vit<8, 145, 48, 6, 192, 144, 2, f32, Dev>;

/// ViT-S's patch size for an input size, as the presets use it: 4 up to 32 px, 8 up to 96 px,
/// 16 beyond.
pub fn vit_s_patch_size(image_size: usize) -> usize {
    match image_size {
        0..=32 => 4,
        33..=96 => 8,
        _ => 16,
    }
}

/// timm's `trunc_normal_(std=.02)` (bounds ±2 absolute).
pub(crate) const TIMM_TRUNC_NORMAL: Draw = Draw::TruncNormal { std: 0.02, bound: 2.0 };

/// Uniform with standard deviation 0.02 (timm draws a truncated normal of that deviation).
fn small<E: Dtype + Float + SampleUniform, Dev: Device<E>, S: Shape>(
    t: &mut Tensor<S, E, Dev>,
) -> Result<(), Dev::Err> {
    let b = E::from(0.02 * 3f64.sqrt()).expect("bound fits the float type");
    t.try_fill_with_distr(Uniform::new(-b, b))
}

impl<const D: usize, const H: usize, const Q: usize, E: Dtype + Float + SampleUniform, Dev: Device<E>>
    TensorCollection<E, Dev> for Attention<D, H, Q, E, Dev>
{
    type To<E2: Dtype, D2: Device<E2>> = Attention<D, H, Q, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (Self::module("qkv", |s| &s.qkv, |s| &mut s.qkv), Self::module("proj", |s| &s.proj, |s| &mut s.proj)),
            |(qkv, proj)| Attention { qkv, proj },
        )
    }
}

impl<const D: usize, const M: usize, E: Dtype + Float + SampleUniform, Dev: Device<E>> TensorCollection<E, Dev>
    for Mlp<D, M, E, Dev>
{
    type To<E2: Dtype, D2: Device<E2>> = Mlp<D, M, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (Self::module("fc1", |s| &s.fc1, |s| &mut s.fc1), Self::module("fc2", |s| &s.fc2, |s| &mut s.fc2)),
            |(fc1, fc2)| Mlp { fc1, fc2 },
        )
    }
}

impl<const D: usize, const H: usize, const M: usize, const Q: usize, E, Dev> TensorCollection<E, Dev>
    for TransformerBlock<D, H, M, Q, E, Dev>
where
    E: Dtype + Float + SampleUniform,
    Dev: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = TransformerBlock<D, H, M, Q, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("norm1", |s| &s.norm1, |s| &mut s.norm1),
                Self::module("attn", |s| &s.attn, |s| &mut s.attn),
                Self::module("norm2", |s| &s.norm2, |s| &mut s.norm2),
                Self::module("mlp", |s| &s.mlp, |s| &mut s.mlp),
            ),
            |(norm1, attn, norm2, mlp)| TransformerBlock { norm1, attn, norm2, mlp, drop_path: 0.0 },
        )
    }
}

impl<const D: usize, const P: usize, E: Dtype + Float + SampleUniform, Dev: Device<E>> TensorCollection<E, Dev>
    for PatchEmbed<D, P, E, Dev>
{
    type To<E2: Dtype, D2: Device<E2>> = PatchEmbed<D, P, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(Self::module("proj", |s| &s.proj, |s| &mut s.proj), |proj| PatchEmbed { proj })
    }
}

impl<
        const P: usize,
        const T: usize,
        const D: usize,
        const H: usize,
        const M: usize,
        const Q: usize,
        const L: usize,
        E,
        Dev,
    > TensorCollection<E, Dev> for Vit<P, T, D, H, M, Q, L, E, Dev>
where
    E: Dtype + Float + SampleUniform,
    Dev: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Vit<P, T, D, H, M, Q, L, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("cls_token", |s| &s.cls_token, |s| &mut s.cls_token, TensorOptions::reset_with(small)),
                Self::tensor("pos_embed", |s| &s.pos_embed, |s| &mut s.pos_embed, TensorOptions::reset_with(small)),
                Self::module("patch_embed", |s| &s.patch_embed, |s| &mut s.patch_embed),
                Self::module("blocks", |s| &s.blocks, |s| &mut s.blocks),
                Self::module("norm", |s| &s.norm, |s| &mut s.norm),
            ),
            |(cls_token, pos_embed, patch_embed, blocks, norm)| Vit { patch_embed, cls_token, pos_embed, blocks, norm },
        )
    }
}

impl<const D: usize, const H: usize, const Q: usize, Dev: Kernels<f32>, Tp: AnyTape<Dev>> Block<Tokens<D, Tp, Dev>>
    for Attention<D, H, Q, f32, Dev>
{
    type Output = Tokens<D, Tp, Dev>;
    fn run(&mut self, x: Tokens<D, Tp, Dev>, mode: Mode) -> Result<Tokens<D, Tp, Dev>, OpError> {
        if Q != 3 * D || !D.is_multiple_of(H) {
            return Err(OpError::config(
                "attention",
                format!("qkv width {Q} must be 3 × {D}, {H} heads must divide {D}"),
            ));
        }
        let qkv = self.qkv.run(x, mode)?;
        let y = Dev::attention::<Q, D, _>(qkv, H, 1.0 / ((D / H) as f64).sqrt())?;
        self.proj.run(y, mode)
    }
}

impl<const D: usize, const M: usize, Dev: Kernels<f32>, Tp: AnyTape<Dev>> Block<Tokens<D, Tp, Dev>>
    for Mlp<D, M, f32, Dev>
{
    type Output = Tokens<D, Tp, Dev>;
    /// All tokens as one `[N·T, D]` matrix through the fused [`mlp`](crate::mlp) op.
    fn run(&mut self, x: Tokens<D, Tp, Dev>, _: Mode) -> Result<Tokens<D, Tp, Dev>, OpError> {
        let (n, t, _) = *x.shape();
        let rows = x.try_reshape_like(&(n * t, Const::<D>)).map_err(OpError::device)?;
        let (fc1, fc2) = (&self.fc1, &self.fc2);
        let y = Dev::mlp(
            rows,
            fc1.weight.retaped::<Tp>(),
            fc1.bias.retaped::<Tp>(),
            fc2.weight.retaped::<Tp>(),
            fc2.bias.retaped::<Tp>(),
        )?;
        y.try_reshape_like(&(n, t, Const::<D>)).map_err(OpError::device)
    }
}

impl<const D: usize, const H: usize, const M: usize, const Q: usize, Dev: Kernels<f32>, Tp: AnyTape<Dev>>
    Block<Tokens<D, Tp, Dev>> for TransformerBlock<D, H, M, Q, f32, Dev>
{
    type Output = Tokens<D, Tp, Dev>;
    fn run(&mut self, x: Tokens<D, Tp, Dev>, mode: Mode) -> Result<Tokens<D, Tp, Dev>, OpError> {
        let shortcut = x.retaped::<Tp>();
        let y = self.attn.run(self.norm1.run(x, mode)?, mode)?;
        let x = Dev::residual_add(Dev::drop_path(y, self.drop_path, mode.training())?, shortcut, false)?;
        let shortcut = x.retaped::<Tp>();
        let y = self.mlp.run(self.norm2.run(x, mode)?, mode)?;
        Dev::residual_add(Dev::drop_path(y, self.drop_path, mode.training())?, shortcut, false)
    }
}

impl<
        const P: usize,
        const T: usize,
        const D: usize,
        const H: usize,
        const M: usize,
        const Q: usize,
        const L: usize,
        Dev: Storage<f32>,
    > Vit<P, T, D, H, M, Q, L, f32, Dev>
{
    /// Sets timm's stochastic-depth schedule: block `i` drops its branches with probability
    /// `rate · i / (L − 1)`.
    pub fn set_drop_path(&mut self, rate: f64) {
        for (i, block) in self.blocks.modules.iter_mut().enumerate() {
            block.drop_path = if L > 1 { rate * i as f64 / (L - 1) as f64 } else { rate };
        }
    }
}

impl<
        const P: usize,
        const T: usize,
        const D: usize,
        const H: usize,
        const M: usize,
        const Q: usize,
        const L: usize,
        Dev: Kernels<f32>,
    > Backbone<D, Dev> for Vit<P, T, D, H, M, Q, L, f32, Dev>
{
    fn name(&self) -> String {
        format!("vit (patch {P}, {T} tokens, dim {D}, {H} heads, mlp {M}, depth {L})")
    }

    /// timm's `VisionTransformer.init_weights` (mode `''`, `init_weights_vit_timm`): Linear
    /// weights (`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`) truncated N(0, 0.02²) at ±2 and
    /// their biases 0; `pos_embed` truncated N(0, 0.02²); `cls_token` N(0, 1e-6²); the patch
    /// convolution and LayerNorms keep PyTorch's defaults (as built).
    fn library_init(name: &str, shape: &[usize], _: bool) -> Option<Draw> {
        let linear = name.starts_with("blocks.") && (name.contains(".attn.") || name.contains(".mlp."));
        match name {
            "pos_embed" => Some(TIMM_TRUNC_NORMAL),
            "cls_token" => Some(Draw::Normal(1e-6)),
            _ if linear && shape.len() == 2 => Some(TIMM_TRUNC_NORMAL),
            _ if linear && shape.len() == 1 => Some(Draw::Constant(0.0)),
            _ => None,
        }
    }

    fn forward_traced<Tp: AnyTape<Dev>>(
        &mut self,
        x: Tensor<Image<3>, f32, Dev, Tp>,
        mode: Mode,
        trace: &mut StageTrace,
    ) -> Result<Tensor<(usize, Const<D>), f32, Dev, Tp>, OpError> {
        // `mark`: each group's gradients final from here on in the backward pass (`ready`).
        let x = mark(x, &self.patch_embed);
        let y = self.patch_embed.proj.run_on_images(x)?;
        let y = mark(mark(y, &self.cls_token), &self.pos_embed);
        trace.record("patch_embed", &y, || self.patch_embed.num_trainable_params());
        let (n, _, gh, gw) = *y.shape();
        if gh * gw + 1 != T {
            return Err(OpError::config(
                "vit",
                format!("a {gh}x{gw} patch grid gives {} tokens, the position embedding has {T}", gh * gw + 1),
            ));
        }
        let embed = || -> Result<_, Dev::Err> {
            let patches = y.try_reshape_like(&(n, Const::<D>, gh * gw))?.try_permute::<_, Axes3<0, 2, 1>>()?;
            let cls = self
                .cls_token
                .retaped::<Tp>()
                .try_reshape::<Rank1<D>>()?
                .try_broadcast_like(&(n, Const::<1>, Const::<D>))?;
            let tokens = (cls, patches).try_concat_along(Axis::<1>)?;
            let shape = *tokens.shape();
            let pos = self
                .pos_embed
                .retaped::<Tp>()
                .try_reshape_like(&(T, Const::<D>))?
                .try_broadcast_like::<_, Axis<0>>(&shape)?;
            tokens.try_add(pos)
        };
        let tokens = embed().map_err(OpError::device)?;
        trace.record("cls_token+pos_embed", &tokens, || T * D + D);
        let mut tokens = tokens;
        for block in self.blocks.modules.iter_mut() {
            tokens = block.run(mark(tokens, &*block), mode)?;
        }
        trace.record("blocks", &tokens, || self.blocks.num_trainable_params());
        let tokens = self.norm.run(mark(tokens, &self.norm), mode)?;
        trace.record("norm", &tokens, || self.norm.num_trainable_params());
        let cls = tokens
            .try_slice((.., 0..1, ..))
            .and_then(|t| t.try_reshape_like(&(n, Const::<D>)))
            .map_err(OpError::device)?;
        trace.record("class token", &cls, || 0);
        Ok(cls)
    }
}
