//! Helping the kernel's verifier: values it should not follow as constants.
//!
//! The verifier walks every path of a program, and merges two paths only where their states
//! match. A small constant computed on each of several paths (which flags a breaker gave a
//! connect(), say) keeps the paths apart for everything that follows, so connect4 walked the
//! whole admission decision once per breaker outcome: 546 000 instructions and 1.1 s of load
//! time on Linux 6.18 (0.26 s since), most of the daemon's start, and half the verifier's 1M
//! limit.
//! [`opaque`] mixes the value with one the verifier cannot know, after which the paths are
//! one again.

use crate::maps::OPAQUE;

/// `v`, as an unknown value to the verifier: xor-ed with a map word that is always 0 but that
/// the verifier must take as any value (it cannot know that nothing writes the map). Xor, not
/// or: or would leave the bits set in `v` known, and the paths apart. Nothing is written, so no
/// other program run can change what this one reads.
#[inline(always)]
pub fn opaque(v: u64) -> u64 {
    match OPAQUE.get(0) {
        Some(zero) => v ^ *zero,
        // Cannot happen (index 0 of a one-entry array). 0 is the value that asks nothing more,
        // and a constant the same on every path, which keeps them one.
        None => 0,
    }
}
