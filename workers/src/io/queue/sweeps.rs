//! The sweeps a worker knows of, and the order it looks for their jobs in: highest priority first,
//! round-robin among sweeps of equal priority, starting after the one it served last. So a long sweep
//! started first does not starve a short one started later, and a sweep given a higher priority jumps
//! the queue.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Announcements a sweep may miss before the worker forgets it (its coordinator ended or died).
const MISSED: u32 = 3;

#[derive(Debug, Default)]
pub struct SweepBook {
    known: BTreeMap<String, Known>,
    /// Per priority, the sweep served last: serving a sweep of one priority leaves the turns of the
    /// others where they were.
    last_served: HashMap<i32, String>,
}

#[derive(Debug)]
struct Known {
    priority: i32,
    expires: Instant,
}

impl SweepBook {
    /// A coordinator announced `sweep`; it is forgotten once `MISSED` announcements fail to come.
    /// Returns whether the sweep is new to the book (never heard of, or forgotten).
    pub fn heard(&mut self, sweep: &str, priority: i32, every_s: u64, now: Instant) -> bool {
        let expires = now + Duration::from_secs(every_s.max(1)) * MISSED + Duration::from_secs(1);
        let old = self.known.insert(sweep.to_string(), Known { priority, expires });
        old.is_none_or(|k| k.expires <= now)
    }

    /// Stops looking at `sweep` until it is announced again (its queue is gone).
    pub fn forget(&mut self, sweep: &str) {
        self.known.remove(sweep);
    }

    /// The worker took a job of `sweep`: the next look at its priority starts at the sweep after it.
    pub fn served(&mut self, sweep: &str) {
        if let Some(k) = self.known.get(sweep) {
            self.last_served.insert(k.priority, sweep.to_string());
        }
    }

    /// The live sweeps in the order to look for a job in: one group per priority, highest first, each
    /// starting after the sweep of that priority served last.
    pub fn order(&mut self, now: Instant) -> Vec<Vec<String>> {
        self.known.retain(|_, k| k.expires > now);
        let mut sweeps: Vec<(i32, &String)> = self.known.iter().map(|(name, k)| (k.priority, name)).collect();
        sweeps.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        sweeps
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| {
                let start = self.last_served.get(&group[0].0).map_or(0, |last| group.iter().position(|(_, name)| *name > last).unwrap_or(0));
                group[start..].iter().chain(&group[..start]).map(|(_, name)| (*name).clone()).collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sweeps_take_turns_and_a_priority_goes_first() {
        let now = Instant::now();
        let mut book = SweepBook::default();
        book.heard("long", 0, 2, now);
        assert_eq!(book.order(now), [["long"]]);
        book.served("long");
        book.heard("short", 0, 2, now);
        assert_eq!(book.order(now), [["short", "long"]], "the sweep after the one served last comes first");
        book.served("short");
        assert_eq!(book.order(now), [["long", "short"]]);
        book.heard("urgent", 5, 2, now);
        book.heard("later", -1, 2, now);
        assert_eq!(book.order(now), [vec!["urgent"], vec!["long", "short"], vec!["later"]]);
        book.served("urgent");
        assert_eq!(
            book.order(now),
            [vec!["urgent"], vec!["long", "short"], vec!["later"]],
            "serving another priority leaves the turns of this one as they were"
        );
    }

    #[test]
    fn a_sweep_no_longer_announced_is_forgotten() {
        let now = Instant::now();
        let mut book = SweepBook::default();
        assert!(book.heard("a", 0, 2, now), "a new sweep");
        assert!(book.heard("b", 0, 2, now + Duration::from_secs(6)));
        assert!(!book.heard("b", 0, 2, now + Duration::from_secs(8)), "heard of again in time");
        assert_eq!(book.order(now + Duration::from_secs(6)), [["a", "b"]]);
        assert_eq!(book.order(now + Duration::from_secs(8)), [["b"]], "three announcements missed");
        assert!(book.heard("a", 0, 2, now + Duration::from_secs(8)), "a forgotten sweep is new again");
        book.forget("b");
        assert!(!book.order(now).concat().contains(&"b".to_string()));
    }
}
