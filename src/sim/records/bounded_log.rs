//! A log that keeps its newest entries within a count and a byte bound, dropping the oldest
//! first: the simulator also runs inside the sandbox gateway for days, and what it records
//! (requests received, deliveries to its receivers) must not grow without end.

use std::collections::VecDeque;

/// What an entry counts for in its log's byte bound.
pub(crate) trait Weighed {
    /// The bytes the entry holds: its texts plus a fixed overhead.
    fn weight(&self) -> usize;
}

/// The newest entries, at most `max_entries` of them within `max_bytes` in all.
#[derive(Debug)]
pub(crate) struct BoundedLog<T> {
    entries: VecDeque<(usize, T)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<T: Weighed> BoundedLog<T> {
    /// An empty log keeping at most `max_entries` entries and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Appends `entry`, dropping the oldest entries until both bounds hold (an entry larger than
    /// the byte bound on its own is kept alone).
    pub fn push(&mut self, entry: T) {
        let size = entry.weight();
        while !self.entries.is_empty()
            && (self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes)
        {
            if let Some((dropped, _)) = self.entries.pop_front() {
                self.bytes -= dropped;
            }
        }
        self.bytes += size;
        self.entries.push_back((size, entry));
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut bytes = 0;
        self.entries.retain(|(size, entry)| {
            let kept = keep(entry);
            if kept {
                bytes += size;
            }
            kept
        });
        self.bytes = bytes;
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, entry)| entry)
    }

    /// The number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The bytes the entries count for.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry(&'static str, usize);

    impl Weighed for Entry {
        fn weight(&self) -> usize {
            self.1
        }
    }

    fn names(log: &BoundedLog<Entry>) -> Vec<&str> {
        log.iter().map(|e| e.0).collect()
    }

    #[test]
    fn retain_keeps_the_byte_count_of_what_it_keeps() {
        let mut log = BoundedLog::new(10, 100);
        for (name, size) in [("a", 10), ("b", 20), ("c", 30)] {
            log.push(Entry(name, size));
        }
        log.retain(|e| e.0 != "b");
        assert_eq!(names(&log), ["a", "c"]);
        assert_eq!(log.bytes(), 40);
        assert_eq!(log.len(), 2);
        // The freed bytes are usable again.
        log.push(Entry("d", 60));
        assert_eq!(names(&log), ["a", "c", "d"]);
        log.push(Entry("e", 1));
        assert_eq!(names(&log), ["c", "d", "e"]);
    }
}
