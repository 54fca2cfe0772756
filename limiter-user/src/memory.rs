//! Giving memory back to the system after a large answer.
//!
//! glibc keeps freed memory in per-thread arenas, and `status` or a metrics scrape of many
//! destinations runs on whichever blocking thread tokio picks: without a trim, each such thread
//! keeps its own peak and the daemon's RSS ratchets up with every large answer.

/// Returns free heap memory to the system (glibc `malloc_trim`); a no-op elsewhere.
pub fn release_to_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Large buffers (an answer of many destinations, 12 MB for `status` of 10 000 rules) get
/// pages of their own, given back when freed. glibc otherwise raises its mmap threshold to the
/// size of the last large buffer freed and serves the next ones from its arenas, where they
/// stay: nine `status` of 10 000 rules took the RSS from 25 to 64 MB; with a fixed threshold
/// it stayed near 20 MB (each answer pays a few ms of page faults instead). Called first thing
/// in `main`, before any thread allocates.
pub fn keep_large_buffers_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; 256 KiB is within its valid range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
