//! Readers of each source layout. Each yields [`crate::Record`]s in a fixed order.

pub mod celeba;
pub mod cifar;
pub mod folder;
pub mod random;
pub mod shapes;
pub mod spec;
pub mod stl10;

pub use celeba::CelebA;
pub use cifar::Cifar;
pub use folder::Folder;
pub use random::{Random, RandomSpec};
pub use shapes::{Shapes, ShapesSpec, SHAPE_CLASSES};
pub use spec::{SourceSpec, KINDS};
pub use stl10::Stl10;
