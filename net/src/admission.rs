//! Admission of inbound connections before they authenticate: who may hold one of the few handshake slots.
//!
//! A stranger can open sockets faster than a node can time them out, so unauthenticated connections are a
//! scarce resource with two bounds: at most `per_ip_max` pending from one source address, and at most
//! `budget` pending in all. Configured peers' addresses are never starved: a connection from a peer's
//! address that finds a bound full takes the place of a pending connection (a stranger's first, then one
//! from the same address that has made the least progress), so a flood, even one from a peer's own host,
//! cannot keep a peer out for longer than its own handshake takes.
//!
//! Invariants:
//! - `pending` counts exactly the inbound connections admitted and not yet authenticated or closed: every
//!   `admit` is matched by one `release` (the caller holds the address in the connection until released).
//! - A stranger over a bound is refused; it never displaces anyone.
//! - The limit for a peer's address grows with the number of peers sharing it (several nodes on one host).

use std::collections::HashMap;
use std::net::IpAddr;

/// What to do with a freshly accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Admit after closing one pending connection chosen by [`Displace`].
    AdmitDisplacing(Displace),
    Refuse(Refusal),
}

/// Which pending connection a peer's new connection may take the place of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Displace {
    /// Its own address is at its limit: one pending connection from the same address.
    SameAddress,
    /// The budget is full: a stranger's pending connection if there is one, else any from a peer address.
    AnyStrangerFirst,
}

/// Why a connection was refused at the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PerAddressLimit,
    Budget,
}

impl Refusal {
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::PerAddressLimit => "too many unauthenticated connections from this address",
            Refusal::Budget => "handshake budget full",
        }
    }
}

pub struct Admission {
    per_ip_max: usize,
    budget: usize,
    /// Configured peers' addresses, with how many peers share each.
    peer_ips: HashMap<IpAddr, usize>,
    pending: HashMap<IpAddr, usize>,
    total: usize,
}

impl Admission {
    pub fn new(per_ip_max: usize, budget: usize, peer_ips: impl IntoIterator<Item = IpAddr>) -> Admission {
        let mut counts = HashMap::new();
        for ip in peer_ips {
            *counts.entry(canonical(ip)).or_insert(0) += 1;
        }
        Admission {
            per_ip_max: per_ip_max.max(1),
            budget: budget.max(1),
            peer_ips: counts,
            pending: HashMap::new(),
            total: 0,
        }
    }

    /// A peer joined at `ip` (see `roster`).
    pub fn add_peer_ip(&mut self, ip: IpAddr) {
        *self.peer_ips.entry(canonical(ip)).or_insert(0) += 1;
    }

    /// A peer at `ip` left or moved.
    pub fn forget_peer_ip(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        if let Some(n) = self.peer_ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.peer_ips.remove(&ip);
            }
        }
    }

    pub fn is_peer_address(&self, ip: IpAddr) -> bool {
        self.peer_ips.contains_key(&canonical(ip))
    }

    /// The most pending connections `ip` may hold.
    pub fn limit_for(&self, ip: IpAddr) -> usize {
        self.per_ip_max + self.peer_ips.get(&canonical(ip)).copied().unwrap_or(0)
    }

    pub fn pending_from(&self, ip: IpAddr) -> usize {
        self.pending.get(&canonical(ip)).copied().unwrap_or(0)
    }

    pub fn pending_total(&self) -> usize {
        self.total
    }

    /// Decides on a new connection from `ip`. Counts nothing: call [`Admission::admit`] once it is in.
    pub fn decide(&self, ip: IpAddr) -> Decision {
        let peer = self.is_peer_address(ip);
        let address_full = self.pending_from(ip) >= self.limit_for(ip);
        let budget_full = self.total >= self.budget;
        match (peer, address_full, budget_full) {
            (_, false, false) => Decision::Admit,
            (false, true, _) => Decision::Refuse(Refusal::PerAddressLimit),
            (false, false, true) => Decision::Refuse(Refusal::Budget),
            (true, true, _) => Decision::AdmitDisplacing(Displace::SameAddress),
            (true, false, true) => Decision::AdmitDisplacing(Displace::AnyStrangerFirst),
        }
    }

    pub fn admit(&mut self, ip: IpAddr) {
        *self.pending.entry(canonical(ip)).or_insert(0) += 1;
        self.total += 1;
    }

    /// The connection from `ip` authenticated or closed.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        if let Some(n) = self.pending.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&ip);
            }
            self.total = self.total.saturating_sub(1);
        }
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address, so a dual-stack listener cannot double a limit.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_stranger_gets_at_most_per_ip_max_pending() {
        let mut a = Admission::new(4, 64, [ip("10.0.0.2")]);
        for _ in 0..4 {
            assert_eq!(a.decide(ip("10.9.9.9")), Decision::Admit);
            a.admit(ip("10.9.9.9"));
        }
        assert_eq!(a.decide(ip("10.9.9.9")), Decision::Refuse(Refusal::PerAddressLimit));
        // Another stranger is not affected by the first one's limit.
        assert_eq!(a.decide(ip("10.9.9.8")), Decision::Admit);
        a.release(ip("10.9.9.9"));
        assert_eq!(a.decide(ip("10.9.9.9")), Decision::Admit);
        assert_eq!(a.pending_total(), 3);
    }

    #[test]
    fn mapped_ipv6_counts_as_its_ipv4_address() {
        let mut a = Admission::new(1, 64, []);
        a.admit(ip("10.9.9.9"));
        assert_eq!(a.decide(ip("::ffff:10.9.9.9")), Decision::Refuse(Refusal::PerAddressLimit));
        a.release(ip("::ffff:10.9.9.9"));
        assert_eq!(a.pending_total(), 0);
    }

    #[test]
    fn a_full_budget_refuses_strangers_but_lets_peers_displace_one() {
        let peer = ip("10.0.0.2");
        let mut a = Admission::new(4, 8, [peer]);
        for n in 0..8u8 {
            let stranger = IpAddr::from([192, 168, 0, n]);
            assert_eq!(a.decide(stranger), Decision::Admit);
            a.admit(stranger);
        }
        assert_eq!(a.decide(ip("192.168.1.1")), Decision::Refuse(Refusal::Budget));
        assert_eq!(a.decide(peer), Decision::AdmitDisplacing(Displace::AnyStrangerFirst));
    }

    #[test]
    fn a_peer_address_at_its_limit_displaces_from_itself() {
        // Two peers share one host: its address may hold per_ip_max + 2 pending connections.
        let host = ip("127.0.0.1");
        let mut a = Admission::new(4, 64, [host, host, ip("10.0.0.3")]);
        assert_eq!(a.limit_for(host), 6);
        for _ in 0..6 {
            assert_eq!(a.decide(host), Decision::Admit);
            a.admit(host);
        }
        assert_eq!(a.decide(host), Decision::AdmitDisplacing(Displace::SameAddress));
        assert!(a.is_peer_address(host));
        assert!(!a.is_peer_address(ip("10.0.0.4")));
    }

    #[test]
    fn release_of_an_unknown_address_changes_nothing() {
        let mut a = Admission::new(4, 64, []);
        a.admit(ip("10.9.9.9"));
        a.release(ip("10.1.1.1"));
        assert_eq!(a.pending_total(), 1);
        assert_eq!(a.pending_from(ip("10.9.9.9")), 1);
    }
}
