//! Resampling weights trained at another input size, as timm does it: position grids by
//! PyTorch's bicubic `F.interpolate` (`align_corners=False`, with or without antialiasing),
//! patch-embedding kernels by timm's `resample_patch_embed` (FlexiViT: the pseudo-inverse of
//! the bicubic resize, so that a resized patch through the new kernel gives what the old
//! patch gave through the old one). Computed in f64.

use crate::weights::WeightsError;

/// For each output position, the input positions and weights PyTorch's bicubic interpolation
/// reads along one axis of `input` samples resized to `output`.
///
/// Without antialiasing (`upsample_bicubic2d`): the source position is
/// `(i + 0.5)·in/out − 0.5`, four taps of Keys' cubic with `a = −0.75`, indices clamped to the
/// border. With antialiasing (`_upsample_bicubic2d_aa`, as PIL): the cubic with `a = −0.5`,
/// stretched by the scale when shrinking, over the taps that fall inside the input, normalised to
/// sum to one.
pub(crate) fn axis_weights(input: usize, output: usize, antialias: bool) -> Vec<Vec<(usize, f64)>> {
    let scale = input as f64 / output as f64;
    (0..output).map(|i| if antialias { antialias_taps(input, scale, i) } else { cubic_taps(input, scale, i) }).collect()
}

fn cubic1(x: f64, a: f64) -> f64 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

fn cubic2(x: f64, a: f64) -> f64 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

fn cubic_taps(input: usize, scale: f64, i: usize) -> Vec<(usize, f64)> {
    const A: f64 = -0.75;
    let real = scale * (i as f64 + 0.5) - 0.5;
    let x0 = real.floor();
    let t = real - x0;
    let coeffs = [cubic2(t + 1.0, A), cubic1(t, A), cubic1(1.0 - t, A), cubic2(2.0 - t, A)];
    let last = input as i64 - 1;
    coeffs.iter().enumerate().map(|(k, &w)| (((x0 as i64) - 1 + k as i64).clamp(0, last) as usize, w)).collect()
}

fn antialias_taps(input: usize, scale: f64, i: usize) -> Vec<(usize, f64)> {
    const A: f64 = -0.5;
    let filter = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            cubic1(x, A)
        } else if x < 2.0 {
            cubic2(x, A)
        } else {
            0.0
        }
    };
    let (support, invscale) = if scale >= 1.0 { (2.0 * scale, 1.0 / scale) } else { (2.0, 1.0) };
    let max_taps = support.ceil() as usize * 2 + 1;
    let center = scale * (i as f64 + 0.5);
    // C++ casts truncate toward zero.
    let xmin = ((center - support + 0.5) as i64).max(0) as usize;
    let xend = ((center + support + 0.5) as i64).min(input as i64).max(xmin as i64) as usize;
    let taps: Vec<(usize, f64)> =
        (xmin..xend).take(max_taps).map(|j| (j, filter((j as f64 - center + 0.5) * invscale))).collect();
    let total: f64 = taps.iter().map(|t| t.1).sum();
    if total == 0.0 {
        return taps;
    }
    taps.into_iter().map(|(j, w)| (j, w / total)).collect()
}

/// Bicubic resize of `channels` planes `[channels, h, w]` to `[channels, oh, ow]`
/// (`F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False, antialias=...)`).
pub fn interpolate_bicubic(
    x: &[f64],
    channels: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    antialias: bool,
) -> Vec<f64> {
    assert_eq!(x.len(), channels * h * w, "interpolate_bicubic: input is not [channels, h, w]");
    let wy = axis_weights(h, oh, antialias);
    let wx = axis_weights(w, ow, antialias);
    let mut rows = vec![0f64; channels * h * ow];
    for c in 0..channels {
        for r in 0..h {
            let src = &x[(c * h + r) * w..(c * h + r + 1) * w];
            for (j, taps) in wx.iter().enumerate() {
                rows[(c * h + r) * ow + j] = taps.iter().map(|&(k, wt)| wt * src[k]).sum();
            }
        }
    }
    let mut out = vec![0f64; channels * oh * ow];
    for c in 0..channels {
        for (i, taps) in wy.iter().enumerate() {
            for j in 0..ow {
                out[(c * oh + i) * ow + j] = taps.iter().map(|&(k, wt)| wt * rows[(c * h + k) * ow + j]).sum();
            }
        }
    }
    out
}

