//! Batch retrieval as one pass over the phrase vectors. Every query of a job is scored against each
//! streamed batch with one matrix product; per query a top-K of start hits and of end hits is kept, and
//! each hit is completed into its best span while its paragraph's rows are still in memory (a span's end
//! lies within `MAX_SPAN − 1` rows of its start, in the same paragraph). Exact by construction: every
//! vector is scored, and nothing is read after the scan but the final texts.

use crate::index::search::Span;
use crate::model::encoders::MAX_SPAN;
use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Float16Type, Float32Type, UInt32Type, UInt64Type};
use futures::TryStreamExt;
use lance::Dataset;
use lance::table::format::Fragment;
use phrasesweep_schemas::tables::phrases;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use crate::progress::RateLog;
use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};
use tracing::info;

/// Rows per scanned batch: large enough that the matrix product runs at full speed, small enough that a
/// batch's vectors and scores stay in cache-friendly tens of megabytes.
pub const BATCH_ROWS: usize = 16_384;

/// Most queries one pass scores: bounds a batch's score matrix (`BATCH_ROWS × 2 × queries` floats, 256 MB)
/// and, with `keep_vectors`, the spans' vectors a pass holds (about 1 GB at K = 100, d = 384). More
/// queries are scanned in several passes.
pub fn queries_per_pass(k: usize, d: usize, keep_vectors: bool) -> usize {
    let by_scores = (256 << 20) / (BATCH_ROWS * 2 * 4);
    let by_vectors = if keep_vectors { (1 << 30) / (2 * k * 2 * d * 4).max(1) } else { usize::MAX };
    by_scores.min(by_vectors).max(1)
}

/// The query vectors of one scan: `len()` queries' q_start and q_end, `d` floats each.
#[derive(Debug, Clone, Default)]
pub struct Queries {
    pub d: usize,
    /// `[q_start of every query; q_end of every query]`, row-major: the right side of the product.
    matrix: Vec<f32>,
    n: usize,
}

impl Queries {
    pub fn new(pairs: &[(Vec<f32>, Vec<f32>)]) -> Self {
        let d = pairs.first().map_or(0, |(s, _)| s.len());
        let mut matrix = Vec::with_capacity(2 * pairs.len() * d);
        pairs.iter().for_each(|(s, _)| matrix.extend_from_slice(s));
        pairs.iter().for_each(|(_, e)| matrix.extend_from_slice(e));
        Self { d, matrix, n: pairs.len() }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Queries `range` of these.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        let (d, n) = (self.d, self.n);
        let mut matrix = Vec::with_capacity(2 * range.len() * d);
        matrix.extend_from_slice(&self.matrix[range.start * d..range.end * d]);
        matrix.extend_from_slice(&self.matrix[(n + range.start) * d..(n + range.end) * d]);
        Self { d, matrix, n: range.len() }
    }
}

/// A start (or end) hit: its own inner product, its row address, and the span it completes into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    pub score: f32,
    pub addr: u64,
    pub span: Span,
}

impl Anchor {
    /// Best first: the higher score, then the lower address (the row a scan meets first).
    fn rank(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.addr.cmp(&other.addr))
    }
}

/// In a heap, the worst anchor on top.
struct Worst(Anchor);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.rank(&other.0)
    }
}

/// One query's top-K start hits and top-K end hits, each completed into its span, best first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidates {
    pub starts: Vec<Anchor>,
    pub ends: Vec<Anchor>,
}

impl Candidates {
    /// The spans of the best `k` start and `k` end hits, best first, each span once: DensePhrases'
    /// start/end search. `k` up to the K the candidates were scanned with; the best `k` of a top-K are
    /// the top-`k`, so one scan serves every hit count up to its K.
    pub fn spans(&self, k: usize) -> Vec<Span> {
        let mut spans: Vec<Span> = self.starts.iter().take(k).chain(self.ends.iter().take(k)).map(|a| a.span.clone()).collect();
        // Stable: equal scores keep start hits before end hits, each in rank order.
        spans.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut seen = HashSet::new();
        spans.retain(|s| seen.insert((s.corpus_row, s.start_token, s.end_token)));
        spans
    }

