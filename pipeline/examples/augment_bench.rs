//! Single-thread throughput of the augmentation recipes, and the cost of each op.
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-pipeline cargo run --release --example augment_bench [SECONDS]
//! ```
//!
//! Prints views/s per recipe at 32 and 96 px (one view = one augmented `[3, S, S]` f32 output
//! from an in-memory RGB8 image of the same size; a SimSiam pair is two views), and µs per call
//! of each op at those sizes. The pipeline target (issue 3) is 40,000 pairs/s at 32 px and
//! 5,000 at 96 px on two cores, decode and batching included.

use std::hint::black_box;
use std::time::{Duration, Instant};

use siamlab_pipeline::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, crop_to_planes, gaussian_blur, grayscale,
    resized_crop, sample_rng, BlurScratch, CropBox, GaussianBlur, Normalize, Recipe, RecipeConfig, Resizer, Scratch,
    SimSiamConfig,
};

/// Smooth gradients plus noise, like the fixtures (deterministic, no RNG crate needed).
fn images(size: u32, count: usize) -> Vec<Vec<u8>> {
    let mut state = 0x1234_5678_u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 41) as i32 - 20
    };
    (0..count)
        .map(|k| {
            let mut v = Vec::with_capacity((size * size * 3) as usize);
            for y in 0..size {
                for x in 0..size {
                    for c in 0..3u32 {
                        let base = (x * (3 + c) + y * (5 - c) + k as u32 * 17) % 256;
                        v.push((base as i32 + noise()).clamp(0, 255) as u8);
                    }
                }
            }
            v
        })
        .collect()
}

/// Views per second: the median over batches of 64 views (the machine may be shared, so the
/// median of short batches is steadier than one long run), and the overall mean rate.
fn views_per_second(recipe: &Recipe, imgs: &[Vec<u8>], size: u32, budget: Duration) -> (f64, f64) {
    let mut out = vec![0f32; recipe.output_len()];
    let mut scratch = Scratch::new();
    let start = Instant::now();
    let mut n = 0u64;
    let mut rates = Vec::new();
    while start.elapsed() < budget {
        let t = Instant::now();
        for _ in 0..64 {
            let img = &imgs[(n as usize) % imgs.len()];
            let mut rng = sample_rng(0, 0, n / 2, (n % 2) as u32);
            recipe.apply(img, size, size, &mut rng, &mut out, &mut scratch).expect("valid input");
            black_box(&out);
            n += 1;
        }
        rates.push(64.0 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], n as f64 / start.elapsed().as_secs_f64())
}

/// Best-of-batches time per call: robust to the machine being shared.
fn time_op(name: &str, reps: u32, mut f: impl FnMut()) {
    let batch = reps / 10 + 1;
    for _ in 0..batch {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..10 {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
    }
    println!("    {name:<34} {best:>8.2} µs");
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let budget = Duration::from_secs_f64(seconds);
    let norm = Normalize::new([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).expect("valid");
    println!("augment_bench: one thread, {seconds} s per figure");
    for size in [32u32, 96] {
        let imgs = images(size, 64);
        println!("\n{size} px:");
        let mut recipes = vec![
            ("simsiam", Recipe::simsiam(size, norm).expect("valid")),
            ("finetune", Recipe::finetune(size, norm).expect("valid")),
            ("eval", Recipe::eval(size, norm).expect("valid")),
        ];
        if size > 32 {
            // The peer benchmark's kernel (size // 10 * 2 + 1 = 19 at 96 px).
            let mut c = SimSiamConfig::paper(size);
            c.blur = Some(GaussianBlur::new(size / 10 * 2 + 1, (0.1, 2.0), 0.5).expect("valid"));
            recipes.push(("simsiam (blur kernel 19)", Recipe::new(RecipeConfig::SimSiam(c), norm).expect("valid")));
        }
        for (name, recipe) in &recipes {
            let (v, mean) = views_per_second(recipe, &imgs, size, budget);
            println!(
                "  {name:<26} {v:>9.0} views/s = {:>7.0} pairs/s/core ({:>6.2} µs/view; mean {mean:.0} views/s)",
                v / 2.0,
                1e6 / v
            );
        }

        println!("  per op ({size} px output):");
        let s = size;
        let n = (s * s * 3) as usize;
        let img = &imgs[0];
        let mut resizer = Resizer::new();
        let mut rgb = vec![0u8; n];
        let mut planes = vec![0u8; n];
        let crop = CropBox { top: s / 8, left: s / 5, height: s * 5 / 8, width: s * 3 / 4 };
        let reps = if s > 32 { 2000 } else { 20000 };
        time_op("resized_crop (crop 3/4 x 5/8)", reps, || {
            resized_crop(&mut resizer, img, s, s, crop, &mut rgb, s, s).expect("valid");
        });
        time_op("crop_to_planes (flip)", reps, || {
            crop_to_planes(&rgb, s, s, 0, 0, true, &mut planes, s, s).expect("valid");
        });
        crop_to_planes(img, s, s, 0, 0, false, &mut planes, s, s).expect("valid");
        let fresh = planes.clone();
        let mut p = fresh.clone();
        time_op("adjust_brightness", reps, || {
            p.copy_from_slice(&fresh);
            adjust_brightness(&mut p, 1.2).expect("valid");
        });
        time_op("adjust_contrast", reps, || {
            p.copy_from_slice(&fresh);
            adjust_contrast(&mut p, 0.8).expect("valid");
        });
        time_op("adjust_saturation", reps, || {
            p.copy_from_slice(&fresh);
            adjust_saturation(&mut p, 1.3).expect("valid");
        });
        time_op("adjust_hue", reps, || {
            p.copy_from_slice(&fresh);
            adjust_hue(&mut p, 0.07).expect("valid");
        });
        time_op("grayscale", reps, || {
            p.copy_from_slice(&fresh);
            grayscale(&mut p).expect("valid");
        });
        let mut bs = BlurScratch::default();
        for k in [blur_k(s), s / 10 * 2 + 1] {
            if k / 2 < s && s > 32 {
                time_op(&format!("gaussian_blur k={k}"), reps / 4, || {
                    p.copy_from_slice(&fresh);
                    gaussian_blur(&mut p, s, s, k, 1.0, &mut bs).expect("valid");
                });
            }
        }
        let mut out = vec![0f32; n];
        time_op("normalize", reps, || {
            norm.apply(&fresh, s, s, &mut out).expect("valid");
            black_box(&out);
        });
        time_op("sample_rng + Recipe::sample", reps, || {
            let mut rng = sample_rng(1, 2, 3, 0);
            black_box(recipes[0].1.sample(s, s, &mut rng).expect("valid"));
        });
    }
}

fn blur_k(size: u32) -> u32 {
    siamlab_pipeline::augment::blur_kernel_for(size)
}
