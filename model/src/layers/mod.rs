//! The layers the backbones are built from, with PyTorch's parameter names (`weight`, `bias`,
//! `running_mean`, `running_var`), and the [`Block`] trait that runs them in training or
//! evaluation [`Mode`].
//!
//! Every layer is a dfdx [`TensorCollection`](dfdx::nn::tensor_collection::TensorCollection)
//! with its shape in const generics, so dfdx builds it (`BuildModule::build`), counts its
//! parameters (`NumParams`), zeroes and updates it (`ZeroGrads`, `Adam`) and walks its tensors by
//! name. Forward passes are `f32` on any device with [`Kernels`](crate::Kernels) (`Cpu`, and
//! `Cuda` with the `cuda` feature).

mod conv;
mod linear;
mod norm;

pub use conv::{Conv2d, Conv2dBias, DwConv2d};
pub use dfdx::nn::modules::{Linear, UnbiasedLinear};
pub use norm::{BatchNorm1d, BatchNorm2d, LayerNorm};

use dfdx::nn::modules::Repeated;
use dfdx::prelude::{Cpu, Merge, NoneTape, Storage, Tape};

use crate::OpError;

/// Training or evaluation: BatchNorm uses batch statistics and updates its running ones in
/// `Train`, uses the running ones in `Eval`; drop-path is active only in `Train`. Gradients are
/// independent of the mode: they flow whenever the input carries an `OwnedTape`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, running statistics updated, stochastic depth on.
    Train,
    /// Running statistics, stochastic depth off; nothing in the module changes.
    Eval,
}

impl Mode {
    /// `true` for [`Mode::Train`].
    pub fn training(self) -> bool {
        self == Mode::Train
    }
}

/// The tapes a forward pass can carry: `NoneTape` (inference) or `OwnedTape` (training), for
/// `f32` on device `D` ([`Cpu`] unless named); a shorthand for the bounds the ops need.
pub trait AnyTape<D: Storage<f32> = Cpu>: Tape<f32, D> + Merge<Self> + Merge<NoneTape> {}
impl<D: Storage<f32>, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>> AnyTape<D> for T {}

/// A module run in a [`Mode`]. `&mut self` because training updates BatchNorm's running
/// statistics; in [`Mode::Eval`] nothing is written.
///
/// Implemented by every layer and block of this crate, by tuples (run in order, as dfdx's
/// tuple modules are) and by dfdx's [`Repeated`].
pub trait Block<X> {
    /// What the block produces.
    type Output;
    /// Runs the block on `x`.
    fn run(&mut self, x: X, mode: Mode) -> Result<Self::Output, OpError>;
}

impl<X, B: Block<X, Output = X>, const N: usize> Block<X> for Repeated<B, N> {
    type Output = X;
    fn run(&mut self, mut x: X, mode: Mode) -> Result<X, OpError> {
        for m in self.modules.iter_mut() {
            x = m.run(x, mode)?;
        }
        Ok(x)
    }
}

/// `(A, B)`: `B` runs on `A`'s output.
impl<X, A: Block<X>, B: Block<A::Output>> Block<X> for (A, B) {
    type Output = B::Output;
    fn run(&mut self, x: X, mode: Mode) -> Result<Self::Output, OpError> {
        let x = self.0.run(x, mode)?;
        self.1.run(x, mode)
    }
}

/// `(A, B, C)`: run in order.
impl<X, A: Block<X>, B: Block<A::Output>, C: Block<B::Output>> Block<X> for (A, B, C) {
    type Output = C::Output;
    fn run(&mut self, x: X, mode: Mode) -> Result<Self::Output, OpError> {
        let x = self.0.run(x, mode)?;
        let x = self.1.run(x, mode)?;
        self.2.run(x, mode)
    }
}

/// `(A, B, C, D)`: run in order.
impl<X, A: Block<X>, B: Block<A::Output>, C: Block<B::Output>, D: Block<C::Output>> Block<X> for (A, B, C, D) {
    type Output = D::Output;
    fn run(&mut self, x: X, mode: Mode) -> Result<Self::Output, OpError> {
        let x = self.0.run(x, mode)?;
        let x = self.1.run(x, mode)?;
        let x = self.2.run(x, mode)?;
        self.3.run(x, mode)
    }
}
