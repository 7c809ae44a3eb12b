//! `siamlab ablate FILE.toml` and `siamlab demo`.

use std::path::{Path, PathBuf};

use siamlab_datasets::StoreOptions;
use siamlab_trainer::ablate::{duration, run, Experiment, Plan, DEMO};
use siamlab_trainer::run::files::{RESULTS_MD, RUNS_PLOT};
use siamlab_trainer::DeviceSpec;

pub fn ablate(
    file: &Path,
    work: Option<PathBuf>,
    dry_run: bool,
    quiet: bool,
    device: DeviceSpec,
    data: Option<(String, StoreOptions)>,
) -> anyhow::Result<()> {
    let e = Experiment::from_file(file)?;
    let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let work = work.unwrap_or_else(|| PathBuf::from("runs").join(&e.name));
    execute(e, &work, base, dry_run, quiet, device, data)
}

pub fn demo(work: PathBuf, seeds: Option<Vec<u64>>, quiet: bool, device: DeviceSpec) -> anyhow::Result<()> {
    let mut e = Experiment::from_toml(DEMO)?;
    if let Some(s) = seeds {
        e.seeds = s;
    }
    outln!("{}", e.title);
    outln!("work folder: {} (rerun to continue; delete it to start over)", work.display());
    execute(e, &work, Path::new("."), false, quiet, device, None)
}

fn execute(
    e: Experiment,
    work: &Path,
    base: &Path,
    dry_run: bool,
    quiet: bool,
    device: DeviceSpec,
    data: Option<(String, StoreOptions)>,
) -> anyhow::Result<()> {
    let mut plan = Plan::new(e, work, base)?;
    plan.set_device(device);
    if let Some((root, store)) = data {
        plan.set_data(&root, &store);
    }
    if dry_run {
        for line in plan.describe() {
            outln!("{line}");
        }
        outln!(
            "{} steps; estimated {} on a 2-core CPU (from measured throughputs of each backbone)",
            plan.steps.len(),
            duration(plan.estimate_secs().iter().sum())
        );
        return Ok(());
    }
    run(&plan, quiet, &mut |l| outln!("{l}"))?;
    let md = std::fs::read_to_string(work.join(RESULTS_MD))?;
    outln!("\n{md}");
    outln!("table: {} (and results.json beside it)", work.join(RESULTS_MD).display());
    outln!("plot:  {} (every run's curves; `siamlab show RUN` for one run)", work.join(RUNS_PLOT).display());
    Ok(())
}
