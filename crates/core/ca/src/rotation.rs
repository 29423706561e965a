//! When to renew which certificate: a deadline queue, pure and clock-free.
//!
//! The controller schedules each identity at its certificate's [`crate::IssuedCert::renew_at`], sleeps
//! until [`RotationQueue::next_deadline`], and re-issues whatever [`RotationQueue::due`] returns. Scheduling
//! a key again replaces its deadline; time is always passed in, so tests need no clock.
//!
//! A binary min-heap with lazy deletion: replaced or removed entries stay in the heap marked stale (their
//! sequence number no longer matches the live one) and are skipped; the heap is compacted when stale
//! entries outnumber live ones.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::SystemTime;

/// A heap entry. Ordered by deadline, then by scheduling order so equal deadlines come out FIFO.
struct Entry<K> {
    at: SystemTime,
    seq: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K> Eq for Entry<K> {}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Renewal deadlines of keys (identities), earliest first. Each key has at most one deadline.
pub struct RotationQueue<K> {
    heap: BinaryHeap<Reverse<Entry<K>>>,
    /// Live deadline and sequence number per key; heap entries with another sequence number are stale.
    live: HashMap<K, (SystemTime, u64)>,
    next_seq: u64,
}

impl<K> Default for RotationQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next_seq: 0,
        }
    }
}

impl<K: std::fmt::Debug> std::fmt::Debug for RotationQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.live.iter().map(|(k, (at, _))| (k, at)))
            .finish()
    }
}

impl<K: Clone + Eq + Hash> RotationQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`'s deadline to `at`, replacing any earlier schedule of the same key.
    pub fn schedule(&mut self, key: K, at: SystemTime) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live.insert(key.clone(), (at, seq));
        self.heap.push(Reverse(Entry { at, seq, key }));
        self.tidy();
    }

    /// Forgets `key` (e.g. its pod is gone). Returns whether it was scheduled.
    pub fn remove(&mut self, key: &K) -> bool {
        let was = self.live.remove(key).is_some();
        self.tidy();
        was
    }

    /// Removes and returns every key whose deadline is at or before `now`, earliest first.
    pub fn due(&mut self, now: SystemTime) -> Vec<K> {
        let mut out = Vec::new();
        // `tidy` keeps the top live, so a top past `now` means nothing else is due.
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > now {
                break;
            }
            let Reverse(entry) = self.heap.pop().expect("peeked");
            if self.is_live(&entry) {
                self.live.remove(&entry.key);
                out.push(entry.key);
            }
            self.tidy();
        }
        out
    }

    /// The earliest deadline, if any key is scheduled.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The deadline of `key`, if scheduled.
    pub fn deadline(&self, key: &K) -> Option<SystemTime> {
        self.live.get(key).map(|(at, _)| *at)
    }

    /// Number of scheduled keys.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no key is scheduled.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn is_live(&self, e: &Entry<K>) -> bool {
        self.live.get(&e.key).is_some_and(|&(_, seq)| seq == e.seq)
    }

    /// Restores the invariants: the heap's top is live (so `next_deadline` can peek), and stale entries
    /// are bounded (rebuild when they exceed the live ones).
    fn tidy(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * self.live.len() + 16 {
            self.heap = self
                .live
                .iter()
                .map(|(key, &(at, seq))| {
                    Reverse(Entry {
                        at,
                        seq,
                        key: key.clone(),
                    })
                })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Keys come out in deadline order, only when due, and only once.
    #[test]
    fn due_in_deadline_order() {
        let mut q = RotationQueue::new();
        q.schedule("c", t(30));
        q.schedule("a", t(10));
        q.schedule("b", t(20));
        assert_eq!(q.next_deadline(), Some(t(10)));
        assert!(q.due(t(9)).is_empty());
        assert_eq!(q.due(t(20)), vec!["a", "b"]);
        assert_eq!(q.due(t(20)), Vec::<&str>::new());
        assert_eq!(q.next_deadline(), Some(t(30)));
        assert_eq!(q.len(), 1);
        assert_eq!(q.due(t(100)), vec!["c"]);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    /// Equal deadlines come out in scheduling order.
    #[test]
    fn equal_deadlines_fifo() {
        let mut q = RotationQueue::new();
        for k in ["x", "y", "z"] {
            q.schedule(k, t(5));
        }
        assert_eq!(q.due(t(5)), vec!["x", "y", "z"]);
    }

    /// Rescheduling replaces the old deadline, earlier or later.
    #[test]
    fn reschedule_replaces() {
        let mut q = RotationQueue::new();
        q.schedule("a", t(10));
        q.schedule("b", t(20));
        q.schedule("a", t(30)); // later
        assert_eq!(q.next_deadline(), Some(t(20)));
        assert_eq!(q.deadline(&"a"), Some(t(30)));
        assert_eq!(q.due(t(25)), vec!["b"]);
        q.schedule("a", t(1)); // earlier
        assert_eq!(q.next_deadline(), Some(t(1)));
        assert_eq!(q.due(t(100)), vec!["a"]);
        assert!(q.is_empty());
    }

    /// Removed keys never come due, and the next deadline skips them.
    #[test]
    fn remove_forgets() {
        let mut q = RotationQueue::new();
        q.schedule("a", t(10));
        q.schedule("b", t(20));
        assert!(q.remove(&"a"));
        assert!(!q.remove(&"a"));
        assert_eq!(q.next_deadline(), Some(t(20)));
        assert_eq!(q.due(t(100)), vec!["b"]);
    }

    /// Many reschedules of few keys do not grow the heap without bound.
    #[test]
    fn stale_entries_are_compacted() {
        let mut q = RotationQueue::new();
        for i in 0..10_000u64 {
            q.schedule(i % 3, t(1_000_000 - i));
        }
        assert_eq!(q.len(), 3);
        assert!(q.heap.len() <= 2 * 3 + 16 + 1, "heap has {}", q.heap.len());
        assert_eq!(q.due(t(u64::from(u32::MAX))), vec![0, 2, 1]);
    }
}
