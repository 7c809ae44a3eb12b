//! A value set on this thread for a scope: what synchronized BatchNorm's reducer
//! ([`crate::sync_batch_norm`]) and the gradient sink ([`crate::ready::watch_grads`]) share. The
//! forward and backward of a training step run on the thread that started them, so a per-thread
//! slot reaches every op of the step without touching other threads (tests, a second run).

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread-local slot holding an optional value.
pub(crate) type Slot<T> = LocalKey<RefCell<Option<T>>>;

/// Holds a value in a thread-local slot until dropped, then puts back what the slot held before
/// (so scopes nest), also when the scope unwinds.
pub struct Scoped<T: 'static> {
    slot: &'static Slot<T>,
    before: Option<T>,
}

impl<T: 'static> Scoped<T> {
    /// Puts `value` in `slot` for the guard's lifetime.
    pub(crate) fn set(slot: &'static Slot<T>, value: T) -> Scoped<T> {
        let before = slot.with(|s| s.borrow_mut().replace(value));
        Scoped { slot, before }
    }
}

impl<T: 'static> Drop for Scoped<T> {
    fn drop(&mut self) {
        let before = self.before.take();
        self.slot.with(|s| *s.borrow_mut() = before);
    }
}

/// What `slot` holds on this thread now.
pub(crate) fn current<T: Clone + 'static>(slot: &'static Slot<T>) -> Option<T> {
    slot.with(|s| s.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: RefCell<Option<u32>> = const { RefCell::new(None) };
    }

    #[test]
    fn scopes_nest_and_restore_also_on_unwind() {
        assert_eq!(current(&SLOT), None);
        let outer = Scoped::set(&SLOT, 1);
        {
            let _inner = Scoped::set(&SLOT, 2);
            assert_eq!(current(&SLOT), Some(2));
        }
        assert_eq!(current(&SLOT), Some(1));
        let unwound = std::panic::catch_unwind(|| {
            let _g = Scoped::set(&SLOT, 3);
            panic!("inside the scope");
        });
        assert!(unwound.is_err());
        assert_eq!(current(&SLOT), Some(1));
        drop(outer);
        assert_eq!(current(&SLOT), None);
        // Another thread has a slot of its own.
        let _g = Scoped::set(&SLOT, 4);
        assert_eq!(std::thread::spawn(|| current(&SLOT)).join().unwrap(), None);
    }
}
