//! dfdx's `Linear` (`weight` `[O, I]`, `bias` `[O]`, PyTorch's names and initialisation) and
//! `UnbiasedLinear` (`weight` only) as [`Block`]s on features `[N, I]` and tokens `[N, L, I]`,
//! computed by this crate's [`linear`] op.

use dfdx::nn::modules::{Linear, UnbiasedLinear};
use dfdx::prelude::{Const, Cpu, HasShape, ReshapeTo, Tensor};

use super::{AnyTape, Block, Mode};
use crate::{linear, linear_no_bias, OpError};

macro_rules! linear_block {
    ($layer:ident, |$s:ident, $x:ident| $call:expr) => {
        impl<const I: usize, const O: usize, T: AnyTape> Block<Tensor<(usize, Const<I>), f32, Cpu, T>>
            for $layer<I, O, f32, Cpu>
        {
            type Output = Tensor<(usize, Const<O>), f32, Cpu, T>;
            fn run(&mut self, x: Tensor<(usize, Const<I>), f32, Cpu, T>, _: Mode) -> Result<Self::Output, OpError> {
                let ($s, $x) = (&*self, x);
                $call
            }
        }

        impl<const I: usize, const O: usize, T: AnyTape> Block<Tensor<(usize, usize, Const<I>), f32, Cpu, T>>
            for $layer<I, O, f32, Cpu>
        {
            type Output = Tensor<(usize, usize, Const<O>), f32, Cpu, T>;
            /// All tokens as one `[N·L, I]` matrix: one GEMM.
            fn run(
                &mut self,
                x: Tensor<(usize, usize, Const<I>), f32, Cpu, T>,
                _: Mode,
            ) -> Result<Self::Output, OpError> {
                let (n, l, _) = *x.shape();
                let rows = x.try_reshape_like(&(n * l, Const::<I>))?;
                Ok(self.run(rows, Mode::Eval)?.try_reshape_like(&(n, l, Const::<O>))?)
            }
        }
    };
}

linear_block!(Linear, |s, x| linear(x, s.weight.retaped::<T>(), s.bias.retaped::<T>()));
linear_block!(UnbiasedLinear, |s, x| linear_no_bias(x, s.weight.retaped::<T>()));
