//! The allocator setting CPU training wants: keep freed memory in the process.
//!
//! Every op allocates its output and every backward pass its gradients (dfdx 0.13 tensors own
//! their storage), tens of megabytes each, freed again within the step. glibc's malloc serves
//! such blocks with `mmap` and returns them with `munmap`, and trims the heap top back to the
//! kernel: each step then pays page faults to zero fresh pages and, with more than one thread,
//! TLB shootdowns on every unmap (measured with perf on ViT-S: 36% of the step in the kernel's
//! `native_write_msr` and `smp_call_function_many_cond`). [`retain_freed_memory`] turns both
//! off, so the blocks of one step are reused by the next; the peak resident memory is the same
//! (the peak of one step), it is just not given back between steps.

/// Tells glibc's malloc never to serve blocks with `mmap` (`M_MMAP_MAX = 0`) nor trim the
/// heap (`M_TRIM_THRESHOLD` maximal). Call it at the start of `main`, before threads start
/// (the `siamlab` binary and this crate's benchmarks do). Returns whether the allocator
/// accepted the settings; on other C libraries it does nothing and returns false.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; glibc documents both settings.
        unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
