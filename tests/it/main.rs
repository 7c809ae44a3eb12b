//! Integration tests: one binary, one file per topic. Inputs are generated in the publishers'
//! exact layouts (shared/FORMATS.md) by `siamlab_datasets::synth`.

mod atomicity;
mod bad_input;
mod celeba;
mod cifar;
mod common;
mod folder;
mod glance;
mod model;
mod parallel;
mod random;
mod stl10;
mod store;
mod train;
