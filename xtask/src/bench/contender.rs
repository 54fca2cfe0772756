//! The contenders: what limits a destination in a run, and the order they take turns in.

/// What limits a destination in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    None,
    Client,
    ServerReject,
    ServerDrop,
    Iptables,
    Nftables,
    /// limiter's programs attached, but no rule for the destination (scenario 3 only): what
    /// every connection on a node with limiter pays.
    Unruled,
    /// limiter with a client-side rule on another destination (ELSEWHERE) and none on this one
    /// (scenario 3 only): what connections no rule covers pay on a node where rules exist.
    Elsewhere,
}

/// The destination of [`Contender::Elsewhere`]'s rule: in 198.18.0.0/15 (world.rs), never
/// connected to.
pub const ELSEWHERE: &str = "198.18.0.10:8300";

impl Contender {
    pub const ALL: [Self; 6] = [
        Self::None,
        Self::Client,
        Self::ServerReject,
        Self::ServerDrop,
        Self::Iptables,
        Self::Nftables,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::None => "no limiter",
            Self::Client => "limiter client-side reject",
            Self::ServerReject => "limiter server-side reject",
            Self::ServerDrop => "limiter server-side drop",
            Self::Iptables => "iptables connlimit reject",
            Self::Nftables => "nftables ct count reject",
            Self::Unruled => "limiter attached, no rule at all",
            Self::Elsewhere => "limiter attached, a rule on another destination only",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Client => "limiter client",
            Self::ServerReject => "limiter server reject",
            Self::ServerDrop => "limiter server drop",
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
            Self::Unruled => "limiter, no rule",
            Self::Elsewhere => "limiter, rule elsewhere",
        }
    }

    /// The short names of `contenders`, as the categories of a bar plot.
    pub fn labels(contenders: &[Contender]) -> Vec<String> {
        contenders.iter().map(|c| c.short().to_string()).collect()
    }

    pub fn is_limiter(self) -> bool {
        matches!(
            self,
            Self::Client | Self::ServerReject | Self::ServerDrop | Self::Unruled | Self::Elsewhere
        )
    }

    /// limiter attached with no rule covering the measured destination.
    pub fn is_uncovered_limiter(self) -> bool {
        matches!(self, Self::Unruled | Self::Elsewhere)
    }

    /// The run order of repetition `rep`: the families (none, limiter, iptables, nftables)
    /// rotate, and so do the limiter's variants inside theirs (which share one daemon).
    pub fn order(rep: usize, of: &[Self]) -> Vec<Self> {
        let lim: Vec<Self> = of.iter().copied().filter(|c| c.is_limiter()).collect();
        let mut blocks: Vec<Vec<Self>> = of
            .iter()
            .filter(|c| !c.is_limiter())
            .map(|&c| vec![c])
            .collect();
        if !lim.is_empty() {
            let mut lim = lim;
            let n = lim.len();
            lim.rotate_left(rep % n);
            blocks.insert(1.min(blocks.len()), lim);
        }
        let n = blocks.len();
        blocks.rotate_left(rep % n);
        blocks.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_rotates_families_and_keeps_the_limiter_together() {
        let all = Contender::ALL;
        let first = Contender::order(0, &all);
        assert_eq!(first.len(), 6);
        assert_eq!(first[0], Contender::None);
        assert!(first[1..4].iter().all(|c| c.is_limiter()));
        let second = Contender::order(1, &all);
        assert_eq!(second[0], Contender::ServerReject);
        assert_eq!(second[5], Contender::None);
        let few = Contender::order(3, &[Contender::None, Contender::Iptables]);
        assert_eq!(few, [Contender::Iptables, Contender::None]);
    }
}