    /// The top `k` of several scans of disjoint rows (fragment ranges): equal to one scan of them all.
    pub fn merge(parts: impl IntoIterator<Item = Candidates>, k: usize) -> Candidates {
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for p in parts {
            starts.extend(p.starts);
            ends.extend(p.ends);
        }
        for side in [&mut starts, &mut ends] {
            side.sort_by(Anchor::rank);
            side.truncate(k);
        }
        Candidates { starts, ends }
    }
}

/// Where a scan's time went: reading and decoding batches, the matrix products, and keeping the top
/// hits (selection and span completion).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanStats {
    pub rows: u64,
    pub read: Duration,
    pub score: Duration,
    pub select: Duration,
}

/// Scans `fragments` of the phrase dataset (all of it when `None`) for the top `k` start and end hits of
/// every query. With `keep_vectors` each span carries its first and last token's vectors (QSFT scores
/// candidates with them).
pub async fn scan(
    dataset: &Dataset,
    fragments: Option<Vec<Fragment>>,
    queries: &Queries,
    k: usize,
    keep_vectors: bool,
    batch_rows: usize,
) -> Result<(Vec<Candidates>, ScanStats)> {
    if queries.is_empty() || k == 0 {
        return Ok((vec![Candidates::default(); queries.len()], ScanStats::default()));
    }
    let total: u64 = match &fragments {
        Some(f) => f.iter().map(|f| f.physical_rows.unwrap_or(0) as u64).sum(),
        None => dataset.get_fragments().iter().map(|f| f.metadata().physical_rows.unwrap_or(0) as u64).sum(),
    };
    let mut scanner = dataset.scan();
    scanner.project(&[phrases::CORPUS_ROW, phrases::TOKEN, phrases::SENTENCE, phrases::CHAR_START, phrases::CHAR_END, phrases::VECTOR])?;
    scanner.with_row_address().batch_size(batch_rows).scan_in_order(true);
    if let Some(f) = fragments {
        scanner.with_fragments(f);
    }
    let mut stream = scanner.try_into_stream().await.context("cannot scan the phrase vectors")?;
    // Lance decodes the next batches on a task of their own while this one scores: reading and scoring
    // overlap instead of taking turns.
    let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(async move {
        while let Some(batch) = stream.try_next().await.transpose() {
            if tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    let mut reader = AbortOnDrop(Some(reader));
    let mut state = Scan::new(queries, k, keep_vectors);
    let mut log = RateLog::new(format!("scan for {} queries", queries.len()), total, "vectors");
    let mut read = Instant::now();
    while let Some(batch) = rx.recv().await {
        let batch = batch.context("cannot read the phrase vectors")?;
        state.stats.read += read.elapsed();
        state.push(&batch)?;
        log.add(batch.num_rows() as u64);
        read = Instant::now();
    }
    // The channel also closes when the reading task dies: a panic there is an error, not the end.
    if let Some(task) = reader.0.take() {
        task.await.context("the task reading the phrase vectors failed")?;
    }
    let stats = state.stats;
    let found = state.finish();
    info!(rows = stats.rows, queries = queries.len(), read_s = stats.read.as_secs_f64(), score_s = stats.score.as_secs_f64(), select_s = stats.select.as_secs_f64(), "scanned the phrase vectors");
    Ok((found, stats))
}

/// Batches decoded ahead of the one being scored.
const READ_AHEAD: usize = 2;

/// Stops a spawned task when its owner is done with it (or fails).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// The values of a vector column as f32: f32 vectors as they are, f16 ones converted into `buf`.
pub fn f32_values<'a>(values: &'a ArrayRef, buf: &'a mut Vec<f32>) -> Result<&'a [f32]> {
    if let Some(v) = values.as_primitive_opt::<Float32Type>() {
        return Ok(v.values());
    }
    let v = values.as_primitive_opt::<Float16Type>().with_context(|| format!("phrase vectors of type {}", values.data_type()))?;
    use half::slice::HalfFloatSliceExt;
    buf.resize(v.len(), 0.0);
    v.values().convert_to_f32_slice(buf);
    Ok(buf)
}

/// Scores tested against their bars at once: a row's chunk of this many columns.
const LANES: usize = 16;

/// Row `i` beat the bar of column `col`: its anchor, completed into the best span it starts (a start
/// column) or ends (an end column) within the window.
fn complete(w: &Window, n: usize, cols: usize, d: usize, keep_vectors: bool, i: usize, col: usize) -> Anchor {
    let is_start = col < n;
    let query = col % n;
    // The other side's score column, and the rows the other end may lie in (ascending, so the first
    // best wins, as in the per-question search).
    let (other, range) = if is_start { (n + query, i..(i + MAX_SPAN).min(w.len())) } else { (query, i.saturating_sub(REACH)..i + 1) };
    let mut best: Option<(f32, usize)> = None;
    for j in range {
        let ok = if is_start { w.reachable(i, j) } else { w.reachable(j, i) };
        let s = w.scores[j * cols + other];
        if ok && best.is_none_or(|(b, _)| s > b) {
            best = Some((s, j));
        }
    }
    let (other_score, j) = best.expect("a token is a span of itself");
    let (a, b) = if is_start { (i, j) } else { (j, i) };
    let vector = |r: usize| if keep_vectors { w.vectors[r * d..(r + 1) * d].to_vec() } else { Vec::new() };
    let score = w.scores[i * cols + col];
    Anchor {
        score,
        addr: w.addr[i],
        span: Span {
            corpus_row: w.row[i],
            score: score + other_score,
            char_start: w.char_start[a],
            char_end: w.char_end[b],
            first_sentence: w.sentence[a],
            last_sentence: w.sentence[b],
            start_token: w.token[a],
            end_token: w.token[b],
            start_vector: vector(a),
            end_vector: vector(b),
        },
    }
}

/// Rows within `REACH` of each other can be one span.
const REACH: usize = MAX_SPAN - 1;

/// The rows in memory: the last rows of earlier batches that spans may still reach, then a new batch.
#[derive(Default)]
struct Window {
    addr: Vec<u64>,
    row: Vec<u64>,
    token: Vec<u32>,
    sentence: Vec<u32>,
    char_start: Vec<u32>,
    char_end: Vec<u32>,
    /// `rows × 2n` inner products: each query's start score, then each query's end score.
    scores: Vec<f32>,
    /// `rows × d`, only when spans keep their vectors.
    vectors: Vec<f32>,
    /// The first row whose hits are not yet taken.
    pending: usize,
}

impl Window {
    fn len(&self) -> usize {
        self.addr.len()
    }

    /// Whether rows `a` and `b` (`a` first) can be a span's start and end.
    fn reachable(&self, a: usize, b: usize) -> bool {
        self.addr[a] >> 32 == self.addr[b] >> 32
            && self.row[a] == self.row[b]
            && self.token[b] >= self.token[a]
            && self.token[b] - self.token[a] < MAX_SPAN as u32
    }

    /// Drops the first `n` rows.
    fn drain(&mut self, n: usize, cols: usize, d: usize) {
        self.addr.drain(..n);
        self.row.drain(..n);
        self.token.drain(..n);
        self.sentence.drain(..n);
        self.char_start.drain(..n);
        self.char_end.drain(..n);
        self.scores.drain(..n * cols);
        if !self.vectors.is_empty() {
            self.vectors.drain(..n * d);
        }
        self.pending -= n;
    }
}

struct Scan<'q> {
    queries: &'q Queries,
    k: usize,
    keep_vectors: bool,
    window: Window,
    /// Per score column (query × side), the best `k` anchors so far, the worst on top.
    heaps: Vec<BinaryHeap<Worst>>,
    /// Per score column, the score a row must beat to enter its heap.
    bar: Vec<f32>,
    stats: ScanStats,
    /// A batch's f16 vectors as f32.
    converted: Vec<f32>,
}

impl<'q> Scan<'q> {
    fn new(queries: &'q Queries, k: usize, keep_vectors: bool) -> Self {
        let cols = 2 * queries.n;
        let bar = vec![if k == 0 { f32::INFINITY } else { f32::NEG_INFINITY }; cols];
        Self { queries, k, keep_vectors, window: Window::default(), heaps: (0..cols).map(|_| BinaryHeap::new()).collect(), bar, stats: ScanStats::default(), converted: Vec::new() }
    }

    fn cols(&self) -> usize {
        2 * self.queries.n
    }

    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let get = |n: &str| batch.column_by_name(n).with_context(|| format!("phrases column {n} is missing"));
        let rows = batch.num_rows();
        let (d, cols) = (self.queries.d, self.cols());
        let vectors = get(phrases::VECTOR)?.as_fixed_size_list();
        anyhow::ensure!(vectors.value_length() as usize == d, "phrase vectors have {} dimensions, the queries {d}", vectors.value_length());
        let values = f32_values(vectors.values(), &mut self.converted)?;
        anyhow::ensure!(values.len() == rows * d && vectors.null_count() == 0, "phrase vectors are sliced or hold nulls");
        let w = &mut self.window;
        w.addr.extend_from_slice(get("_rowaddr")?.as_primitive::<UInt64Type>().values());
        w.row.extend_from_slice(get(phrases::CORPUS_ROW)?.as_primitive::<UInt64Type>().values());
        for (v, n) in [(&mut w.token, phrases::TOKEN), (&mut w.sentence, phrases::SENTENCE), (&mut w.char_start, phrases::CHAR_START), (&mut w.char_end, phrases::CHAR_END)] {
            v.extend_from_slice(get(n)?.as_primitive::<UInt32Type>().values());
        }
        if self.keep_vectors {
            w.vectors.extend_from_slice(values);
        }
        let started = Instant::now();
        let at = w.scores.len();
        // Not zeroed first: the product writes every score (with `read_dst` false it never reads them),
        // and zeroing them wrote 13 MB a batch (1.8 GB over the dev index) for nothing.
        w.scores.reserve(rows * cols);
        if rows > 0 && cols > 0 {
            // SAFETY: `values` is `rows × d` and `matrix` is `cols × d`, both row-major; the destination
            // is the `rows × cols` block reserved past the end of `scores`, every element of which the
            // product writes before the length takes it in. Strides are in elements.
            unsafe {
                gemm::gemm(
                    rows, cols, d,
                    w.scores.as_mut_ptr().add(at), 1, cols as isize, false,
                    values.as_ptr(), 1, d as isize,
                    self.queries.matrix.as_ptr(), d as isize, 1,
                    0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0),
                );
                w.scores.set_len(at + rows * cols);
            }
        }
        let scored = Instant::now();
        self.take_hits(false);
        self.stats.score += scored - started;
        self.stats.select += scored.elapsed();
        self.stats.rows += rows as u64;
        Ok(())
    }

    /// Takes the hits of every row whose neighbourhood is complete (all rows when `last`), then forgets
    /// the rows no later span can reach.
    fn take_hits(&mut self, last: bool) {
        let cols = self.cols();
        let len = self.window.len();
        let end = if last { len } else { len.saturating_sub(REACH) }.max(self.window.pending);
        let (n, d, k) = (self.queries.n, self.queries.d, self.k);
        let w = &self.window;
        let mut beaten = Vec::new();
        for i in w.pending..end {
            let row = &w.scores[i * cols..(i + 1) * cols];
            for (c0, (chunk, bar)) in row.chunks(LANES).zip(self.bar.chunks(LANES)).enumerate() {
                // Most rows beat no bar: test a chunk at once (vectorised), then find which.
                // `>=`: a row that ties the worst kept hit goes in and the heap drops the later address,
                // whatever order fragments come in.
                if chunk.iter().zip(bar).fold(false, |any, (s, b)| any | (s >= b)) {
                    beaten.extend(chunk.iter().zip(bar).enumerate().filter(|(_, (s, b))| s >= b).map(|(j, _)| c0 * LANES + j));
                }
            }
            for col in beaten.drain(..) {
                let heap = &mut self.heaps[col];
                heap.push(Worst(complete(w, n, cols, d, self.keep_vectors, i, col)));
                if heap.len() > k {
                    heap.pop();
                }
                if heap.len() == k {
                    self.bar[col] = heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
                }
            }
        }
        self.window.pending = end;
        let cut = end.saturating_sub(REACH);
        self.window.drain(cut, cols, self.queries.d);
    }

    fn finish(mut self) -> Vec<Candidates> {
        self.take_hits(true);
        let n = self.queries.n;
        let mut sorted: Vec<Vec<Anchor>> = self.heaps.into_iter().map(|h| h.into_sorted_vec().into_iter().map(|w| w.0).collect()).collect();
        let ends = sorted.split_off(n);
        sorted.into_iter().zip(ends).map(|(starts, ends)| Candidates { starts, ends }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(score: f32, addr: u64) -> Anchor {
        let span = Span {
            corpus_row: addr,
            score,
            char_start: 0,
            char_end: 1,
            first_sentence: 0,
            last_sentence: 0,
            start_token: 0,
            end_token: 0,
            start_vector: Vec::new(),
            end_vector: Vec::new(),
        };
        Anchor { score, addr, span }
    }

    #[test]
    fn merge_keeps_the_best_k_with_ties_to_the_lower_address() {
        let a = Candidates { starts: vec![anchor(3.0, 5), anchor(1.0, 1)], ends: vec![] };
        let b = Candidates { starts: vec![anchor(3.0, 2), anchor(2.0, 9)], ends: vec![anchor(1.0, 4)] };
        let m = Candidates::merge([a, b], 3);
        assert_eq!(m.starts.iter().map(|a| a.addr).collect::<Vec<_>>(), vec![2, 5, 9]);
        assert_eq!(m.ends.len(), 1);
    }

    /// Rows `(corpus_row, token)` with one-hot-ish vectors, fed in batches of every size: the scan's hits
    /// and spans do not depend on where batches end.
    #[test]
    fn spans_complete_across_batch_boundaries_and_stay_in_their_paragraph() {
        use arrow::array::{FixedSizeListArray, Float32Array, UInt32Array, UInt64Array};
        use std::sync::Arc;
        let d = 4;
        // Two paragraphs of 12 and 5 tokens; row 3's vector is the start query, row 7 the end query (within
        // reach), row 13 (next paragraph) scores higher on end but must not complete row 3's span.
        let layout: Vec<(u64, u32)> = (0..12).map(|t| (0, t)).chain((0..5).map(|t| (1, t))).collect();
        let vector = |i: usize| -> [f32; 4] {
            match i {
                3 => [1.0, 0.0, 0.0, 0.0],
                7 => [0.0, 1.0, 0.0, 0.0],
                13 => [0.0, 2.0, 0.0, 0.0],
                _ => [0.01 * i as f32, 0.0, 0.0, 0.1],
            }
        };
        let queries = Queries::new(&[(vec![1.0, 0.0, 0.0, 0.0], vec![0.0, 1.0, 0.0, 0.0])]);
        let batch = |rows: std::ops::Range<usize>| {
            let item = Arc::new(arrow_schema::Field::new("item", arrow_schema::DataType::Float32, true));
            let flat: Vec<f32> = rows.clone().flat_map(vector).collect();
            let fsl = FixedSizeListArray::new(item, d as i32, Arc::new(Float32Array::from(flat)), None);
            let u32s = |f: &dyn Fn(usize) -> u32| Arc::new(UInt32Array::from_iter_values(rows.clone().map(f))) as Arc<dyn Array>;
            RecordBatch::try_from_iter([
                ("_rowaddr", Arc::new(UInt64Array::from_iter_values(rows.clone().map(|i| i as u64))) as Arc<dyn Array>),
                (phrases::CORPUS_ROW, Arc::new(UInt64Array::from_iter_values(rows.clone().map(|i| layout[i].0)))),
                (phrases::TOKEN, u32s(&|i| layout[i].1)),
                (phrases::SENTENCE, u32s(&|_| 0)),
                (phrases::CHAR_START, u32s(&|i| 10 * i as u32)),
                (phrases::CHAR_END, u32s(&|i| 10 * i as u32 + 5)),
                (phrases::VECTOR, Arc::new(fsl)),
            ])
            .unwrap()
        };
        let mut results = Vec::new();
        for size in [1, 2, 3, 5, 9, 10, 17] {
            let mut s = Scan::new(&queries, 3, true);
            let mut at = 0;
            while at < layout.len() {
                let to = (at + size).min(layout.len());
                s.push(&batch(at..to)).unwrap();
                at = to;
            }
            results.push(s.finish().remove(0));
        }
        let first = &results[0];
        assert!(results.iter().all(|r| r == first), "batch size changes the result");
        let top = &first.starts[0];
        assert_eq!((top.addr, top.span.start_token, top.span.end_token), (3, 3, 7), "row 3 completes to row 7");
        assert_eq!(top.span.score, 2.0);
        assert_eq!(top.span.end_vector, vector(7).to_vec());
        let end = &first.ends[0];
        assert_eq!((end.addr, end.span.corpus_row, end.span.start_token, end.span.end_token), (13, 1, 0, 1), "row 13 completes backwards inside its paragraph");
        assert_eq!(first.spans(1).len(), 2);
    }
}
