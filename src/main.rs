//! `siamlab`: the command line. It parses arguments and calls the library crates; no logic
//! lives here.

/// `println!` that ends the program quietly when stdout is closed (e.g. piped into `head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod cmd;
#[cfg(feature = "mpi")]
mod mpi_world;

use clap::Parser;

fn main() {
    let cli = cmd::Cli::parse();
    // The processes of this run (one, unless launched by mpirun / srun into an MPI build).
    #[cfg(feature = "mpi")]
    let world = mpi_world::init();
    #[cfg(not(feature = "mpi"))]
    let world = siamlab_world::World::init_single();
    let world = match world {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = cmd::run(cli, &world) {
        if world.size() > 1 {
            // The other ranks may be waiting in a collective: end them too.
            eprintln!("error (rank {} of {}): {e:#}", world.rank(), world.size());
            world.abort(1);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
