//! The models a run trains, behind object-safe traits so the loops are compiled once: a
//! backbone chosen by name at run time ([`siamlab_model::backbones::with_backbone`]) becomes a
//! [`SslNet`] (SimSiam) or a [`ClsNet`] (backbone + linear head).

use std::rc::Rc;

use dfdx::nn::ZeroGrads;
use dfdx::prelude::*;
use siamlab_model::backbones::{with_backbone, Backbone, BackboneVisitor};
use siamlab_model::init::{initialise, InitScheme};
use siamlab_model::layers::Mode;
use siamlab_model::ready::{armed, watch_grads, GradsReady};
use siamlab_model::simsiam::{simsiam_loss, Predictor, Projector, SimSiam};
use siamlab_model::weights::{import_state_dict, ImportOptions, ImportReport};
use siamlab_model::{walk_grads, Image, Kernels, OpError};
use siamlab_world::{all_reduce_mean, World, BUCKET_BYTES};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::head::{loss_of, Head, Loss, Matrix};
use crate::optim::Optimizer;
use crate::overlap::{self, Overlap};
use crate::params::{self, StateDict, TensorFn};
use crate::prefetch::{Uploaded, Uploader};

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetInfo {
    /// The backbone's name as given (`resnet18_tiny`).
    pub backbone: String,
    /// Its architecture (`resnet18 (cifar stem)`).
    pub architecture: String,
    /// Input size in pixels.
    pub image_size: usize,
    /// Feature dimension of the backbone.
    pub features: usize,
    /// Trainable parameters of the backbone.
    pub backbone_params: usize,
}

/// A batch of images `[n, 3, h, w]` in a flat buffer.
#[derive(Debug, Clone, Copy)]
pub struct Images<'a> {
    /// The pixels.
    pub data: &'a [f32],
    /// Batch size.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Images<'_> {
    fn tensor<D: Device<f32>>(&self, dev: &D) -> Result<Tensor<Image<3>, f32, D>> {
        if self.data.len() != self.n * 3 * self.h * self.w {
            return Err(Error::config(format!(
                "image buffer of {} values is not [{}, 3, {}, {}]",
                self.data.len(),
                self.n,
                self.h,
                self.w
            )));
        }
        Ok(dev
            .try_tensor_from_vec(self.data.to_vec(), (self.n, Const::<3>, self.h, self.w))
            .map_err(OpError::device)?)
    }
}

/// Statistics of one SimSiam micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MicroStats {
    /// The loss (before scaling for accumulation).
    pub loss: f32,
    /// Mean over dimensions of the per-dimension std of the l2-normalized projections `z1`
    /// (collapse monitor: about `1/√D` when healthy, 0 when collapsed).
    pub z_std: f32,
}

