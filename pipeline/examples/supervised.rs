//! Reusing the pipeline for a plain supervised task (no siamlab trainer, no dfdx): a softmax
//! classifier on 8×8 average-pooled pixels, trained with SGD on `finetune`-recipe batches and
//! evaluated on `eval`-recipe batches.
//!
//! ```sh
//! siamlab ingest cifar10 --src cifar-10-binary.tar.gz --out data/cifar10
//! cargo run --release -p siamlab-pipeline --example supervised -- data/cifar10
//! ```

use siamlab_pipeline::Pipeline;

const POOL: usize = 8;

/// `[3, H, W]` → 3×8×8 average-pooled features (+ bias input).
fn features(img: &[f32], h: usize, w: usize, out: &mut Vec<f32>) {
    out.clear();
    for c in 0..3 {
        for py in 0..POOL {
            for px in 0..POOL {
                let (y0, y1, x0, x1) = (py * h / POOL, (py + 1) * h / POOL, px * w / POOL, (px + 1) * w / POOL);
                let mut s = 0.0;
                for y in y0..y1 {
                    for x in x0..x1 {
                        s += img[c * h * w + y * w + x];
                    }
                }
                out.push(s / ((y1 - y0) * (x1 - x0)) as f32);
            }
        }
    }
    out.push(1.0);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: supervised SHARD_DIR [EPOCHS]")?;
    let epochs: u64 = std::env::args().nth(2).map_or(Ok(3), |e| e.parse())?;
    let manifest = siamlab_datasets::shard::Manifest::load(dir.as_ref())?;
    let classes = manifest.classes.as_ref().ok_or("this example needs a labeled dataset")?.len();
    let dim = 3 * POOL * POOL + 1;
    let mut weights = vec![0f32; classes * dim];
    let (mut f, mut logits) = (Vec::new(), vec![0f32; classes]);
    for epoch in 0..epochs {
        let train =
            Pipeline::builder(&dir).split("train").seed(0).epoch(epoch).views("finetune", 1).batch_size(128).build()?;
        let [_, _, h, w] = train.shape();
        let mut loss = 0.0;
        let mut n = 0;
        for batch in train {
            let batch = batch?;
            for k in 0..batch.len() {
                features(&batch.view(0)[k * 3 * h * w..(k + 1) * 3 * h * w], h, w, &mut f);
                for (c, l) in logits.iter_mut().enumerate() {
                    *l = weights[c * dim..(c + 1) * dim].iter().zip(&f).map(|(a, b)| a * b).sum();
                }
                let max = logits.iter().cloned().fold(f32::MIN, f32::max);
                let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                let y = batch.labels()[k] as usize;
                loss += (z.ln() + max - logits[y]) as f64;
                for c in 0..classes {
                    let g = (logits[c] - max).exp() / z - (c == y) as u8 as f32;
                    for (wi, fi) in weights[c * dim..(c + 1) * dim].iter_mut().zip(&f) {
                        *wi -= 0.01 * g * fi;
                    }
                }
                n += 1;
            }
        }
        let split = if manifest.splits.contains_key("test") { "test" } else { "train" };
        let eval = Pipeline::builder(&dir).split(split).views("eval", 1).shuffle(false).batch_size(256).build()?;
        let (mut right, mut total) = (0, 0);
        for batch in eval {
            let batch = batch?;
            for k in 0..batch.len() {
                features(&batch.view(0)[k * 3 * h * w..(k + 1) * 3 * h * w], h, w, &mut f);
                let pred = (0..classes)
                    .map(|c| (c, weights[c * dim..(c + 1) * dim].iter().zip(&f).map(|(a, b)| a * b).sum::<f32>()))
                    .fold((0, f32::MIN), |best, x| if x.1 > best.1 { x } else { best })
                    .0;
                right += (pred as i64 == batch.labels()[k]) as usize;
                total += 1;
            }
        }
        println!(
            "epoch {epoch}: train loss {:.4}, {split} accuracy {:.2}%",
            loss / n as f64,
            100.0 * right as f64 / total as f64
        );
    }
    Ok(())
}
