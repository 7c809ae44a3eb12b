//! Pooling-based Vision Transformer (Heo et al. 2021) as timm's `PoolingVisionTransformer`
//! without `head`, with timm's parameter names (`patch_embed.conv`, `pos_embed`, `cls_token`,
//! `transformers.1.pool.conv`, `transformers.1.pool.fc`, `transformers.1.blocks.0.attn.qkv`,
//! `norm`).
//!
//! | stage          | tokens at 224 px (32 px) | width × heads, depth | layers                         |
//! |----------------|--------------------------|----------------------|--------------------------------|
//! | patch_embed    | 27² (15²)                | 64                   | conv P×P stride ST (16/8; 4/2 at 32 px, 8/4 at 96 px), + `pos_embed` `[1, 64, G, G]` |
//! | transformers.0 | 27² + 1                  | 32 × 2, 2            | ViT blocks (class token prepended) |
//! | transformers.1 | 14² + 1 (8² + 1)         | 32 × 4, 6            | pool: depthwise 3×3/2 conv 64 → 128 on the grid, Linear 64 → 128 on the class token; blocks |
//! | transformers.2 | 7² + 1 (4² + 1)          | 32 × 8, 4            | pool 128 → 256; blocks          |
//! | norm           | class token, 256         |                      | LayerNorm                      |
//!
//! The position embedding fixes the grid `G` (in the type, like ViT's token count); the class
//! token after the final norm is the feature vector. Stages are types ([`PitStage`],
//! [`PitPoolStage`]) so the table's widths are spelled in the presets.

use dfdx::nn::modules::{Linear, Repeated};
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::nn::NumParams;
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

use super::vit::{Tokens, TransformerBlock};
use super::Backbone;
use crate::backbones::trace::StageTrace;
use crate::init::Draw;
use crate::layers::{AnyTape, Block, Conv2dBias, LayerNorm, Mode};
use crate::ready::mark;
use crate::{Image, Kernels, OpError};

/// timm's `Pooling`: the token grid through a depthwise-grouped 3×3 stride-2 conv `I → O`
/// (`groups = I`), the class token through a Linear `I → O`.
#[derive(Clone, Debug)]
pub struct Pooling<const I: usize, const O: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// `[O, 1, 3, 3]` + bias, stride 2, padding 1.
    pub conv: Conv2dBias<I, O, 3, 2, 1, 1, E, D>,
    /// `I → O`.
    pub fc: Linear<I, O, E, D>,
}

/// A stage without pooling (the first): `L` blocks of width `D`, `H` heads, MLP `M`, `Q = 3D`.
#[derive(Clone, Debug)]
pub struct PitStage<
    const D: usize,
    const H: usize,
    const M: usize,
    const Q: usize,
    const L: usize,
    E: Dtype = f32,
    Dev: Storage<E> = Cpu,
> {
    /// The blocks.
    pub blocks: Repeated<TransformerBlock<D, H, M, Q, E, Dev>, L>,
}

/// A stage that first pools `I → D` channels (halving the grid), then runs `L` blocks.
#[derive(Clone, Debug)]
pub struct PitPoolStage<
    const I: usize,
    const D: usize,
    const H: usize,
    const M: usize,
    const Q: usize,
    const L: usize,
    E: Dtype = f32,
    Dev: Storage<E> = Cpu,
> {
    /// Grid and class-token pooling.
    pub pool: Pooling<I, D, E, Dev>,
    /// The blocks.
    pub blocks: Repeated<TransformerBlock<D, H, M, Q, E, Dev>, L>,
}

/// The patch embedding: a `P×P` stride-`ST` convolution with bias (`patch_embed.conv`).
#[derive(Clone, Debug)]
pub struct ConvEmbedding<const D: usize, const P: usize, const ST: usize, E: Dtype = f32, Dev: Storage<E> = Cpu> {
    /// `3 → D`.
    pub conv: Conv2dBias<3, D, P, ST, 0, 3, E, Dev>,
}

/// A PiT stage on (grid `[N, I, h, w]`, class token `[N, 1, I]`), giving width `O`.
pub trait TokenStage<const I: usize, const O: usize, Dev: Kernels<f32> = Cpu>: TensorCollection<f32, Dev> {
    /// Runs the stage.
    #[allow(clippy::type_complexity)]
    fn run_stage<T: AnyTape<Dev>>(
        &mut self,
        x: Tensor<Image<I>, f32, Dev, T>,
        cls: Tokens<I, T, Dev>,
        mode: Mode,
    ) -> Result<(Tensor<Image<O>, f32, Dev, T>, Tokens<O, T, Dev>), OpError>;
}

