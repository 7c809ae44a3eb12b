//! Progress bars: drawn on a terminal, silent when quiet, in CI or when stderr is not a TTY.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar for `total` items (a spinner when unknown); hidden when `quiet` or not interactive.
pub fn bar(total: Option<u64>, quiet: bool, what: &str) -> ProgressBar {
    let hidden = quiet || std::env::var_os("CI").is_some() || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let pb = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if hidden {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}
