//! `siamlab verify` and `siamlab inspect`.

use std::path::Path;

use clap::Args;
use siamlab_datasets::inspect;
use siamlab_datasets::shard;
use siamlab_datasets::store::{self, StoreOptions};
use siamlab_pipeline::preview::{write_sheet, SheetOptions};

/// How `inspect --grid` draws its contact sheet.
#[derive(Debug, Args)]
pub struct SheetArgs {
    /// Samples in the grid.
    #[arg(long, default_value_t = 64, requires = "grid")]
    n: usize,
    /// Cells per row [default: about square].
    #[arg(long, requires = "grid")]
    cols: Option<usize>,
    /// Enlarge every image this many times, nearest neighbour [default: the least factor that
    /// makes the images at least 96 px].
    #[arg(long, requires = "grid", value_parser = clap::value_parser!(u32).range(1..=32))]
    scale: Option<u32>,
    /// Show what this augmentation recipe makes of each sample (two views side by side, as the
    /// pipeline feeds SimSiam) instead of the stored image: simsiam, finetune or eval.
    #[arg(long, requires = "grid", value_parser = super::names::RECIPE)]
    augment: Option<String>,
}

pub fn verify(dir: &Path, decode: bool, opts: &StoreOptions) -> anyhow::Result<()> {
    let at = store::open_path(dir, opts)?;
    let r = shard::verify(&at, decode)?;
    let decoded = if decode { format!(", {} images decoded", r.decoded) } else { String::new() };
    outln!("{at}: OK ({} shards, {} rows{decoded})", r.shards, r.rows);
    if let Some(c) = at.cache_stats() {
        outln!("{}", super::store::cache_line(&c));
    }
    Ok(())
}

pub fn inspect(
    dir: &Path,
    split: Option<&str>,
    grid: Option<&Path>,
    sheet: SheetArgs,
    opts: &StoreOptions,
) -> anyhow::Result<()> {
    let at = store::open_path(dir, opts)?;
    let (m, splits) = inspect::summarize(&at, split)?;
    outln!("{at}: source {}, schema v{}", m.source, m.schema_version);
    for s in &splits {
        let size = match s.size_range {
            Some([a, b, c, d]) if (a, b) == (c, d) => format!("{a}x{b}"),
            Some([a, b, c, d]) => format!("{a}x{b} .. {c}x{d}"),
            None => "-".into(),
        };
        outln!("{}: {} rows, images {size}", s.name, s.rows);
        if let Some(classes) = &m.classes {
            for (name, count) in classes.iter().zip(&s.per_class).filter(|(_, &c)| c > 0) {
                outln!("  {name:<20} {count}");
            }
        }
        if s.unlabeled > 0 {
            outln!("  {:<20} {}", "(unlabeled)", s.unlabeled);
        }
        if let (Some(rates), Some(names)) = (&s.attribute_rates, &m.attributes) {
            for (name, r) in names.iter().zip(rates) {
                outln!("  {name:<20} {:.1}% positive", r * 100.0);
            }
        }
    }
    if let Some(out) = grid {
        let split = split.map(String::from).or_else(|| m.split_order.first().cloned()).unwrap_or_default();
        let views = if sheet.augment.as_deref() == Some("simsiam") { 2 } else { 1 };
        let o = SheetOptions {
            n: sheet.n,
            cols: sheet.cols,
            scale: sheet.scale,
            augment: sheet.augment,
            views,
            ..SheetOptions::default()
        };
        write_sheet(&at, &split, &o, out)?;
        let rows = m.split(&split).map_or(0, |s| s.rows);
        outln!("wrote {} ({} samples of {split})", out.display(), o.n.min(rows as usize));
    }
    Ok(())
}
