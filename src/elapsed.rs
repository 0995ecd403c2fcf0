//! A short duration measured on the wire (a round trip, a server's answer time) in two bytes:
//! every tracked connection keeps a few, and a connection must stay in its allocator size
//! class (tests/footprint.rs).
//!
//! Microseconds below [`Elapsed::FINE`] (33 ms), then steps of [`Elapsed::COARSE_NS`] up to
//! about 6.6 s; a longer one is not measured. A LAN keeps its microseconds; a far host is
//! measured to a fifth of a millisecond.

/// `0` is "not measured", `u16::MAX` is [`Elapsed::PENDING`] (a measurement started, for the
/// state machines that take one), anything else a duration.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(u16);

impl Elapsed {
    pub const NONE: Elapsed = Elapsed(0);
    /// Started, not finished: the state machine waits for the packet that ends it.
    pub const PENDING: Elapsed = Elapsed(u16::MAX);
    const FINE: u16 = 1 << 15;
    const COARSE_NS: i64 = 200_000;

    /// The duration `ns`, or [`Elapsed::NONE`] past the range or when negative (packet order
    /// is not time order in a damaged capture: nothing rather than a negative time).
    pub fn of_ns(ns: i64) -> Elapsed {
        if ns < 0 {
            return Self::NONE;
        }
        let us = (ns + 500) / 1000;
        if us < i64::from(Self::FINE) {
            // A measured zero still reads as measured.
            return Elapsed(u16::try_from(us.max(1)).unwrap_or(1));
        }
        let steps = (ns - i64::from(Self::FINE) * 1000 + Self::COARSE_NS / 2) / Self::COARSE_NS;
        u16::try_from(i64::from(Self::FINE) + steps)
            .ok()
            .filter(|&v| v != Self::PENDING.0)
            .map_or(Self::NONE, Elapsed)
    }

    /// From one capture time to a later one.
    pub fn between(from_ns: i64, to_ns: i64) -> Elapsed {
        to_ns.checked_sub(from_ns).map_or(Self::NONE, Self::of_ns)
    }

    pub fn is_pending(self) -> bool {
        self == Self::PENDING
    }

    /// The duration, if measured.
    pub fn ns(self) -> Option<i64> {
        match self.0 {
            0 | u16::MAX => None,
            v if v < Self::FINE => Some(i64::from(v) * 1000),
            v => Some(i64::from(Self::FINE) * 1000 + i64::from(v - Self::FINE) * Self::COARSE_NS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Elapsed;

    #[test]
    fn durations_keep_microseconds_on_a_lan_and_a_fifth_of_a_millisecond_far_away() {
        let back = |ns: i64| Elapsed::of_ns(ns).ns();
        assert_eq!(back(15_400), Some(15_000));
        assert_eq!(
            back(0),
            Some(1_000),
            "a measured zero still reads as measured"
        );
        assert_eq!(back(32_767_000), Some(32_767_000));
        assert_eq!(back(250_442_000), Some(250_368_000));
        assert!((back(6_000_000_000).unwrap() - 6_000_000_000).abs() <= 100_000);
        assert_eq!(back(7_000_000_000), None, "past the range: not measured");
        assert_eq!(back(-5), None, "a negative time is not measured");
        assert_eq!(Elapsed::PENDING.ns(), None);
        assert_eq!(Elapsed::between(10, 5), Elapsed::NONE);
    }
}