/// PiT: patch `P`, patch stride `ST`, grid `G`, stage widths `D0`, `D1`, `D2`, stages
/// `S0..S2`.
#[derive(Clone, Debug)]
pub struct Pit<
    const P: usize,
    const ST: usize,
    const G: usize,
    const D0: usize,
    const D1: usize,
    const D2: usize,
    S0,
    S1,
    S2,
    E: Dtype = f32,
    Dev: Storage<E> = Cpu,
> {
    /// Pixels to the token grid.
    pub patch_embed: ConvEmbedding<D0, P, ST, E, Dev>,
    /// `[1, D0, G, G]`.
    pub pos_embed: Tensor<Rank4<1, D0, G, G>, E, Dev>,
    /// `[1, 1, D0]`.
    pub cls_token: Tensor<Rank3<1, 1, D0>, E, Dev>,
    /// The three stages.
    pub transformers: (S0, S1, S2),
    /// Final LayerNorm (on the class token).
    pub norm: LayerNorm<D2, E, Dev>,
}

/// PiT-Ti (widths 64/128/256, heads 2/4/8, depths 2/6/4, MLP 4×) with patch `P`, stride
/// `ST`, grid `G`.
pub type PitTi<const P: usize, const ST: usize, const G: usize, Dev = Cpu> = Pit<
    P,
    ST,
    G,
    64,
    128,
    256,
    PitStage<64, 2, 256, 192, 2, f32, Dev>,
    PitPoolStage<64, 128, 4, 512, 384, 6, f32, Dev>,
    PitPoolStage<128, 256, 8, 1024, 768, 4, f32, Dev>,
    f32,
    Dev,
>;

/// timm `pit_ti_224` without head: patch 16 stride 8, 27² grid; 4,590,272 parameters.
pub type PitTi224<Dev = Cpu> = PitTi<16, 8, 27, Dev>;
/// PiT-Ti for 32 px: patch 4 stride 2, 15² grid.
pub type PitTi32<Dev = Cpu> = PitTi<4, 2, 15, Dev>;
/// PiT-Ti for 64 px (CelebA-size inputs): patch 8 stride 4, 15² grid.
pub type PitTi64<Dev = Cpu> = PitTi<8, 4, 15, Dev>;
/// PiT-Ti for 96 px: patch 8 stride 4, 23² grid.
pub type PitTi96<Dev = Cpu> = PitTi<8, 4, 23, Dev>;
/// PiT-Ti for 128 px: patch 16 stride 8, 15² grid.
pub type PitTi128<Dev = Cpu> = PitTi<16, 8, 15, Dev>;
/// Reduced PiT (widths 16/32/64, heads 2/4/8, one block per stage) at 32 px, for tests and
/// demos: 64 features.
pub type PitTiny32<Dev = Cpu> = Pit<
    4,
    2,
    15,
    16,
    32,
    64,
    PitStage<16, 2, 64, 48, 1, f32, Dev>,
    PitPoolStage<16, 32, 4, 128, 96, 1, f32, Dev>,
    PitPoolStage<32, 64, 8, 256, 192, 1, f32, Dev>,
    f32,
    Dev,
>;

fn small<E: Dtype + Float + SampleUniform, Dev: Device<E>, S: Shape>(
    t: &mut Tensor<S, E, Dev>,
) -> Result<(), Dev::Err> {
    let b = E::from(0.02 * 3f64.sqrt()).expect("bound fits the float type");
    t.try_fill_with_distr(Uniform::new(-b, b))
}

impl<const I: usize, const O: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D>
    for Pooling<I, O, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Pooling<I, O, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (Self::module("conv", |s| &s.conv, |s| &mut s.conv), Self::module("fc", |s| &s.fc, |s| &mut s.fc)),
            |(conv, fc)| Pooling { conv, fc },
        )
    }
}

impl<const D: usize, const H: usize, const M: usize, const Q: usize, const L: usize, E, Dev> TensorCollection<E, Dev>
    for PitStage<D, H, M, Q, L, E, Dev>
where
    E: Dtype + Float + SampleUniform,
    Dev: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = PitStage<D, H, M, Q, L, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(Self::module("blocks", |s| &s.blocks, |s| &mut s.blocks), |blocks| PitStage { blocks })
    }
}

impl<const I: usize, const D: usize, const H: usize, const M: usize, const Q: usize, const L: usize, E, Dev>
    TensorCollection<E, Dev> for PitPoolStage<I, D, H, M, Q, L, E, Dev>
