//! What the process asks of its allocator beyond allocating.
//!
//! The binary runs on mimalloc. It keeps the pages of freed blocks for a while before handing
//! them back to the system, which is right while connections come and go, but not when a great
//! many are freed at once (the end of a run) and what comes next is allocated in other size
//! classes: the run's peak memory then holds both.

/// mimalloc's `mi_option_purge_delay` (v2's `mi_option_t`; the bindings name no constant for
/// it): milliseconds a freed page stays with the process before it is handed back. It sits
/// between two options the bindings do name; the assertion stops a build against bindings
/// whose numbering moved.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(
    libmimalloc_sys::mi_option_eager_commit_delay + 1 == MI_OPTION_PURGE_DELAY
        && MI_OPTION_PURGE_DELAY + 1 == libmimalloc_sys::mi_option_use_numa_nodes
);

/// How long freed pages stay before they go back to the system. mimalloc's default of 10 ms
/// is shorter than the gap between two bursts of finished connections (the collector frees a
/// report's lines, the workers allocate the next ones): pages handed back were faulted in and
/// zeroed by the kernel again moments later, up to a tenth of a two-thread replay's CPU on the
/// development VM. A second keeps them while the traffic is steady; memory still goes back
/// seconds after a drop (whole arena ranges wait ten times the delay), and at once where
/// [`release_freed_memory`] asks.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Sets the allocator's options; call first thing, before any thread is started.
pub fn configure_allocator() {
    // SAFETY: `mi_option_set` takes no pointers; options are plain integers read on use.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Returns the allocator's wholly free pages to the system now. Harmless where mimalloc is not
/// the global allocator (tests, benches): its own heap is then empty.
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
