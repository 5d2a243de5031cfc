//! Reliable-frame bookkeeping: the highest sequence number seen, and whether
//! an inbound event or reply is new, a duplicate (a replay overlap) or
//! unsequenced (volatile events, replies of a gateway that numbers none).
//!
//! Pure and synchronous; it never does I/O and never delivers anything. The
//! connection task owns one [`SeqTracker`] per session.

/// What to do with an inbound server event, by its `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqCheck {
    /// `seq == 0`: a volatile event, delivered as-is and never tracked.
    Volatile,
    /// A reliable event not seen before. `missed` counts the sequence numbers
    /// skipped before it: 0 unless the gateway broke its no-gap promise.
    Fresh { missed: u64 },
    /// Already seen (`seq <= last`): discard it, never deliver twice.
    Duplicate,
}

/// The highest reliable `seq` seen in the current session.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqTracker {
    last: u64,
}

impl SeqTracker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The highest reliable `seq` seen; 0 when none.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// Classifies `seq` and, for a fresh reliable event, records it as seen.
    pub(crate) fn observe(&mut self, seq: u64) -> SeqCheck {
        if seq == 0 {
            return SeqCheck::Volatile;
        }
        if seq <= self.last {
            return SeqCheck::Duplicate;
        }
        let missed = seq - self.last - 1;
        self.last = seq;
        SeqCheck::Fresh { missed }
    }

    /// Forgets everything: a fresh session numbers its events from 1 again.
    pub(crate) fn reset(&mut self) {
        self.last = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_events_are_fresh() {
        let mut t = SeqTracker::new();
        for seq in 1..=5 {
            assert_eq!(t.observe(seq), SeqCheck::Fresh { missed: 0 });
        }
        assert_eq!(t.last(), 5);
    }

    #[test]
    fn replay_overlap_is_deduplicated() {
        let mut t = SeqTracker::new();
        for seq in 1..=3 {
            t.observe(seq);
        }
        // A resume replays from last_seq + 1, but a sloppy overlap must not
        // deliver anything twice.
        assert_eq!(t.observe(2), SeqCheck::Duplicate);
        assert_eq!(t.observe(3), SeqCheck::Duplicate);
        assert_eq!(t.observe(4), SeqCheck::Fresh { missed: 0 });
        assert_eq!(t.last(), 4);
    }

    #[test]
    fn volatile_events_pass_and_do_not_move_last() {
        let mut t = SeqTracker::new();
        t.observe(1);
        assert_eq!(t.observe(0), SeqCheck::Volatile);
        assert_eq!(t.observe(0), SeqCheck::Volatile);
        assert_eq!(t.last(), 1);
    }

    #[test]
    fn gaps_are_reported_and_accepted() {
        let mut t = SeqTracker::new();
        t.observe(1);
        assert_eq!(t.observe(5), SeqCheck::Fresh { missed: 3 });
        assert_eq!(t.observe(4), SeqCheck::Duplicate);
        assert_eq!(t.last(), 5);
    }

    #[test]
    fn reset_starts_a_new_numbering() {
        let mut t = SeqTracker::new();
        t.observe(1);
        t.observe(2);
        t.reset();
        assert_eq!(t.last(), 0);
        assert_eq!(t.observe(1), SeqCheck::Fresh { missed: 0 });
    }

    #[test]
    fn huge_sequence_numbers_do_not_overflow() {
        let mut t = SeqTracker::new();
        assert_eq!(
            t.observe(u64::MAX),
            SeqCheck::Fresh {
                missed: u64::MAX - 1
            }
        );
        assert_eq!(t.observe(u64::MAX), SeqCheck::Duplicate);
    }
}
