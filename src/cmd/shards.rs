//! `siamlab verify` and `siamlab inspect`.

use std::path::Path;

use siamlab_datasets::inspect;
use siamlab_datasets::shard;

pub fn verify(dir: &Path, decode: bool) -> anyhow::Result<()> {
    let r = shard::verify(dir, decode)?;
    let decoded = if decode { format!(", {} images decoded", r.decoded) } else { String::new() };
    outln!("{}: OK ({} shards, {} rows{decoded})", dir.display(), r.shards, r.rows);
    Ok(())
}

pub fn inspect(dir: &Path, split: Option<&str>, grid: Option<&Path>, n: usize) -> anyhow::Result<()> {
    let (m, splits) = inspect::summarize(dir, split)?;
    outln!("{}: source {}, schema v{}", dir.display(), m.source, m.schema_version);
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
        inspect::contact_sheet(dir, &split, n, out)?;
        outln!("wrote {} ({} samples of {split})", out.display(), n);
    }
    Ok(())
}