/// timm's `resample_abs_pos_embed` for a ViT position embedding `[1, prefix + h·w, dim]`: the
/// `prefix` leading tokens (the class token) are kept, the `h × w` grid is resized bicubically
/// to `oh × ow`. Returns `[1, prefix + oh·ow, dim]`.
pub fn resample_pos_embed_tokens(
    x: &[f64],
    prefix: usize,
    dim: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    antialias: bool,
) -> Vec<f64> {
    assert_eq!(x.len(), (prefix + h * w) * dim, "resample_pos_embed_tokens: input is not [1, prefix + h·w, dim]");
    let grid = &x[prefix * dim..];
    // [h·w, dim] → [dim, h, w]
    let mut planes = vec![0f64; dim * h * w];
    for p in 0..h * w {
        for d in 0..dim {
            planes[d * h * w + p] = grid[p * dim + d];
        }
    }
    let resized = interpolate_bicubic(&planes, dim, (h, w), (oh, ow), antialias);
    let mut out = x[..prefix * dim].to_vec();
    out.resize((prefix + oh * ow) * dim, 0.0);
    for p in 0..oh * ow {
        for d in 0..dim {
            out[(prefix + p) * dim + d] = resized[d * oh * ow + p];
        }
    }
    out
}

/// timm's `resample_patch_embed`: kernels `[kernels, kh, kw]` (output × input channels of a
/// patch-embedding convolution, flattened) to `[kernels, nh, nw]`, through the pseudo-inverse
/// of the bicubic resize matrix `R` (`[nh·nw, kh·kw]`): `k_new = pinv(R)ᵀ k_old`.
/// [`WeightsError::RankDeficient`] when `R` is rank-deficient (it is not, for the sizes a patch
/// embedding uses).
pub fn resample_patch_kernel(
    x: &[f64],
    kernels: usize,
    (kh, kw): (usize, usize),
    (nh, nw): (usize, usize),
    antialias: bool,
) -> Result<Vec<f64>, WeightsError> {
    assert_eq!(x.len(), kernels * kh * kw, "resample_patch_kernel: input is not [kernels, kh, kw]");
    let (n, m) = (kh * kw, nh * nw);
    let r = resize_matrix((kh, kw), (nh, nw), antialias);
    let mut out = vec![0f64; kernels * m];
    let rank_deficient = || WeightsError::RankDeficient { from: (kh, kw), to: (nh, nw) };
    if m <= n {
        // Full row rank: pinv(R) = Rᵀ (R Rᵀ)⁻¹, so k_new = (R Rᵀ)⁻¹ R k_old.
        let gram = gram(&r, m, n, true);
        let chol = cholesky(gram, m).ok_or_else(rank_deficient)?;
        for (k, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(m)) {
            let rk: Vec<f64> = (0..m).map(|i| (0..n).map(|j| r[i * n + j] * k[j]).sum()).collect();
            dst.copy_from_slice(&cholesky_solve(&chol, m, rk));
        }
    } else {
        // Full column rank: pinv(R) = (Rᵀ R)⁻¹ Rᵀ, so k_new = R (Rᵀ R)⁻¹ k_old.
        let gram = gram(&r, m, n, false);
        let chol = cholesky(gram, n).ok_or_else(rank_deficient)?;
        for (k, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(m)) {
            let z = cholesky_solve(&chol, n, k.to_vec());
            for (i, d) in dst.iter_mut().enumerate() {
                *d = (0..n).map(|j| r[i * n + j] * z[j]).sum();
            }
        }
    }
    Ok(out)
}

/// The bicubic resize from `kh × kw` to `nh × nw` as a matrix `[nh·nw, kh·kw]`:
/// `R[(i, j), (a, b)] = wy[i][a] · wx[j][b]` (taps clamped to the border add up).
fn resize_matrix((kh, kw): (usize, usize), (nh, nw): (usize, usize), antialias: bool) -> Vec<f64> {
    let n = kh * kw;
    let wy = axis_weights(kh, nh, antialias);
    let wx = axis_weights(kw, nw, antialias);
    let mut r = vec![0f64; nh * nw * n];
    for (i, ty) in wy.iter().enumerate() {
        for (j, tx) in wx.iter().enumerate() {
            for &(a, u) in ty {
                for &(b, v) in tx {
                    r[(i * nw + j) * n + a * kw + b] += u * v;
                }
            }
        }
    }
    r
}

/// `R Rᵀ` (`rows = true`, `[m, m]`) or `Rᵀ R` (`[n, n]`) of `r` `[m, n]`.
fn gram(r: &[f64], m: usize, n: usize, rows: bool) -> Vec<f64> {
    let s = if rows { m } else { n };
    let mut g = vec![0f64; s * s];
    for p in 0..s {
        for q in 0..=p {
            let v: f64 = if rows {
                (0..n).map(|j| r[p * n + j] * r[q * n + j]).sum()
            } else {
                (0..m).map(|i| r[i * n + p] * r[i * n + q]).sum()
            };
            g[p * s + q] = v;
            g[q * s + p] = v;
        }
    }
    g
}

