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
