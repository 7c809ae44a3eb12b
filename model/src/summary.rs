//! A torchinfo-style table of a backbone: each stage's output shape and parameter count, and
//! the total. Built by running one zero image through the backbone in evaluation mode, so the
//! shapes are the ones the code produces, not ones computed beside it.

use std::fmt;

use dfdx::nn::NumParams;
use dfdx::prelude::{Const, Cpu, ZerosTensor};

use crate::backbones::trace::{StageTrace, SummaryRow};
use crate::backbones::Backbone;
use crate::layers::Mode;
use crate::OpError;

/// The table [`summary`] returns; `Display` prints it as torchinfo does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The backbone, as [`Backbone::name`] gives it.
    pub backbone: String,
    /// The input side length, in pixels.
    pub image_size: usize,
    /// The stages, in order.
    pub rows: Vec<SummaryRow>,
    /// All trainable parameters of the backbone (equal to the sum of the rows).
    pub total_params: usize,
}

/// Runs one `image_size × image_size` zero image through `backbone` in evaluation mode and
/// tabulates its stages. Errors when the backbone cannot take that size (a ViT's position
/// embedding fixes its token grid; a kernel larger than a late feature map).
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::backbones::ResNet18CifarTiny;
/// use siamlab_model::summary;
/// let mut net = ResNet18CifarTiny::build(&Cpu::default());
/// let s = summary(&mut net, 32).unwrap();
/// assert_eq!(s.rows.last().unwrap().shape, vec![1, 64]);
/// assert_eq!(s.rows.iter().map(|r| r.params).sum::<usize>(), s.total_params);
/// ```
pub fn summary<B: Backbone<F>, const F: usize>(backbone: &mut B, image_size: usize) -> Result<Summary, OpError> {
    let x = Cpu::default().try_zeros_like(&(1, Const::<3>, image_size, image_size))?;
    let mut trace = StageTrace::on();
    backbone.forward_traced(x, Mode::Eval, &mut trace)?;
    Ok(Summary {
        backbone: backbone.name(),
        image_size,
        rows: trace.into_rows(),
        total_params: backbone.num_trainable_params(),
    })
}

/// `11168832` → `11,168,832`.
pub(crate) fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "=".repeat(72);
        writeln!(f, "{} at {}x{}", self.backbone, self.image_size, self.image_size)?;
        writeln!(f, "{rule}")?;
        writeln!(f, "{:<28}{:<28}{:>16}", "Layer", "Output Shape", "Param #")?;
        writeln!(f, "{rule}")?;
        for row in &self.rows {
            let shape = format!("{:?}", row.shape);
            writeln!(f, "{:<28}{:<28}{:>16}", row.name, shape, thousands(row.params))?;
        }
        writeln!(f, "{rule}")?;
        writeln!(f, "Total params: {}", thousands(self.total_params))
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(11_168_832), "11,168,832");
    }
}