where
    E: Dtype + Float + SampleUniform,
    Dev: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = PitPoolStage<I, D, H, M, Q, L, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("pool", |s| &s.pool, |s| &mut s.pool),
                Self::module("blocks", |s| &s.blocks, |s| &mut s.blocks),
            ),
            |(pool, blocks)| PitPoolStage { pool, blocks },
        )
    }
}

impl<const D: usize, const P: usize, const ST: usize, E: Dtype + Float + SampleUniform, Dev: Device<E>>
    TensorCollection<E, Dev> for ConvEmbedding<D, P, ST, E, Dev>
{
    type To<E2: Dtype, D2: Device<E2>> = ConvEmbedding<D, P, ST, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(Self::module("conv", |s| &s.conv, |s| &mut s.conv), |conv| ConvEmbedding { conv })
    }
}

impl<
        const P: usize,
        const ST: usize,
        const G: usize,
        const D0: usize,
        const D1: usize,
        const D2: usize,
        S0,
        S1,
        S2,
        E,
        Dev,
    > TensorCollection<E, Dev> for Pit<P, ST, G, D0, D1, D2, S0, S1, S2, E, Dev>
where
    S0: TensorCollection<E, Dev>,
    S1: TensorCollection<E, Dev>,
    S2: TensorCollection<E, Dev>,
    E: Dtype + Float + SampleUniform,
    Dev: Device<E>,
{
    type To<E2: Dtype, D2_: Device<E2>> =
        Pit<P, ST, G, D0, D1, D2, S0::To<E2, D2_>, S1::To<E2, D2_>, S2::To<E2, D2_>, E2, D2_>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("pos_embed", |s| &s.pos_embed, |s| &mut s.pos_embed, TensorOptions::reset_with(small)),
                Self::tensor("cls_token", |s| &s.cls_token, |s| &mut s.cls_token, TensorOptions::reset_with(small)),
                Self::module("patch_embed", |s| &s.patch_embed, |s| &mut s.patch_embed),
                Self::module("transformers", |s| &s.transformers, |s| &mut s.transformers),
                Self::module("norm", |s| &s.norm, |s| &mut s.norm),
            ),
            |(pos_embed, cls_token, patch_embed, transformers, norm)| Pit {
                patch_embed,
                pos_embed,
                cls_token,
                transformers,
                norm,
            },
        )
    }
}

/// Class token and grid through `blocks`: grid flattened, class token prepended, blocks run,
/// split back.
#[allow(clippy::type_complexity)]
fn run_blocks<
    const D: usize,
    const H: usize,
    const M: usize,
    const Q: usize,
    const L: usize,
    Dev: Kernels<f32>,
    T: AnyTape<Dev>,
>(
    blocks: &mut Repeated<TransformerBlock<D, H, M, Q, f32, Dev>, L>,
    x: Tensor<Image<D>, f32, Dev, T>,
    cls: Tokens<D, T, Dev>,
    mode: Mode,
) -> Result<(Tensor<Image<D>, f32, Dev, T>, Tokens<D, T, Dev>), OpError> {
    let (n, _, h, w) = *x.shape();
    let join = || -> Result<_, Dev::Err> {
        let grid = x.try_reshape_like(&(n, Const::<D>, h * w))?.try_permute::<_, Axes3<0, 2, 1>>()?;
        (cls, grid).try_concat_along(Axis::<1>)
    };
    let tokens = blocks.run(join().map_err(OpError::device)?, mode)?;
    // The class token keeps the tape: it is what the backbone returns (the last grid is dropped).
    let split = || -> Result<_, Dev::Err> {
        let grid = tokens.retaped::<T>().try_slice((.., 1.., ..))?;
        let cls = tokens.try_slice((.., 0..1, ..))?;
        let x = grid.try_permute::<_, Axes3<0, 2, 1>>()?.try_reshape_like(&(n, Const::<D>, h, w))?;
        Ok((x, cls))
    };
    split().map_err(OpError::device)
}

impl<const D: usize, const H: usize, const M: usize, const Q: usize, const L: usize, Dev: Kernels<f32>>
    TokenStage<D, D, Dev> for PitStage<D, H, M, Q, L, f32, Dev>
{
    fn run_stage<T: AnyTape<Dev>>(
        &mut self,
        x: Tensor<Image<D>, f32, Dev, T>,
        cls: Tokens<D, T, Dev>,
        mode: Mode,
    ) -> Result<(Tensor<Image<D>, f32, Dev, T>, Tokens<D, T, Dev>), OpError> {
        run_blocks(&mut self.blocks, x, cls, mode)
    }
}

