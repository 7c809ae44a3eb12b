//! What the launcher says: `mpirun` (Open MPI, MPICH / Hydra) and `srun` (Slurm) tell every task
//! how many there are in environment variables, before any MPI call.

/// The number of tasks a launcher started this process among, and the variable that said so
/// (`OMPI_COMM_WORLD_SIZE`, `PMI_SIZE`, `SLURM_NTASKS`); `None` when none did.
pub fn launcher_tasks() -> Option<(&'static str, usize)> {
    tasks_in(|k| std::env::var(k).ok())
}

fn tasks_in(var: impl Fn(&str) -> Option<String>) -> Option<(&'static str, usize)> {
    const VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"];
    VARS.iter().find_map(|&k| var(k).and_then(|v| v.trim().parse().ok()).map(|n| (k, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_launcher_variable_that_parses_counts() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(tasks_in(env(&[])), None);
        assert_eq!(tasks_in(env(&[("SLURM_NTASKS", "4")])), Some(("SLURM_NTASKS", 4)));
        assert_eq!(tasks_in(env(&[("PMI_SIZE", "2"), ("SLURM_NTASKS", "4")])), Some(("PMI_SIZE", 2)));
        assert_eq!(tasks_in(env(&[("OMPI_COMM_WORLD_SIZE", "x"), ("SLURM_NTASKS", "3")])), Some(("SLURM_NTASKS", 3)));
    }
}
