//! `ToTensor` + `Normalize`: planar RGB8 (CHW u8) → normalized CHW f32 in a caller's buffer.

use super::error::{check_len, invalid, Result};
use super::simd::multiversion;

/// Per-channel mean and standard deviation, in the `[0, 1]` scale of `ToTensor` (torchvision's
/// `Normalize(mean, std)`), with the affine map precomputed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    mean: [f32; 3],
    std: [f32; 3],
    scale: [f32; 3],
    bias: [f32; 3],
}

impl Normalize {
    /// `mean` finite, `std` finite and positive.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Result<Self> {
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(invalid("mean", format!("must be finite, got {mean:?}")));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(invalid("std", format!("must be finite and > 0, got {std:?}")));
        }
        // (x / 255 - m) / s = x * (1 / (255 s)) - m / s, computed in f64 and rounded once.
        let scale = std.map(|s| (1.0 / (255.0 * f64::from(s))) as f32);
        let mut bias = [0f32; 3];
        for c in 0..3 {
            bias[c] = (-f64::from(mean[c]) / f64::from(std[c])) as f32;
        }
        Ok(Normalize { mean, std, scale, bias })
    }

    /// ImageNet's statistics, `[0.485, 0.456, 0.406]` / `[0.229, 0.224, 0.225]`.
    pub fn imagenet() -> Self {
        Normalize::new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).expect("valid constants")
    }

    /// The per-channel mean.
    pub fn mean(&self) -> [f32; 3] {
        self.mean
    }

    /// The per-channel standard deviation.
    pub fn std(&self) -> [f32; 3] {
        self.std
    }

    /// Writes `(x / 255 - mean) / std` for CHW u8 `planes` of `width` × `height` into `out`
    /// (CHW f32, same length).
    pub fn apply(&self, planes_chw: &[u8], width: u32, height: u32, out: &mut [f32]) -> Result<()> {
        check_len("RGB planes", planes_chw.len(), width, height, 3)?;
        check_len("output CHW f32", out.len(), width, height, 3)?;
        let n = planes_chw.len() / 3;
        for c in 0..3 {
            let (s, b) = (self.scale[c], self.bias[c]);
            let src = &planes_chw[c * n..(c + 1) * n];
            let dst = &mut out[c * n..(c + 1) * n];
            affine(src, dst, s, b);
        }
        Ok(())
    }
}

multiversion! {
    fn affine(src: &[u8], dst: &mut [f32], s: f32, b: f32) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = f32::from(x) * s + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_the_formula() {
        let n = Normalize::new([0.5, 0.25, 0.0], [0.5, 0.25, 1.0]).unwrap();
        let planes = [0u8, 255, 0, 255, 51, 102];
        let mut out = [0f32; 6];
        n.apply(&planes, 2, 1, &mut out).unwrap();
        let want = [-1.0, 1.0, -1.0, 3.0, 0.2, 0.4];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
        assert!(Normalize::new([0.5; 3], [0.0, 1.0, 1.0]).is_err());
        assert!(n.apply(&planes, 3, 1, &mut out).is_err());
    }
}
