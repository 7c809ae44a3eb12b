//! The ops: convolution family and the few element-wise ops the backbones need.

mod activation;
mod add;
mod attention;
mod batch_norm;
mod bmm;
pub mod composed;
mod conv2d;
mod depthwise;
mod drop_path;
mod grad;
mod heads;
mod im2col;
mod layer_norm;
mod linear;
mod mlp;
mod pool;
mod ranks_sum;
mod scale;
mod softmax;
mod taps;
mod window;
mod winograd;

pub use activation::{gelu, silu};
pub use add::residual_add;
pub use attention::attention;
pub use batch_norm::{batch_norm, BatchNormConfig};
pub use bmm::batched_matmul;
pub use conv2d::{conv2d, conv2d_bias, Conv2dConfig};
pub use drop_path::drop_path;
pub use heads::{merge_heads, split_heads};
pub use layer_norm::layer_norm;
pub use linear::{linear, linear_no_bias};
pub use mlp::mlp;
pub use pool::{avg_pool2d, global_avg_pool2d, max_pool2d, Pool2dConfig};
pub use scale::scale_channels;
pub use softmax::scaled_softmax;
pub use winograd::set_winograd;

use dfdx::prelude::Const;

/// The shape of a batch of images, `[N, C, H, W]`: channels in the type, batch and spatial
/// sizes at run time.
pub type Image<const C: usize> = (usize, Const<C>, usize, usize);
