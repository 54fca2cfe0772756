//! Switches the daemon sets at load time from what it probed in the running kernel.
//!
//! aya writes them into `.rodata`, which it freezes before the programs load, so the verifier
//! reads each as a constant and never walks the branch not taken (and drops it). A helper a
//! kernel lacks can therefore sit in a dead branch without the program being refused there:
//! one object, CO-RE only, for every supported kernel. The names are the contract with
//! `limiter-user/src/dataplane/capabilities.rs`; the daemon sets them by
//! limiter_common::names::globals.

/// 1 where connect4/6 may call `bpf_set_retval` (Linux 5.18+): a refused connect() then fails
/// with ECONNREFUSED. 0: the refusal is the plain verdict, which the caller sees as EPERM.
#[unsafe(no_mangle)]
static LIMITER_HAS_SET_RETVAL: u8 = 1;

/// 1 where the socket-storage iterator cannot run (refused tracing programs, or a kernel
/// without BPF iterators): connections open when a rule appears are adopted by their next
/// packet instead (adopt.rs).
#[unsafe(no_mangle)]
static LIMITER_ADOPT_ON_PACKET: u8 = 0;

#[inline(always)]
fn read(flag: &'static u8) -> bool {
    // SAFETY: a plain read of a static; volatile so that the compiler keeps the load (the
    // value is only known when the object is loaded).
    unsafe { core::ptr::read_volatile(flag) != 0 }
}

#[inline(always)]
pub fn has_set_retval() -> bool {
    read(&LIMITER_HAS_SET_RETVAL)
}

#[inline(always)]
pub fn adopt_on_packet() -> bool {
    read(&LIMITER_ADOPT_ON_PACKET)
}