/// Lower-triangular `L` with `L Lᵀ = a` (`[s, s]`, symmetric); `None` when `a` is not
/// positive definite (to a relative tolerance).
fn cholesky(mut a: Vec<f64>, s: usize) -> Option<Vec<f64>> {
    let scale = (0..s).map(|i| a[i * s + i]).fold(0f64, f64::max);
    for j in 0..s {
        let d = a[j * s + j] - (0..j).map(|k| a[j * s + k] * a[j * s + k]).sum::<f64>();
        if d <= 1e-12 * scale {
            return None;
        }
        let d = d.sqrt();
        a[j * s + j] = d;
        for i in j + 1..s {
            let v = a[i * s + j] - (0..j).map(|k| a[i * s + k] * a[j * s + k]).sum::<f64>();
            a[i * s + j] = v / d;
        }
    }
    for i in 0..s {
        for j in i + 1..s {
            a[i * s + j] = 0.0;
        }
    }
    Some(a)
}

/// Solves `L Lᵀ x = b`.
fn cholesky_solve(l: &[f64], s: usize, mut b: Vec<f64>) -> Vec<f64> {
    for i in 0..s {
        let v = b[i] - (0..i).map(|k| l[i * s + k] * b[k]).sum::<f64>();
        b[i] = v / l[i * s + i];
    }
    for i in (0..s).rev() {
        let v = b[i] - (i + 1..s).map(|k| l[k * s + i] * b[k]).sum::<f64>();
        b[i] = v / l[i * s + i];
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_sizes_keep_values() {
        let x: Vec<f64> = (0..2 * 5 * 4).map(|i| (i as f64 * 0.3).sin()).collect();
        for aa in [false, true] {
            let y = interpolate_bicubic(&x, 2, (5, 4), (5, 4), aa);
            assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-12));
        }
    }

    #[test]
    fn constants_stay_constant() {
        let x = vec![0.7; 3 * 14 * 14];
        for aa in [false, true] {
            for to in [(8, 8), (20, 20), (3, 9)] {
                let y = interpolate_bicubic(&x, 3, (14, 14), to, aa);
                assert!(y.iter().all(|v| (v - 0.7).abs() < 1e-12), "{to:?} {aa}");
            }
        }
    }

    /// `<R x, k>` for `R` from `old` to `new`.
    fn through(x: &[f64], k: &[f64], old: (usize, usize), new: (usize, usize)) -> f64 {
        let r = resize_matrix(old, new, true);
        let n = old.0 * old.1;
        k.iter().enumerate().map(|(i, kv)| kv * (0..n).map(|j| r[i * n + j] * x[j]).sum::<f64>()).sum()
    }

    #[test]
    fn patch_kernel_keeps_responses() {
        // FlexiViT: a patch resized to the new size through the new kernel gives what the old
        // patch gave through the old kernel, exactly when enlarging the kernel...
        let k: Vec<f64> = (0..16).map(|i| (i as f64 * 0.37).cos()).collect();
        let big = resample_patch_kernel(&k, 1, (4, 4), (8, 8), true).unwrap();
        for s in 0..5 {
            let x: Vec<f64> = (0..16).map(|i| ((i * 7 + s) as f64 * 0.91).sin()).collect();
            let want: f64 = x.iter().zip(&k).map(|(a, b)| a * b).sum();
            assert!((through(&x, &big, (4, 4), (8, 8)) - want).abs() < 1e-9);
        }
        // ... and for patches in the row space of the resize when shrinking it.
        let k: Vec<f64> = (0..64).map(|i| (i as f64 * 0.37).cos()).collect();
        let small = resample_patch_kernel(&k, 1, (8, 8), (4, 4), true).unwrap();
        let r = resize_matrix((8, 8), (4, 4), true);
        let y: Vec<f64> = (0..16).map(|i| (i as f64 * 1.3).sin()).collect();
        let x: Vec<f64> = (0..64).map(|j| (0..16).map(|i| r[i * 64 + j] * y[i]).sum()).collect();
        let want: f64 = x.iter().zip(&k).map(|(a, b)| a * b).sum();
        assert!((through(&x, &small, (8, 8), (4, 4)) - want).abs() < 1e-9);
    }

    #[test]
    fn a_rank_deficient_resize_is_an_error() {
        // 1 x 8 to 2 x 2: both output rows copy the one input row, so `R` has rank 2, not 4.
        let k: Vec<f64> = (0..16).map(|i| i as f64).collect();
        for aa in [false, true] {
            let err = resample_patch_kernel(&k, 2, (1, 8), (2, 2), aa).unwrap_err();
            assert!(matches!(err, WeightsError::RankDeficient { from: (1, 8), to: (2, 2) }), "{err}");
            assert_eq!(
                err.to_string(),
                "the bicubic resize from 1x8 to 2x2 is rank-deficient; its pseudo-inverse is not unique"
            );
        }
    }
}
