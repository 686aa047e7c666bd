//! Integer arithmetic on address pools, kept apart from the bindings so it
//! can be unit-tested natively.

/// Address family of a pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    /// IPv4 (32-bit).
    V4,
    /// IPv6 (128-bit).
    V6,
}

impl Family {
    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// The usable addresses of a prefix, inclusive at both ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Span {
    /// The prefix's network address (never handed out).
    pub network: u128,
    /// First usable address.
    pub first: u128,
    /// Last usable address.
    pub last: u128,
}

impl Span {
    /// Usable addresses of `addr/prefix`: without the network address and, for
    /// IPv4, the broadcast address. /31 and /32 (and /127, /128) are
    /// point-to-point or host prefixes where every address is usable.
    pub fn usable(family: Family, addr: u128, prefix: u8) -> Option<Span> {
        let bits = family.bits();
        if prefix > bits {
            return None;
        }
        let host_bits = u32::from(bits - prefix);
        let size_mask: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        let network = addr & !size_mask;
        let top = network | size_mask;
        let (first, last) = if host_bits <= 1 {
            (network, top)
        } else {
            match family {
                Family::V4 => (network + 1, top - 1),
                Family::V6 => (network + 1, top),
            }
        };
        Some(Span { network, first, last })
    }

    /// Whether `a` lies in the span.
    pub fn contains(&self, a: u128) -> bool {
        a >= self.first && a <= self.last
    }

    /// The overlap of two spans, if any.
    pub fn intersect(&self, other: &Span) -> Option<Span> {
        let first = self.first.max(other.first);
        let last = self.last.min(other.last);
        (first <= last).then_some(Span { network: self.network, first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_excludes_network_and_broadcast() {
        let s = Span::usable(Family::V4, 0x0a00_0000, 24).unwrap();
        assert_eq!(s.first, 0x0a00_0001);
        assert_eq!(s.last, 0x0a00_00fe);
    }

    #[test]
    fn v4_point_to_point() {
        let s = Span::usable(Family::V4, 0x0a00_0000, 31).unwrap();
        assert_eq!((s.first, s.last), (0x0a00_0000, 0x0a00_0001));
    }

    #[test]
    fn v6_has_no_broadcast() {
        let s = Span::usable(Family::V6, 0xfd00 << 112, 64).unwrap();
        assert_eq!(s.first, (0xfd00 << 112) + 1);
        assert_eq!(s.last, (0xfd00 << 112) | u128::from(u64::MAX));
    }

    #[test]
    fn range_intersects_subnet() {
        let subnet = Span::usable(Family::V4, 0x0a00_0000, 24).unwrap();
        let range = Span::usable(Family::V4, 0x0a00_0080, 25).unwrap();
        let r = range.intersect(&subnet).unwrap();
        assert_eq!((r.first, r.last), (0x0a00_0081, 0x0a00_00fe));
        assert!(Span::usable(Family::V4, 0, 33).is_none());
    }
}
