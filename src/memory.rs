//! What the process asks of its allocator beyond allocating.
//!
//! The binary runs on mimalloc. It keeps the pages of freed blocks for a short delay before
//! handing them back to the system, which is right while connections come and go, but not when
//! a great many are freed at once (the end of a run) and what comes next is allocated in other
//! size classes: the run's peak memory then holds both.

/// Returns the allocator's wholly free pages to the system now. Harmless where mimalloc is not
/// the global allocator (tests, benches): its own heap is then empty.
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
