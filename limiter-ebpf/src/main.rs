#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]
use aya_ebpf::{
    macros::{map, sock_ops},
    maps::HashMap,
    programs::SockOpsContext,
};
use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg, atomic_xadd};

#[map]
static COUNTS: HashMap<u32, u64> = HashMap::with_max_entries(16, 0);

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    if let Some(p) = COUNTS.get_ptr_mut(&0) {
        let old = unsafe { atomic_xadd::<u64, u64, { SeqCst }>(p, 1) };
        let _ = unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(p, old + 1, old + 2) };
    }
    let _ = ctx.op();
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
