//! What each hook's return value means to the kernel, named in one place, and the one reason a
//! program lets something through undecided.
//!
//! limiter fails open: it refuses only what a rule decided to refuse. Every `try_*` function
//! returns `Result<Verdict, Undecided>`, and its entry point in main.rs turns `Undecided` into
//! its hook's pass verdict, once per program. A hook that decides has a `Verdict` enum whose
//! discriminants are the kernel's values (so one hook's verdict cannot be returned by
//! another); sock_ops and the iterator decide nothing and have one return value each.

/// A program reached no verdict; its entry point lets the packet or connect() through. Either
/// there was nothing of limiter's to decide (another protocol, a packet that opens no
/// connection, no rule of the kind this hook enforces for the destination, a flow another hook
/// decides), or limiter could not decide (a packet or context it cannot read, a map without the
/// entry or the room it needs: a rule's slots, a socket's storage).
///
/// Zero-sized on purpose: with a verdict enum beside it, `Result<Verdict, Undecided>` is one
/// integer (the error is a value the enum does not use). A reason carried in the error made it
/// a tag and a payload, which LLVM kept packed in a register across the whole program, and the
/// verifier walked cgroup_skb/egress 60% longer.
#[derive(Clone, Copy)]
pub struct Undecided;

/// cgroup_skb (ingress and egress) at the cgroup v2 root.
pub mod skb {
    #[repr(i32)]
    #[derive(Clone, Copy)]
    pub enum Verdict {
        /// The kernel discards the packet. A dropped SYN is retransmitted by its sender after
        /// its SYN timeout; a dropped ACK leaves the handshake unfinished.
        Drop = 0,
        /// The packet goes on.
        Pass = 1,
    }
}

/// cgroup/connect4 and connect6 (cgroup sock_addr) at the cgroup v2 root.
pub mod sock_addr {
    #[repr(i32)]
    #[derive(Clone, Copy)]
    pub enum Verdict {
        /// connect() fails before any packet is sent: with the error set by bpf_set_retval
        /// (ECONNREFUSED, Linux 5.18+), else EPERM.
        Refuse = 0,
        /// connect() goes on.
        Allow = 1,
    }
}

/// sk_lookup, attached to each network namespace.
pub mod sk_lookup {
    #[repr(u32)]
    #[derive(Clone, Copy)]
    pub enum Verdict {
        /// The lookup finds no socket: TCP answers the SYN with a RST, so the caller gets
        /// ECONNREFUSED at once.
        Drop = 0,
        /// The lookup goes on to the listening sockets (no socket was selected).
        Pass = 1,
    }
}

/// sock_ops at the cgroup v2 root.
pub mod sock_ops {
    /// The only return value, success: for the callbacks limiter asks for (established,
    /// connect, state, retransmission timeout) the kernel does not act on the outcome, and
    /// limiter refuses nothing there.
    pub const HANDLED: u32 = 1;
}

/// The seeding iterator (`iter/bpf_sk_storage_map`).
pub mod iter {
    /// On to the next socket record: the only value that lets the walk go on.
    pub const NEXT: i32 = 0;
}
