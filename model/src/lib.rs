//! The model layer of siamlab on dfdx 0.13, stable Rust: the ops dfdx lacks (or runs slowly)
//! as custom ops with forward and backward through dfdx's public tape API, the layers and the
//! four backbones built from them, and SimSiam — on [`Cpu`](dfdx::prelude::Cpu) with the
//! crate's own kernels, and on dfdx's `Cuda` with the `cuda` feature.
//!
//! - **Ops**: [`conv2d`] / [`conv2d_bias`] (stride, padding, groups — depthwise included — with
//!   PyTorch's `[out, in/groups, k, k]` weights), [`max_pool2d`], [`avg_pool2d`],
//!   [`global_avg_pool2d`], [`batch_norm`] (optionally fused with ReLU), [`layer_norm`],
//!   [`linear`] / [`linear_no_bias`], [`attention`] (softmax(q·kᵀ)·v per head in one op; also
//!   as its pieces [`split_heads`], [`batched_matmul`], [`scaled_softmax`], [`merge_heads`]),
//!   and the element-wise
//!   pieces: [`silu`], [`drop_path`], [`scale_channels`] (squeeze-and-excitation). Images are
//!   [`Image<C>`](Image) tensors, `[N, C, H, W]` with the channel count in the type and batch and
//!   spatial sizes at run time. Every op works with `NoneTape` (inference) and `OwnedTape`
//!   (training) and with `f32` or `f64` ([`Element`]). Shape mismatches a type cannot catch
//!   (groups, kernel larger than the input) are [`OpError`]s.
//! - **[`layers`]**: convolution, BatchNorm, LayerNorm and Linear layers with PyTorch's parameter
//!   names, run in training or evaluation [`Mode`](layers::Mode) through the
//!   [`Block`](layers::Block) trait.
//! - **[`backbones`]**: ResNet-18 (CIFAR and ImageNet stems), EfficientNet-B0, ViT-S, PiT-Ti and
//!   reduced presets, one file each; the architecture table is the type, parameter names are
//!   the torchvision / timm `state_dict` keys ([`named_tensors`]), and [`summary`] tabulates a
//!   backbone as torchinfo does.
//! - **[`weights`]**: torchvision / timm `state_dict`s in (shapes checked, position embeddings
//!   and patch kernels of another input size resampled as timm does) and out (loadable with
//!   `strict=True`).
//! - **[`init`]**: the libraries' initialisation schemes (torchvision's Kaiming fan-out, timm's
//!   truncated normals) over the layers' PyTorch defaults, chosen per run.
//! - **[`simsiam`]**: projector, predictor, the stop-gradient loss. (The classification head,
//!   whose class count is known only at run time, is the trainer's.)
//!
//! Kernels: im2col + GEMM on the `gemm` crate (the library dfdx's CPU backend uses, in a
//! version with AVX-512 on stable Rust), with small feature maps batched into wide GEMMs and the
//! stride-1 input gradient computed as a flipped-kernel convolution; direct vectorized kernels
//! for depthwise convolutions; the batch (or channels, rows) spread over the rayon pool; scratch
//! buffers pooled per thread. Inputs are read with one `memcpy` each (dfdx 0.13 exposes no
//! borrowed view of a tensor's storage); gradients are read and written in place.
//! `benches/conv.rs` times ResNet-18 and EfficientNet shapes against `benches/conv_peer.py`
//! (PyTorch); `benches/simsiam.rs` times SimSiam training steps per backbone against
//! `shared/bench/peer_train_bench.py`.
//!
//! Devices: layers, backbones and SimSiam are generic over `D:` [`Kernels<f32>`](Kernels)
//! (`Cpu` unless named, so `ResNet18Cifar` is `ResNet18Cifar<Cpu>`), and call every op
//! through it: the kernels above on `Cpu`; on `Cuda` the [`composed`] versions, built from
//! dfdx's own ops (its CUDA kernels and cuBLAS). [`check::compare_ops`] runs every op of a
//! device against the `Cpu` kernels, forward and backward (`siamlab bench ops`).
//!
//! This crate knows nothing of data loading.
//!
//! ```
//! use dfdx::prelude::*;
//! use siamlab_model::{conv2d, global_avg_pool2d, max_pool2d, Conv2dConfig, Pool2dConfig};
//!
//! let dev = Cpu::default();
//! let x = dev.sample_normal_like(&(4, Const::<3>, 32, 32));
//! let w: Tensor<Rank4<8, 3, 3, 3>, f32, _> = dev.sample_normal();
//! let y = conv2d(x.leaky_trace(), w, Conv2dConfig::default().padding(1)).unwrap();
//! let y = max_pool2d(y, Pool2dConfig::new(2)).unwrap();
//! assert_eq!(y.shape(), &(4, Const::<8>, 16, 16));
//! let feats = global_avg_pool2d(y).unwrap(); // [4, 8]
//! let grads = feats.square().mean().backward();
//! assert_eq!(grads.get(&x).shape(), &(4, Const::<3>, 32, 32));
//! ```
//!
//! A backbone in SimSiam, one training step:
//!
//! ```
//! use dfdx::optim::{Adam, AdamConfig, Optimizer};
//! use dfdx::prelude::*;
//! use siamlab_model::backbones::ResNet18CifarTiny;
//! use siamlab_model::layers::Mode;
//! use siamlab_model::simsiam::SimSiamTiny;
//!
//! let dev = Cpu::seed_from_u64(0);
//! let mut model = SimSiamTiny::<ResNet18CifarTiny, 64>::build(&dev);
//! let mut opt = Adam::new(&model, AdamConfig::default());
//! let x1: Tensor<_, f32, _> = dev.sample_normal_like(&(8, Const::<3>, 32, 32));
//! let x2: Tensor<_, f32, _> = dev.sample_normal_like(&(8, Const::<3>, 32, 32));
//! let grads = model.alloc_grads();
//! let loss = model.forward_loss(x1.traced(grads), x2.leaky_traced(), Mode::Train).unwrap();
//! let grads = loss.backward();
//! opt.update(&mut model, &grads).unwrap();
//! ```
#![deny(missing_docs)]

pub mod backbones;
pub mod check;
mod device;
mod element;
mod error;
pub mod init;
pub mod layers;
pub mod memory;
mod names;
mod ops;
pub mod peak;
pub mod profile;
pub mod ready;
mod scoped;
mod simd;
pub mod simsiam;
mod summary;
mod sync;
pub mod weights;

pub use backbones::trace::{StageTrace, SummaryRow};
pub use device::Kernels;
pub use element::Element;
pub use error::OpError;
pub use names::{
    named_tensors, visit_grads, visit_tensors, walk_grads, walk_tensors, GradFn, GradMutFn, NamedTensor, ReadFn, Slot,
    TensorFn,
};
#[cfg(feature = "cuda")]
pub use names::{walk_cuda_grads, CudaGradMutFn};
pub use ops::composed;
pub use ops::{
    attention, avg_pool2d, batch_norm, batched_matmul, conv2d, conv2d_bias, drop_path, gelu, global_avg_pool2d,
    layer_norm, linear, linear_no_bias, max_pool2d, merge_heads, mlp, residual_add, scale_channels, scaled_softmax,
    set_winograd, silu, split_heads, BatchNormConfig, Conv2dConfig, Image, Pool2dConfig,
};
pub use scoped::Scoped;
pub use summary::{summary, Summary};
pub use sync::{sync_batch_norm, StatsReducer, SyncGuard};
