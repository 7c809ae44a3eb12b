//! Where the time goes: wall time per op of this crate, forward and backward apart, when
//! enabled (`profile::enable(true)`, or `SIAMLAB_PROFILE=1` for the benchmarks). Off, an op
//! pays one relaxed atomic load. Time outside these ops (dfdx's own ops, the optimizer, the
//! loss) is what a step takes beyond their sum.
//!
//! On a GPU an op only queues kernels; with a [`set_sync`] hook (the trainer installs one for
//! its CUDA device) each timed op waits for the device before and after, so the times are the
//! device's (profiling then serialises the step, which costs a little).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

std::thread_local! {
    static SYNC: std::cell::RefCell<Option<Box<dyn Fn()>>> = const { std::cell::RefCell::new(None) };
}

/// Sets (or clears) what waits for the device of this thread's ops, called around each timed
/// op while profiling is on.
pub fn set_sync(sync: Option<Box<dyn Fn()>>) {
    SYNC.with(|s| *s.borrow_mut() = sync);
}

fn sync() {
    SYNC.with(|s| {
        if let Some(f) = s.borrow().as_ref() {
            f();
        }
    });
}

/// Turns timing on or off (off by default).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether timing is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Forgets the times gathered so far.
pub fn reset() {
    TIMES.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// One op's total: `name` is `op.forward` or `op.backward`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// Op and direction, e.g. `conv2d.backward`.
    pub name: &'static str,
    /// Calls.
    pub calls: u64,
    /// Wall time summed over the calls.
    pub total: Duration,
}

/// The times gathered since the last [`reset`], longest first.
pub fn report() -> Vec<OpTime> {
    let times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<OpTime> = times.iter().map(|(&name, &(calls, total))| OpTime { name, calls, total }).collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.total));
    out
}

/// Times its own lifetime under `name` when profiling is on.
pub(crate) struct Scope {
    name: &'static str,
    start: Option<Instant>,
}

/// Starts timing a name built by `name` only when profiling is on (e.g. one naming a shape);
/// names are interned once each.
pub(crate) fn scope_named(name: impl FnOnce() -> String) -> Scope {
    if !enabled() {
        return Scope { name: "", start: None };
    }
    static NAMES: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());
    let name = name();
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let name = match names.get(&name) {
        Some(&n) => n,
        None => {
            let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
            names.insert(name, leaked);
            leaked
        }
    };
    drop(names);
    scope(name)
}

/// Starts timing `name` (a no-op when profiling is off).
pub(crate) fn scope(name: &'static str) -> Scope {
    let start = enabled().then(|| {
        sync();
        Instant::now()
    });
    Scope { name, start }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            sync();
            let dt = start.elapsed();
            let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
            let entry = times.entry(self.name).or_insert((0, Duration::ZERO));
            entry.0 += 1;
            entry.1 += dt;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_add_up_only_while_enabled() {
        reset();
        drop(scope("test.off"));
        enable(true);
        for _ in 0..3 {
            let _s = scope("test.on");
            std::thread::sleep(Duration::from_millis(1));
        }
        enable(false);
        let r = report();
        let on = r.iter().find(|t| t.name == "test.on").expect("timed");
        assert_eq!(on.calls, 3);
        assert!(on.total >= Duration::from_millis(3));
        assert!(r.iter().all(|t| t.name != "test.off"));

        // Names built at run time (a convolution's shape) are built only while profiling is on,
        // and one name seen twice is one row.
        let built = std::cell::Cell::new(0);
        let name = || {
            built.set(built.get() + 1);
            "test.named 3x3".to_string()
        };
        drop(scope_named(name));
        assert_eq!(built.get(), 0, "not built while off");
        enable(true);
        drop(scope_named(name));
        drop(scope_named(name));
        enable(false);
        assert_eq!(report().iter().find(|t| t.name == "test.named 3x3").map(|t| t.calls), Some(2));

        // A sync hook (this thread's) runs before and after each timed op, only while on.
        use std::cell::Cell;
        use std::rc::Rc;
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        set_sync(Some(Box::new(move || c.set(c.get() + 1))));
        drop(scope("test.sync.off"));
        assert_eq!(calls.get(), 0, "not while profiling is off");
        enable(true);
        drop(scope("test.sync"));
        enable(false);
        set_sync(None);
        assert_eq!(calls.get(), 2, "before and after the op");
    }
}
