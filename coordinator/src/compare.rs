//! `phrasesweep compare RUN_A RUN_B`: per retrieval both runs scored, the difference in mAR with a
//! paired bootstrap 95 % interval over the questions both answered, and the questions won and lost.

use crate::ledger::{per_question, per_question_tables};
use anyhow::{Result, bail};
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::train::rc::splitmix64;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Bootstrap resamples; the interval's ends move by about 0.001 between seeds at this count.
const RESAMPLES: usize = 10_000;

/// One run's per-question tables, by retrieval: where they are, and the run's full id.
struct RunTables {
    id: String,
    store: Store,
    per_question: BTreeMap<String, String>,
}

/// Finds run `wanted` (its id or a prefix of one) among `stores`' ledgers (a store named twice counts
/// once).
async fn find(stores: &[Store], wanted: &str) -> Result<RunTables> {
    let mut found: Vec<RunTables> = Vec::new();
    for store in crate::archive::distinct(stores) {
        let mut runs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (id, retrieval, path) in per_question_tables(store).await? {
            if id.starts_with(wanted) {
                runs.entry(id).or_default().insert(retrieval, path);
            }
        }
        found.extend(runs.into_iter().map(|(id, per_question)| RunTables { id, store: store.clone(), per_question }));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no run `{wanted}` with metrics in the ledgers of {}", stores.iter().map(|s| s.root_uri()).collect::<Vec<_>>().join(", ")),
        n => bail!("`{wanted}` names {n} runs ({}): give more of the id", found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")),
    }
}

/// The mean of `diffs` and its paired bootstrap 95 % interval (percentiles of `RESAMPLES` resampled
/// means), with a fixed seed so a comparison prints the same interval every time.
pub fn bootstrap(diffs: &[f64]) -> (f64, f64, f64) {
    let n = diffs.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let mut next = splitmix64(0);
    let mut means: Vec<f64> = (0..RESAMPLES).map(|_| (0..n).map(|_| diffs[(next() % n as u64) as usize]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    // The 250th and 9,751st of 10,000: 2.5 % of the resampled means lie outside on each side.
    (mean, means[RESAMPLES * 25 / 1000 - 1], means[RESAMPLES - RESAMPLES * 25 / 1000])
}

/// The comparison of runs `a` and `b` (ids or unique prefixes), as text: one block per retrieval
/// both scored, or only `retrieval`.
pub async fn compare(stores: &[Store], a: &str, b: &str, retrieval: Option<&str>, show: usize) -> Result<String> {
    let (a, b) = (find(stores, a).await?, find(stores, b).await?);
    let mut out = String::new();
    let common: Vec<&String> = a.per_question.keys().filter(|r| b.per_question.contains_key(*r) && retrieval.is_none_or(|w| w == r.as_str())).collect();
    if common.is_empty() {
        bail!("runs {} and {} share no retrieval{}", a.id, b.id, retrieval.map(|r| format!(" named `{r}`")).unwrap_or_default());
    }
    for r in common {
        let (qa, qb) = (per_question(&a.store, &a.per_question[r]).await?, per_question(&b.store, &b.per_question[r]).await?);
        let paired: Vec<(&String, f64)> = qa.iter().filter_map(|(q, x)| qb.get(q).map(|y| (q, x.0 - y.0))).collect();
        if paired.is_empty() {
            bail!("{r}: runs {} and {} share no question", a.id, b.id);
        }
        let diffs: Vec<f64> = paired.iter().map(|p| p.1).collect();
        let (mean, lo, hi) = bootstrap(&diffs);
        let (mar_a, mar_b) = (paired.iter().map(|p| qa[p.0].0).sum::<f64>(), paired.iter().map(|p| qb[p.0].0).sum::<f64>());
        let n = paired.len().max(1) as f64;
        writeln!(
            out,
            "{r}: mAR {:.4} ({}) against {:.4} ({}): {mean:+.4}, 95 % interval [{lo:+.4}, {hi:+.4}] over {} paired questions",
            mar_a / n,
            a.id,
            mar_b / n,
            b.id,
            paired.len()
        )?;
        let mut moved: Vec<&(&String, f64)> = paired.iter().filter(|p| p.1 != 0.0).collect();
        moved.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(y.0)));
        let won: Vec<String> = moved.iter().filter(|p| p.1 > 0.0).take(show).map(|p| format!("{} {:+.3}", p.0, p.1)).collect();
        let lost: Vec<String> = moved.iter().rev().filter(|p| p.1 < 0.0).take(show).map(|p| format!("{} {:+.3}", p.0, p.1)).collect();
        let (n_won, n_lost) = (moved.iter().filter(|p| p.1 > 0.0).count(), moved.iter().filter(|p| p.1 < 0.0).count());
        writeln!(out, "  better in {}: {n_won} questions{}{}", a.id, if won.is_empty() { "" } else { ", most: " }, won.join(", "))?;
        writeln!(out, "  worse in {}: {n_lost} questions{}{}", a.id, if lost.is_empty() { "" } else { ", most: " }, lost.join(", "))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::bootstrap;

    #[test]
    fn the_interval_holds_the_mean_and_shrinks_to_it_without_spread() {
        let (mean, lo, hi) = bootstrap(&[0.25; 40]);
        assert_eq!((mean, lo, hi), (0.25, 0.25, 0.25));
        let diffs: Vec<f64> = (0..200).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
        let (mean, lo, hi) = bootstrap(&diffs);
        assert!((mean - 0.25).abs() < 1e-12 && lo < mean && mean < hi, "{lo} {mean} {hi}");
        // The standard error of a mean of 200 draws of p = 0.25 is 0.031: the interval is about ±0.06.
        assert!((hi - lo - 0.12).abs() < 0.02, "{lo} {hi}");
        assert_eq!(bootstrap(&diffs), (mean, lo, hi), "the same interval every time");
    }
}
