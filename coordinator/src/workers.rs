//! `phrasesweep workers`: the farm's live workers as they answered the roll call, one line each.

use phrasesweep_schemas::farm::WorkerCard;
use std::fmt::Write;

pub const HEADER: &str = "worker                     host           device            memory  serves   settled  build                     job in hand";

/// The roll call's answers as a table, with what each worker has in hand and for how long.
pub fn table(cards: &[WorkerCard], now_unix: u64) -> String {
    let mut out = String::new();
    if cards.is_empty() {
        return "no worker answered the roll call\n".into();
    }
    writeln!(out, "{HEADER}").unwrap();
    for c in cards {
        let serves: Vec<&str> = c.serves.iter().map(|s| s.name()).collect();
        let job = match &c.current {
            Some(j) => format!("{} {} of {} for {} s", &j.id[..12.min(j.id.len())], j.label, j.sweep, now_unix.saturating_sub(j.since_unix)),
            None => "idle".into(),
        };
        writeln!(
            out,
            "{:<26} {:<14} {:<16} {:>5.1} GiB  {:<8} {:>7}  {:<25} {job}",
            c.name,
            c.host,
            c.device,
            c.memory_bytes as f64 / (1u64 << 30) as f64,
            serves.join(","),
            c.jobs_settled,
            c.version,
        )
        .unwrap();
    }
    let sweeps: std::collections::BTreeSet<&String> = cards.iter().flat_map(|c| &c.sweeps).collect();
    let sweeps: Vec<&str> = sweeps.into_iter().map(String::as_str).collect();
    let n = cards.len();
    let served = if sweeps.is_empty() { "none".into() } else { sweeps.join(", ") };
    writeln!(out, "{n} worker{} answered the roll call; the sweeps they serve: {served}", if n == 1 { "" } else { "s" }).unwrap();
    out
}
