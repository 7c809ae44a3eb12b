//! The dry-run estimate of the experiment files against the wall times measured on a 2-core
//! CPU (`siamlab ablate experiments/*-cpu.toml` on full-size stand-in archives written by
//! `tools/stand_in_archives.py`; see experiments/results/cpu-wall-times.md).

use std::path::Path;

use siamlab_trainer::ablate::{Experiment, Plan};

fn estimate_minutes(name: &str) -> f64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let e = Experiment::from_file(&dir.join(name)).unwrap();
    let plan = Plan::new(e, Path::new("runs/x"), &dir).unwrap();
    plan.estimate_secs().iter().sum::<f64>() / 60.0
}

#[test]
fn cpu_experiments_are_estimated_near_their_measured_wall_time() {
    for (file, measured) in
        [("table1-cifar10-cpu.toml", 9.5), ("table2-stl10-cpu.toml", 16.7), ("table3-celeba-cpu.toml", 14.2)]
    {
        let est = estimate_minutes(file);
        assert!((0.75..=1.33).contains(&(est / measured)), "{file}: estimated {est:.1} min, measured {measured} min");
        assert!(est < 45.0, "{file}: {est:.1} min is not well under an hour");
    }
}

#[test]
fn full_size_experiments_are_estimated_in_days_not_minutes() {
    for file in ["table1-cifar10.toml", "table2-stl10.toml", "table3-celeba.toml"] {
        let hours = estimate_minutes(file) / 60.0;
        assert!(hours > 10.0, "{file}: {hours:.1} h for 100 epochs of full-size backbones on a CPU");
    }
}