/// SimSiam on some backbone.
pub trait SslNet {
    /// What was built.
    fn info(&self) -> &NetInfo;
    /// Projection dimension `D`.
    fn proj_dim(&self) -> usize;
    /// Forward and backward of one micro-batch of two views; gradients of `scale · loss`
    /// accumulate until [`step`](Self::step).
    fn train_micro(&mut self, v1: Images<'_>, v2: Images<'_>, scale: f32) -> Result<MicroStats>;
    /// What moves batches to this net's device (for [`crate::prefetch::DevicePrefetch`]).
    fn uploader(&self) -> Box<dyn Uploader>;
    /// [`train_micro`](Self::train_micro) on two views already on the device; `meanwhile`
    /// runs once the step's work is queued on the device and before its loss is read (the
    /// time to upload the next batch: [`crate::prefetch::DevicePrefetch::fill`]).
    fn train_uploaded(&mut self, views: Uploaded, scale: f32, meanwhile: &mut dyn FnMut()) -> Result<MicroStats>;
    /// Applies the accumulated gradients with `opt` at learning rate `lr`, then zeroes them.
    fn step(&mut self, opt: &mut Optimizer, lr: f64) -> Result<()>;
    /// Replaces the accumulated gradients with their average over the ranks of `world` (before
    /// [`step`](Self::step), once per optimizer step), laid end to end and all-reduced in
    /// buckets of [`siamlab_world::BUCKET_BYTES`] — or, on GPU ranks that joined NCCL, in place
    /// in GPU memory; returns the bytes all-reduced.
    fn average_grads(&mut self, world: &World) -> Result<usize>;
    /// Says that the next micro-batch ends an optimizer step of a run over `world`: its
    /// backward pass starts averaging the gradients as they become final, bucket by bucket
    /// ([`crate::overlap`]; CPU ranks), and [`average_grads`](Self::average_grads) finishes
    /// that average. Elsewhere (one rank, GPUs) nothing changes.
    fn overlap_next(&mut self, world: &World);
    /// Backbone features `[n, F]` in evaluation mode.
    fn features(&mut self, x: Images<'_>) -> Result<Vec<f32>>;
    /// Mean cosine similarity `½·cos(p1, z2) + ½·cos(p2, z1)` in evaluation mode (the negated
    /// loss; SimSiam's Figure 3 plots it on held-out pairs).
    fn similarity(&mut self, v1: Images<'_>, v2: Images<'_>) -> Result<f32>;
    /// Walks every tensor (`backbone.*`, `projector.*`, `predictor.*`).
    fn walk(&mut self, f: &mut TensorFn<'_>) -> Result<()>;
    /// The backbone's tensors with its own names (`conv1.weight`), for `backbone.safetensors`.
    fn backbone_state(&mut self) -> Result<StateDict>;
    /// The gradients accumulated since the last [`step`](Self::step), one per trainable tensor
    /// under the names of [`walk`](Self::walk) (zeros before any micro-batch).
    fn grads(&mut self) -> Result<StateDict>;
}

/// A backbone and a linear head, for finetuning and evaluation.
pub trait ClsNet {
    /// What was built.
    fn info(&self) -> &NetInfo;
    /// Number of outputs of the head.
    fn classes(&self) -> usize;
    /// Freezes the backbone (linear evaluation): only the head trains, BatchNorm statistics stay.
    fn freeze_backbone(&mut self, frozen: bool);
    /// The gradients accumulated since the last [`step`](Self::step), one per trainable tensor
    /// under the names of [`walk`](Self::walk) (zeros before any micro-batch; the head's only
    /// while the backbone is frozen).
    fn grads(&mut self) -> Result<StateDict>;
    /// Every rank's gradients (backbone unless frozen, and head) replaced by their mean over
    /// `world`, as [`SslNet::average_grads`]; returns the bytes all-reduced.
    fn average_grads(&mut self, world: &World) -> Result<usize>;
    /// Says that the next micro-batch ends an optimizer step of a run over `world`: its
    /// backward pass starts averaging the backbone's gradients as they become final, as
    /// [`SslNet::overlap_next`] (not while the backbone is frozen).
    fn overlap_next(&mut self, world: &World);
    /// Forward and backward of a micro-batch with `loss` against `targets` (`[n, K]`, one-hot
    /// classes or 0/1 attributes); returns the loss.
    fn train_micro(&mut self, x: Images<'_>, loss: Loss, targets: Vec<f32>, scale: f32) -> Result<f32>;
    /// What moves batches (one view) to this net's device (for [`crate::prefetch::DevicePrefetch`]).
    fn uploader(&self) -> Box<dyn Uploader>;
    /// [`train_micro`](Self::train_micro) on a batch already on the device; `meanwhile` runs once
    /// the step's work is queued and before its loss is read (the time to upload the next batch).
    fn train_uploaded(
        &mut self,
        x: Uploaded,
        loss: Loss,
        targets: Vec<f32>,
        scale: f32,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<f32>;
    /// Applies the accumulated gradients, then zeroes them.
    fn step(&mut self, opt: &mut Optimizer, lr: f64) -> Result<()>;
    /// Logits `[n, K]` in evaluation mode.
    fn logits(&mut self, x: Images<'_>) -> Result<Vec<f32>>;
    /// Backbone features `[n, F]` in evaluation mode.
    fn features(&mut self, x: Images<'_>) -> Result<Vec<f32>>;
    /// Linear evaluation: features `[n, F]` and targets `[n, K]` copied to the device once, for
    /// [`train_head`](Self::train_head) and [`head_logits`](Self::head_logits).
    fn upload_features(&self, features: &[f32], targets: &[f32], n: usize) -> Result<Uploaded>;
    /// Forward and backward of the head alone on the rows `rows` of a feature set (gathered on
    /// the device); gradients accumulate until [`step`](Self::step). Returns the loss.
    fn train_head(&mut self, set: &Uploaded, rows: &[usize], loss: Loss) -> Result<f32>;
    /// The head's logits `[n, K]` on every row of a feature set.
    fn head_logits(&mut self, set: &Uploaded) -> Result<Vec<f32>>;
    /// Walks every tensor (`backbone.*`, `fc.*`).
    fn walk(&mut self, f: &mut TensorFn<'_>) -> Result<()>;
    /// Loads the backbone from a state dict with the backbone's own names, which are the
    /// torchvision / timm keys ([`siamlab_model::weights::import_state_dict`]: every key and
    /// shape checked, classifier keys skipped, position embeddings and patch kernels of another
    /// input size resampled as timm does); returns what was done, for the log.
    fn load_backbone(&mut self, dict: &StateDict, file: &std::path::Path) -> Result<ImportReport>;
}

/// Mean per-dimension std of the l2-normalized rows of `z` (`[n, d]`).
pub fn normalized_std(z: &[f32], d: usize) -> f32 {
    let n = z.len() / d.max(1);
    if n < 2 {
        return 0.0;
    }
    let mut sum = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for row in z.chunks_exact(d) {
        let norm = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt().max(1e-12);
        for j in 0..d {
            let v = row[j] as f64 / norm;
            sum[j] += v;
            sq[j] += v * v;
        }
    }
    let nf = n as f64;
    let stds: f64 =
        (0..d).map(|j| ((sq[j] - sum[j] * sum[j] / nf) / (nf - 1.0)).max(0.0).sqrt()).sum::<f64>() / d as f64;
    stds as f32
}

/// A device error as the trainer's error.
fn dev_err(e: impl std::fmt::Debug) -> Error {
    Error::Model(OpError::device(e))
}

struct Ssl<B, const F: usize, const D: usize, const H: usize, Dv: Kernels<f32>> {
    model: SimSiam<B, F, D, H, f32, Dv>,
    grads: Option<Gradients<f32, Dv>>,
    dev: Dv,
    info: NetInfo,
    /// The average that the next backward pass starts ([`SslNet::overlap_next`]).
    overlap: Option<Rc<Overlap>>,
    /// Trainable values of the model.
    trainable: usize,
}

/// The views of a batch on device `Dv`, as [`DevUploader`] uploads them.
type Views<Dv> = Vec<Tensor<Image<3>, f32, Dv>>;

/// Uploads batches of `views` views to device `Dv` (a clone of the net's device) for `what`.
struct DevUploader<Dv> {
    dev: Dv,
    views: usize,
    what: &'static str,
}

impl<Dv: Kernels<f32>> Uploader for DevUploader<Dv> {
    fn upload(&self, views: &[&[f32]], n: usize, h: usize, w: usize) -> Result<Uploaded> {
        if views.len() != self.views {
            let s = if self.views == 1 { "" } else { "s" };
            return Err(Error::config(format!(
                "{} takes {} view{s}, the batch has {}",
                self.what,
                self.views,
                views.len()
            )));
        }
        let x: Views<Dv> =
            views.iter().map(|&v| Images { data: v, n, h, w }.tensor(&self.dev)).collect::<Result<_>>()?;
        Ok(Uploaded(Box::new(x)))
    }
}

/// The views inside an [`Uploaded`] batch, `count` of them on device `Dv`.
fn views_of<Dv: Kernels<f32>>(up: Uploaded, count: usize) -> Result<Views<Dv>> {
    match up.0.downcast::<Views<Dv>>() {
        Ok(v) if v.len() == count => Ok(*v),
        _ => Err(Error::config("a batch uploaded for another device or view count")),
    }
}

impl<B, const F: usize, const D: usize, const H: usize, Dv> Ssl<B, F, D, H, Dv>
where
    B: Backbone<F, Dv> + 'static,
    Dv: Kernels<f32> + 'static,
{
    fn train_pair(
        &mut self,
        x1: Tensor<Image<3>, f32, Dv>,
        x2: Tensor<Image<3>, f32, Dv>,
        scale: f32,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<MicroStats> {
        let grads = match self.grads.take() {
            Some(g) => g,
            None => self.model.try_alloc_grads().map_err(dev_err)?,
        };
        // The gradients go to the step's average as they become final (`overlap_next`).
        let watch = self.overlap.clone().map(|o| watch_grads(o as Rc<dyn GradsReady>));
        let out = self.model.forward_pair(x1.traced(grads), x2.leaky_traced(), Mode::Train)?;
        let z1 = out.z1.clone();
        let loss = simsiam_loss(out.p1, out.p2, out.z1, out.z2)?;
        let value = loss.retaped::<NoneTape>();
        self.grads = Some(loss.try_mul(scale).and_then(|l| l.try_backward()).map_err(dev_err)?);
        drop(watch);
        // The step is queued (on a GPU still running): prepare the next batch, then read.
        meanwhile();
        let z_std = normalized_std(&z1.as_vec(), D);
        Ok(MicroStats { loss: value.as_vec()[0], z_std })
    }
}

impl<B, const F: usize, const D: usize, const H: usize, Dv> SslNet for Ssl<B, F, D, H, Dv>
where
    B: Backbone<F, Dv> + 'static,
    Dv: Kernels<f32> + 'static,
{
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn proj_dim(&self) -> usize {
        D
    }

    fn train_micro(&mut self, v1: Images<'_>, v2: Images<'_>, scale: f32) -> Result<MicroStats> {
        let x1 = v1.tensor(&self.dev)?;
        let x2 = v2.tensor(&self.dev)?;
        self.train_pair(x1, x2, scale, &mut || {})
    }

    fn uploader(&self) -> Box<dyn Uploader> {
        Box::new(DevUploader { dev: self.dev.clone(), views: 2, what: "SimSiam" })
    }

    fn train_uploaded(&mut self, views: Uploaded, scale: f32, meanwhile: &mut dyn FnMut()) -> Result<MicroStats> {
        let [x1, x2]: [_; 2] = views_of::<Dv>(views, 2)?.try_into().map_err(|_| Error::config("two views"))?;
        self.train_pair(x1, x2, scale, meanwhile)
    }

    fn step(&mut self, opt: &mut Optimizer, lr: f64) -> Result<()> {
        let Some(mut grads) = self.grads.take() else { return Ok(()) };
        opt.begin_step();
        opt.step_module(&mut self.model, &mut grads, lr, 0)?;
        self.model.try_zero_grads(&mut grads).map_err(dev_err)?;
        self.grads = Some(grads);
        Ok(())
    }

    fn overlap_next(&mut self, world: &World) {
        self.overlap = start_overlap::<Dv>(world);
    }

    fn average_grads(&mut self, world: &World) -> Result<usize> {
        let overlap = self.overlap.take();
        if world.size() == 1 {
            return Ok(0);
        }
        let mut grads = match self.grads.take() {
            Some(g) => g,
            None => self.model.try_alloc_grads().map_err(dev_err)?,
        };
        if let Some(o) = overlap {
            let result = finish_overlap(&o, &mut grads, self.trainable);
            self.grads = Some(grads);
            return result;
        }
        let model = &self.model;
        let result = match gpu_average(world, model, &mut grads, "") {
            Some(r) => r,
            None => average_flat(world, &mut |f| walk_grads(model, &mut grads, "", &mut |_, g| f(g))),
        };
        self.grads = Some(grads);
        result
    }

    fn features(&mut self, x: Images<'_>) -> Result<Vec<f32>> {
        let x = x.tensor(&self.dev)?;
        Ok(self.model.backbone.forward_features(x, Mode::Eval)?.as_vec())
    }

    fn similarity(&mut self, v1: Images<'_>, v2: Images<'_>) -> Result<f32> {
        let out = self.model.forward_pair(v1.tensor(&self.dev)?, v2.tensor(&self.dev)?, Mode::Eval)?;
        Ok(-simsiam_loss(out.p1, out.p2, out.z1, out.z2)?.as_vec()[0])
    }

    fn walk(&mut self, f: &mut TensorFn<'_>) -> Result<()> {
        params::walk(&mut self.model, "", f)
    }

    fn backbone_state(&mut self) -> Result<StateDict> {
        let mut out = StateDict::new();
        params::collect(&mut self.model.backbone, "", &mut out)?;
        Ok(out)
    }

    fn grads(&mut self) -> Result<StateDict> {
        let mut grads = match self.grads.take() {
            Some(g) => g,
            None => self.model.try_alloc_grads().map_err(dev_err)?,
        };
        let mut out = StateDict::new();
        let result = params::collect_grads(&self.model, &mut grads, "", &mut out);
        self.grads = Some(grads);
        result.map(|()| out)
    }
}

/// `Some`: the gradients of `model` averaged in GPU memory by NCCL, when this rank joined it
/// (a GPU rank of the `nccl` build); `None`: through the host ([`average_flat`]).
#[allow(unused_variables)]
fn gpu_average<Dv: Device<f32>, M: dfdx::nn::tensor_collection::TensorCollection<f32, Dv>>(
    world: &World,
    model: &M,
    grads: &mut Gradients<f32, Dv>,
    prefix: &str,
) -> Option<Result<usize>> {
    #[cfg(feature = "nccl")]
    if let Some(gpu) = world.gpu() {
        return Some(
            gpu.average::<Error>(&mut |f| siamlab_model::walk_cuda_grads(model, grads, prefix, &mut |_, g| f(g))),
        );
    }
    None
}

/// What [`average_flat`]'s visitor hands each gradient to.
type GradFn<'a> = dyn FnMut(&mut [f32]) -> Result<()> + 'a;

/// The gradients that `visit` hands out (the same slices in the same order on each call)
/// averaged over the ranks of `world`: laid end to end in one flat buffer, all-reduced in
/// buckets of [`BUCKET_BYTES`], written back; returns the bytes all-reduced.
fn average_flat(world: &World, visit: &mut dyn FnMut(&mut GradFn<'_>) -> Result<()>) -> Result<usize> {
    let mut flat = Vec::new();
    visit(&mut |g| {
        flat.extend_from_slice(g);
        Ok(())
    })?;
    all_reduce_mean(world, &mut flat, BUCKET_BYTES)?;
    let mut at = 0;
    visit(&mut |g| {
        g.copy_from_slice(&flat[at..at + g.len()]);
        at += g.len();
        Ok(())
    })?;
    Ok(flat.len() * size_of::<f32>())
}

/// The average of the next backward pass over `world` ([`SslNet::overlap_next`]): CPU ranks of
/// a run of several, unless `SIAMLAB_OVERLAP=0`.
fn start_overlap<Dv: 'static>(world: &World) -> Option<Rc<Overlap>> {
    let cpu = std::any::TypeId::of::<Dv>() == std::any::TypeId::of::<Cpu>();
    (world.size() > 1 && cpu && overlap::enabled()).then(|| Rc::new(Overlap::new(world)))
}

/// Finishes the average that `o` started during the backward pass into `grads` (`expected`
/// trainable values); returns the bytes all-reduced.
fn finish_overlap<Dv: Kernels<f32> + 'static>(
    o: &Overlap,
    grads: &mut Gradients<f32, Dv>,
    expected: usize,
) -> Result<usize> {
    match (grads as &mut dyn std::any::Any).downcast_mut::<Gradients<f32, Cpu>>() {
        Some(g) => o.finish(g, expected).map(|n| n * size_of::<f32>()),
        None => Err(Error::config("an overlapped gradient average off the CPU")),
    }
}

fn count_params<Dv: Device<f32>, M: dfdx::nn::tensor_collection::TensorCollection<f32, Dv>>(m: &M) -> usize {
    siamlab_model::named_tensors::<Dv, M>(m)
        .iter()
        .filter(|t| t.trainable)
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}

fn info_of<B: Backbone<F, Dv>, const F: usize, Dv: Kernels<f32>>(b: &B, name: &str, image_size: usize) -> NetInfo {
    NetInfo {
        backbone: name.to_string(),
        architecture: b.name(),
        image_size,
        features: F,
        backbone_params: count_params::<Dv, B>(b),
    }
}

struct SslBuilder<'a, Dv> {
    dev: &'a Dv,
    name: &'a str,
    image_size: usize,
    proj_dim: usize,
    init: InitScheme,
    seed: u64,
}

impl<Dv: Kernels<f32> + 'static> BackboneVisitor<Dv> for SslBuilder<'_, Dv> {
    type Output = Result<Box<dyn SslNet>>;
    fn visit<B: Backbone<F, Dv> + BuildModule<Dv, f32> + 'static, const F: usize>(
        self,
        mut backbone: B,
    ) -> Self::Output {
        initialise(&mut backbone, self.init, init_seed(self.seed))?;
        fn make<
            B: Backbone<F, Dv> + 'static,
            const F: usize,
            const D: usize,
            const H: usize,
            Dv: Kernels<f32> + 'static,
        >(
            b: B,
            dev: &Dv,
            info: NetInfo,
        ) -> Result<Box<dyn SslNet>> {
            let model = SimSiam {
                backbone: b,
                projector: Projector::<F, D, f32, Dv>::try_build(dev).map_err(dev_err)?,
                predictor: Predictor::<D, H, f32, Dv>::try_build(dev).map_err(dev_err)?,
            };
            let trainable = count_params::<Dv, SimSiam<B, F, D, H, f32, Dv>>(&model);
            Ok(Box::new(Ssl { model, grads: None, dev: dev.clone(), info, overlap: None, trainable }))
        }
        let info = info_of::<B, F, Dv>(&backbone, self.name, self.image_size);
        match self.proj_dim {
            2048 => make::<B, F, 2048, 512, Dv>(backbone, self.dev, info),
            1024 => make::<B, F, 1024, 256, Dv>(backbone, self.dev, info),
            512 => make::<B, F, 512, 128, Dv>(backbone, self.dev, info),
            256 => make::<B, F, 256, 64, Dv>(backbone, self.dev, info),
            128 => make::<B, F, 128, 32, Dv>(backbone, self.dev, info),
            d => Err(Error::config(format!("projection dim {d} is not one of 2048, 1024, 512, 256, 128"))),
        }
    }
}

/// The seed of a backbone's redraw by an [`InitScheme`] (apart from the device RNG's stream,
/// which builds the layers and the heads).
fn init_seed(seed: u64) -> u64 {
    seed ^ 0x1A17_5EED
}

/// SimSiam on the backbone `name` at `image_size` with projection dim `proj_dim` (2048, 1024,
/// 512, 256 or 128; the predictor's hidden layer is `proj_dim / 4`), on `device`, initialised
/// from an RNG seeded with `seed` (PyTorch's layer defaults: [`build_ssl_with`] another scheme).
pub fn build_ssl(
    device: DeviceSpec,
    seed: u64,
    name: &str,
    image_size: usize,
    proj_dim: usize,
) -> Result<Box<dyn SslNet>> {
    build_ssl_with(device, seed, name, image_size, proj_dim, InitScheme::Uniform)
}

/// [`build_ssl`] with the backbone initialised by `init` ([`siamlab_model::init`]; the heads
/// keep PyTorch's `nn.Linear` / `nn.BatchNorm1d` defaults, as in the official SimSiam code).
pub fn build_ssl_with(
    device: DeviceSpec,
    seed: u64,
    name: &str,
    image_size: usize,
    proj_dim: usize,
    init: InitScheme,
) -> Result<Box<dyn SslNet>> {
    crate::device::check_available(device)?;
    match device {
        DeviceSpec::Cpu => {
            let dev = Cpu::seed_from_u64(seed);
            with_backbone(name, image_size, &dev, SslBuilder { dev: &dev, name, image_size, proj_dim, init, seed })?
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => {
            let dev = crate::device::cuda_device(n, seed)?;
            with_backbone(name, image_size, &dev, SslBuilder { dev: &dev, name, image_size, proj_dim, init, seed })?
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("check_available refuses cuda without the feature"),
    }
}

struct Cls<B, const F: usize, Dv: Kernels<f32>> {
    backbone: B,
    head: Head<Dv>,
    grads: Option<Gradients<f32, Dv>>,
    frozen: bool,
    dev: Dv,
    info: NetInfo,
    /// The backbone's average that the next backward pass starts ([`ClsNet::overlap_next`]).
    overlap: Option<Rc<Overlap>>,
    /// The backbone's trainable values.
    trainable: usize,
}

/// A linear-evaluation feature set on device `Dv`: features `[n, F]`, targets `[n, K]`.
type FeatureSet<Dv> = (Matrix<NoneTape, Dv>, Matrix<NoneTape, Dv>);

impl<B: Backbone<F, Dv> + 'static, const F: usize, Dv: Kernels<f32> + 'static> Cls<B, F, Dv> {
    /// The backbone's gradients to accumulate into (the head keeps its own).
    fn take_grads(&mut self) -> Result<Gradients<f32, Dv>> {
        match self.grads.take() {
            Some(g) => Ok(g),
            None => self.backbone.try_alloc_grads().map_err(dev_err),
        }
    }

    /// Targets `[n, K]` on the device, checked against the batch size.
    fn targets(&self, n: usize, targets: Vec<f32>) -> Result<Matrix<NoneTape, Dv>> {
        let k = self.head.classes();
        if targets.len() != n * k {
            return Err(Error::config(format!("{} targets for {n} images of {k} outputs", targets.len())));
        }
        self.dev.try_tensor_from_vec(targets, (n, k)).map_err(dev_err)
    }

    /// Head, loss and backward on features `f` that carry the tape (the backbone's gradients
    /// are kept when it trains); `meanwhile` runs before the loss is read.
    fn head_backward(
        &mut self,
        f: Matrix<OwnedTape<f32, Dv>, Dv>,
        loss: Loss,
        t: Matrix<NoneTape, Dv>,
        scale: f32,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<f32> {
        let logits = self.head.forward(f)?;
        let l = loss_of(loss, logits, t);
        let value = l.retaped::<NoneTape>();
        let grads = l.try_mul(scale).and_then(|l| l.try_backward()).map_err(dev_err)?;
        if !self.frozen {
            self.grads = Some(grads);
        }
        meanwhile();
        Ok(value.as_vec()[0])
    }

    fn train_images(
        &mut self,
        x: Tensor<Image<3>, f32, Dv>,
        loss: Loss,
        targets: Vec<f32>,
        scale: f32,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<f32> {
        let n = x.shape().0;
        let t = self.targets(n, targets)?;
        let f = if self.frozen {
            let f = self.backbone.forward_features(x, Mode::Eval)?;
            f.try_reshape_like(&(n, F)).map_err(dev_err)?.leaky_traced()
        } else {
            let grads = self.take_grads()?;
            // The backbone's gradients go to the step's average as they become final.
            let watch = self.overlap.clone().map(|o| watch_grads(o as Rc<dyn GradsReady>));
            let f = armed(|| self.backbone.forward_features(x.traced(grads), Mode::Train))?;
            drop(watch);
            f.try_reshape_like(&(n, F)).map_err(dev_err)?
        };
        self.head_backward(f, loss, t, scale, meanwhile)
    }

    fn feature_set<'a>(&self, set: &'a Uploaded) -> Result<&'a FeatureSet<Dv>> {
        set.0.downcast_ref::<FeatureSet<Dv>>().ok_or_else(|| Error::config("a feature set of another device"))
    }
}

impl<B: Backbone<F, Dv> + 'static, const F: usize, Dv: Kernels<f32> + 'static> ClsNet for Cls<B, F, Dv> {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn classes(&self) -> usize {
        self.head.classes()
    }

    fn freeze_backbone(&mut self, frozen: bool) {
        if frozen != self.frozen {
            self.grads = None;
        }
        self.frozen = frozen;
    }

    fn grads(&mut self) -> Result<StateDict> {
        let mut out = StateDict::new();
        if !self.frozen {
            let mut grads = match self.grads.take() {
                Some(g) => g,
                None => self.backbone.try_alloc_grads().map_err(dev_err)?,
            };
            let result = params::collect_grads(&self.backbone, &mut grads, "backbone", &mut out);
            self.grads = Some(grads);
            result?;
        }
        let (k, f) = (self.head.classes(), F);
        let (w, b) = self.head.grads_host();
        out.insert("fc.weight".into(), (vec![k, f], w));
        out.insert("fc.bias".into(), (vec![k], b));
        Ok(out)
    }

    fn overlap_next(&mut self, world: &World) {
        self.overlap = if self.frozen { None } else { start_overlap::<Dv>(world) };
    }

    fn average_grads(&mut self, world: &World) -> Result<usize> {
        let overlap = self.overlap.take();
        if world.size() == 1 {
            return Ok(0);
        }
        let mut grads = if self.frozen { None } else { Some(self.take_grads()?) };
        let backbone = &self.backbone;
        // The backbone's average started during the backward pass (CPU), or on NCCL in GPU
        // memory; the head's (small) goes through the host either way.
        let overlapped = match (overlap, grads.as_mut()) {
            (Some(o), Some(g)) => Some(finish_overlap(&o, g, self.trainable)),
            _ => None,
        };
        let done = overlapped.or_else(|| grads.as_mut().and_then(|g| gpu_average(world, backbone, g, "backbone")));
        let (mut w, mut b) = self.head.grads_host();
        let result = match done {
            Some(Err(e)) => Err(e),
            Some(Ok(backbone_bytes)) => average_flat(world, &mut |f| {
                f(&mut w)?;
                f(&mut b)
            })
            .map(|head| backbone_bytes + head),
            None => average_flat(world, &mut |f| {
                if let Some(g) = grads.as_mut() {
                    walk_grads(backbone, g, "backbone", &mut |_, x| f(x))?;
                }
                f(&mut w)?;
                f(&mut b)
            }),
        };
        if !self.frozen {
            self.grads = grads;
        }
        let bytes = result?;
        self.head.set_grads_host(&w, &b)?;
        Ok(bytes)
    }

    fn train_micro(&mut self, x: Images<'_>, loss: Loss, targets: Vec<f32>, scale: f32) -> Result<f32> {
        let x = x.tensor(&self.dev)?;
        self.train_images(x, loss, targets, scale, &mut || {})
    }

    fn uploader(&self) -> Box<dyn Uploader> {
        Box::new(DevUploader { dev: self.dev.clone(), views: 1, what: "finetuning" })
    }

    fn train_uploaded(
        &mut self,
        x: Uploaded,
        loss: Loss,
        targets: Vec<f32>,
        scale: f32,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<f32> {
        let x = views_of::<Dv>(x, 1)?.remove(0);
        self.train_images(x, loss, targets, scale, meanwhile)
    }

    fn step(&mut self, opt: &mut Optimizer, lr: f64) -> Result<()> {
        opt.begin_step();
        let mut slot = 0;
        if !self.frozen {
            if let Some(mut grads) = self.grads.take() {
                slot = opt.step_module(&mut self.backbone, &mut grads, lr, 0)?;
                self.backbone.try_zero_grads(&mut grads).map_err(dev_err)?;
                self.grads = Some(grads);
            }
        }
        self.head.step(opt, lr, slot)?;
        self.head.zero_grads();
        Ok(())
    }

    fn logits(&mut self, x: Images<'_>) -> Result<Vec<f32>> {
        let n = x.n;
        let f = self.backbone.forward_features(x.tensor(&self.dev)?, Mode::Eval)?;
        Ok(self.head.forward(f.try_reshape_like(&(n, F)).map_err(dev_err)?)?.as_vec())
    }

    fn features(&mut self, x: Images<'_>) -> Result<Vec<f32>> {
        Ok(self.backbone.forward_features(x.tensor(&self.dev)?, Mode::Eval)?.as_vec())
    }

    fn upload_features(&self, features: &[f32], targets: &[f32], n: usize) -> Result<Uploaded> {
        if features.len() != n * F {
            return Err(Error::config(format!("{} feature values for {n} rows of {F}", features.len())));
        }
        let x = self.dev.try_tensor_from_vec(features.to_vec(), (n, F)).map_err(dev_err)?;
        let t = self.targets(n, targets.to_vec())?;
        Ok(Uploaded(Box::new((x, t))))
    }

    fn train_head(&mut self, set: &Uploaded, rows: &[usize], loss: Loss) -> Result<f32> {
        let (x, t) = self.feature_set(set)?;
        let n = x.shape().0;
        if let Some(&r) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::config(format!("row {r} of a feature set of {n} rows")));
        }
        let idx = self.dev.try_tensor_from_vec(rows.to_vec(), (rows.len(),)).map_err(dev_err)?;
        let x: Matrix<NoneTape, Dv> = x.clone().try_gather(idx.clone()).map_err(dev_err)?;
        let t: Matrix<NoneTape, Dv> = t.clone().try_gather(idx).map_err(dev_err)?;
        self.head_backward(x.leaky_traced(), loss, t, 1.0, &mut || {})
    }

    fn head_logits(&mut self, set: &Uploaded) -> Result<Vec<f32>> {
        let (x, _) = self.feature_set(set)?;
        Ok(self.head.forward(x.clone())?.as_vec())
    }

    fn walk(&mut self, f: &mut TensorFn<'_>) -> Result<()> {
        // dfdx's name viewer adds the dot: module "backbone" gives `backbone.conv1.weight`.
        params::walk(&mut self.backbone, "backbone", f)?;
        self.head.walk("fc.", f)
    }

    fn load_backbone(&mut self, dict: &StateDict, file: &std::path::Path) -> Result<ImportReport> {
        import_state_dict(&mut self.backbone, dict, &ImportOptions::default())
            .map_err(|e| Error::bad_file(file, e.to_string()))
    }
}

struct ClsBuilder<'a, Dv> {
    dev: &'a Dv,
    name: &'a str,
    image_size: usize,
    classes: usize,
    seed: u64,
    init: InitScheme,
}

impl<Dv: Kernels<f32> + 'static> BackboneVisitor<Dv> for ClsBuilder<'_, Dv> {
    type Output = Result<Box<dyn ClsNet>>;
    fn visit<B: Backbone<F, Dv> + BuildModule<Dv, f32> + 'static, const F: usize>(
        self,
        mut backbone: B,
    ) -> Self::Output {
        initialise(&mut backbone, self.init, init_seed(self.seed))?;
        let info = info_of::<B, F, Dv>(&backbone, self.name, self.image_size);
        let trainable = count_params::<Dv, B>(&backbone);
        Ok(Box::new(Cls::<B, F, Dv> {
            backbone,
            head: Head::new(F, self.classes, self.seed, self.dev)?,
            grads: None,
            frozen: false,
            dev: self.dev.clone(),
            info,
            overlap: None,
            trainable,
        }))
    }
}

/// The backbone `name` at `image_size` with a fresh linear head of `classes` outputs, on
/// `device`; backbone and head initialised from `seed` (PyTorch's layer defaults:
/// [`build_cls_with`] another scheme).
pub fn build_cls(
    device: DeviceSpec,
    seed: u64,
    name: &str,
    image_size: usize,
    classes: usize,
) -> Result<Box<dyn ClsNet>> {
    build_cls_with(device, seed, name, image_size, classes, InitScheme::Uniform)
}

/// [`build_cls`] with the backbone initialised by `init` ([`siamlab_model::init`]; the head
/// keeps PyTorch's `nn.Linear` default).
pub fn build_cls_with(
    device: DeviceSpec,
    seed: u64,
    name: &str,
    image_size: usize,
    classes: usize,
    init: InitScheme,
) -> Result<Box<dyn ClsNet>> {
    crate::device::check_available(device)?;
    match device {
        DeviceSpec::Cpu => {
            let dev = Cpu::seed_from_u64(seed);
            with_backbone(name, image_size, &dev, ClsBuilder { dev: &dev, name, image_size, classes, seed, init })?
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => {
            let dev = crate::device::cuda_device(n, seed)?;
            with_backbone(name, image_size, &dev, ClsBuilder { dev: &dev, name, image_size, classes, seed, init })?
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("check_available refuses cuda without the feature"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the walk's module prefix was `"backbone."`, and dfdx's walker adds the dot
    /// itself, so finetuning checkpoints and `best.safetensors` held `backbone..conv1.weight`.
    #[test]
    fn finetuning_tensors_have_the_pytorch_names() {
        let mut net = build_cls(DeviceSpec::Cpu, 0, "resnet18_tiny", 16, 3).unwrap();
        let mut names = Vec::new();
        net.walk(&mut |s, _| {
            names.push(s.name.to_string());
            Ok(false)
        })
        .unwrap();
        assert!(names.contains(&"backbone.conv1.weight".to_string()), "{:?}", &names[..3]);
        assert!(names.contains(&"fc.weight".to_string()));
        assert!(names.iter().all(|n| !n.contains("..")), "{names:?}");
    }
}
