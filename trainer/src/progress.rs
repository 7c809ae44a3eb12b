//! The progress bar of a run (indicatif): position in optimizer steps, loss, lr, throughput
//! and ETA; hidden in quiet mode or when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A run's progress bar.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total` steps starting at `done`.
    pub fn new(quiet: bool, total: u64, done: u64, what: &str) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
        );
        if let Ok(style) =
            ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}} steps  {{msg}}  eta {{eta}}"))
        {
            bar.set_style(style);
        }
        bar.set_position(done);
        Progress { bar }
    }

    /// After an optimizer step.
    pub fn step(&self, pos: u64, loss: f32, lr: f64, rate: f64) {
        self.bar.set_position(pos);
        self.bar.set_message(format!("loss {loss:+.4}  lr {lr:.2e}  {rate:.1} img/s"));
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
