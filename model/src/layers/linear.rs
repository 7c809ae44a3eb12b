//! dfdx's `Linear` (`weight` `[O, I]`, `bias` `[O]`, PyTorch's names and initialisation) and
//! `UnbiasedLinear` (`weight` only) as [`Block`]s on features `[N, I]` and tokens `[N, L, I]`,
//! computed by this crate's [`linear`] op.

use dfdx::nn::modules::{Linear, UnbiasedLinear};
use dfdx::prelude::{Const, HasShape, ReshapeTo, Tensor};

use super::{AnyTape, Block, Mode};
use crate::{Kernels, OpError};

macro_rules! linear_block {
    ($layer:ident, |$s:ident, $x:ident| $call:expr) => {
        impl<const I: usize, const O: usize, Dv: Kernels<f32>, T: AnyTape<Dv>>
            Block<Tensor<(usize, Const<I>), f32, Dv, T>> for $layer<I, O, f32, Dv>
        {
            type Output = Tensor<(usize, Const<O>), f32, Dv, T>;
            fn run(&mut self, x: Tensor<(usize, Const<I>), f32, Dv, T>, _: Mode) -> Result<Self::Output, OpError> {
                let ($s, $x) = (&*self, x);
                $call
            }
        }

        impl<const I: usize, const O: usize, Dv: Kernels<f32>, T: AnyTape<Dv>>
            Block<Tensor<(usize, usize, Const<I>), f32, Dv, T>> for $layer<I, O, f32, Dv>
        {
            type Output = Tensor<(usize, usize, Const<O>), f32, Dv, T>;
            /// All tokens as one `[N·L, I]` matrix: one GEMM.
            fn run(
                &mut self,
                x: Tensor<(usize, usize, Const<I>), f32, Dv, T>,
                _: Mode,
            ) -> Result<Self::Output, OpError> {
                let (n, l, _) = *x.shape();
                let rows = x.try_reshape_like(&(n * l, Const::<I>)).map_err(OpError::device)?;
                self.run(rows, Mode::Eval)?.try_reshape_like(&(n, l, Const::<O>)).map_err(OpError::device)
            }
        }
    };
}

linear_block!(Linear, |s, x| Dv::linear(x, s.weight.retaped::<T>(), s.bias.retaped::<T>()));
linear_block!(UnbiasedLinear, |s, x| Dv::linear_no_bias(x, s.weight.retaped::<T>()));