impl<
        const I: usize,
        const D: usize,
        const H: usize,
        const M: usize,
        const Q: usize,
        const L: usize,
        Dev: Kernels<f32>,
    > TokenStage<I, D, Dev> for PitPoolStage<I, D, H, M, Q, L, f32, Dev>
{
    fn run_stage<T: AnyTape<Dev>>(
        &mut self,
        x: Tensor<Image<I>, f32, Dev, T>,
        cls: Tokens<I, T, Dev>,
        mode: Mode,
    ) -> Result<(Tensor<Image<D>, f32, Dev, T>, Tokens<D, T, Dev>), OpError> {
        let x = self.pool.conv.run(x, mode)?;
        let cls = self.pool.fc.run(cls, mode)?;
        run_blocks(&mut self.blocks, x, cls, mode)
    }
}

impl<
        const P: usize,
        const ST: usize,
        const G: usize,
        const D0: usize,
        const D1: usize,
        const D2: usize,
        S0,
        S1,
        S2,
        Dev: Kernels<f32>,
    > Backbone<D2, Dev> for Pit<P, ST, G, D0, D1, D2, S0, S1, S2, f32, Dev>
where
    S0: TokenStage<D0, D0, Dev>,
    S1: TokenStage<D0, D1, Dev>,
    S2: TokenStage<D1, D2, Dev>,
{
    fn name(&self) -> String {
        format!("pit (patch {P} stride {ST}, grid {G}, widths {D0}/{D1}/{D2})")
    }

    /// timm's `PoolingVisionTransformer.__init__`: `pos_embed` and `cls_token` truncated
    /// N(0, 0.02²), LayerNorms at 1 and 0 (as built); every other layer keeps PyTorch's
    /// default (timm does not redraw them).
    fn library_init(name: &str, _: &[usize], _: bool) -> Option<Draw> {
        matches!(name, "pos_embed" | "cls_token").then_some(super::vit::TIMM_TRUNC_NORMAL)
    }

    fn forward_traced<T: AnyTape<Dev>>(
        &mut self,
        x: Tensor<Image<3>, f32, Dev, T>,
        mode: Mode,
        trace: &mut StageTrace,
    ) -> Result<Tensor<(usize, Const<D2>), f32, Dev, T>, OpError> {
        // `mark`: each group's gradients final from here on in the backward pass (`ready`).
        let x = mark(x, &self.patch_embed);
        let x = self.patch_embed.conv.run_on_images(x)?;
        let x = mark(mark(x, &self.pos_embed), &self.cls_token);
        let (n, _, gh, gw) = *x.shape();
        if (gh, gw) != (G, G) {
            return Err(OpError::config(
                "pit",
                format!("the patch grid is {gh}x{gw}, the position embedding is {G}x{G}"),
            ));
        }
        let shape = *x.shape();
        let pos_embed = &self.pos_embed;
        let add_pos = || -> Result<_, Dev::Err> {
            let pos = pos_embed
                .retaped::<T>()
                .try_reshape_like(&(Const::<D0>, G, G))?
                .try_broadcast_like::<_, Axis<0>>(&shape)?;
            x.try_add(pos)
        };
        let x = add_pos().map_err(OpError::device)?;
        trace.record("patch_embed+pos_embed", &x, || self.patch_embed.num_trainable_params() + D0 * G * G);
        let cls_token = &self.cls_token;
        let cls = || -> Result<_, Dev::Err> {
            cls_token
                .retaped::<T>()
                .try_reshape::<Rank1<D0>>()?
                .try_broadcast_like(&(n, Const::<1>, Const::<D0>))?
                .try_reshape_like(&(n, 1, Const::<D0>))
        };
        let cls = cls().map_err(OpError::device)?;
        let t = &mut self.transformers;
        let (x, cls) = t.0.run_stage(mark(x, &t.0), cls, mode)?;
        trace.record("transformers.0", &x, || t.0.num_trainable_params() + D0);
        let (x, cls) = t.1.run_stage(mark(x, &t.1), cls, mode)?;
        trace.record("transformers.1", &x, || t.1.num_trainable_params());
        let (x, cls) = t.2.run_stage(mark(x, &t.2), cls, mode)?;
        trace.record("transformers.2", &x, || t.2.num_trainable_params());
        drop(x);
        let cls =
            self.norm.run(mark(cls, &self.norm), mode)?.try_reshape_like(&(n, Const::<D2>)).map_err(OpError::device)?;
        trace.record("norm (class token)", &cls, || self.norm.num_trainable_params());
        Ok(cls)
    }
}
