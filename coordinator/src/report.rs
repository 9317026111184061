//! `phrasesweep report STORE… -o report.html`: the archive as one self-contained page to look at the
//! morning after: answer recall against words retrieved for every retrieval, the metrics with
//! bootstrap intervals, the reader's answers against words read, each sweep axis against mAR, the
//! training loss curves, and which questions each retrieval found. Charts are inline SVG drawn here;
//! nothing is fetched when the page opens.
//!
//! A sweep point (or a config without one) is shown by its latest finished run.

use crate::archive::{self, Query};
use crate::compare::bootstrap;
use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use phrasesweep_schemas::tables::runs_schema;
use phrasesweep_workers::io::store::Store;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The word budgets of a recall curve (mAR's: 100, 200, …, 3000).
const BUDGET_STEP: f64 = 100.0;
const PALETTE: [&str; 10] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

/// One retrieval of one shown run.
struct Scored {
    run: String,
    point: String,
    retrieval: String,
    mode: String,
    questions: u64,
    mar_seed: f64,
    mar_strict: f64,
    recall_1000w: f64,
    em: f64,
    mean_words: f64,
    curve: Vec<f64>,
    /// Per question: mAR, and the rank of the first evidence holding an answer (none: missed).
    per_question: BTreeMap<String, (f64, Option<u32>)>,
}

impl Scored {
    /// The name of its curve and column: the retrieval, and the point in a sweep.
    fn name(&self) -> String {
        if self.point.is_empty() { self.retrieval.clone() } else { format!("{} · {}", self.retrieval, self.point) }
    }
}

/// The page for the ledgers of `stores`.
pub async fn render(stores: &[Store]) -> Result<String> {
    let runs = latest_runs(stores).await?;
    if runs.is_empty() {
        bail!("no finished run with metrics in the ledgers of {}", stores.iter().map(|s| s.root_uri()).collect::<Vec<_>>().join(", "));
    }
    let scored = scored(stores, &runs).await?;
    let mut page = String::new();
    let title = format!("phrasesweep: {}", runs.iter().map(|r| r.sweep.as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", "));
    write!(page, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head><body>\n", esc(&title))?;
    writeln!(page, "<h1>{}</h1>", esc(&title))?;
    let stores_shown = stores.iter().map(|s| format!("<code>{}</code>", esc(s.root_uri()))).collect::<Vec<_>>().join(", ");
    let commits: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.commit.as_str()).collect();
    writeln!(
        page,
        "<p class=\"meta\">{} run(s) shown (the latest finished run of each point) from {stores_shown}; code {}.</p>",
        runs.len(),
        commits.into_iter().map(esc).collect::<Vec<_>>().join(", ")
    )?;

    writeln!(page, "<h2>Answer recall against words retrieved</h2>\n<p>The recall of each retrieval's evidence cut at each word budget; mAR is the mean of its curve.</p>")?;
    let curves = scored
        .iter()
        .map(|s| Series { name: s.name(), points: s.curve.iter().enumerate().map(|(i, r)| ((i + 1) as f64 * BUDGET_STEP, *r)).collect(), dots: false })
        .collect();
    page += &chart(&Chart { id: "recall", x: "words retrieved", y: "answer recall", series: curves, x_ticks: None, y_from_zero: true });

    writeln!(page, "<h2>Metrics</h2>\n<p>mAR with a bootstrap 95&nbsp;% interval over questions (10,000 resamples).</p>")?;
    page += &metrics_table(&scored);

    let reading = reading(stores, &scored).await?;
    if !reading.is_empty() {
        writeln!(page, "<h2>Answers against words read</h2>\n<p>The reader's exact match and F1 from each retrieval's evidence cut at each word budget, \
             against the words it read there (at most the budget): the answers a prompt of that size gets.</p>")?;
        for (id, measure, pick) in [("reader-em", "exact match", 0), ("reader-f1", "F1", 1)] {
            let series = reading.iter().map(|(name, points)| Series { name: name.clone(), points: points.iter().map(|p| (p.0, if pick == 0 { p.1 } else { p.2 })).collect(), dots: true }).collect();
            page += &chart(&Chart { id, x: "words read", y: measure, series, x_ticks: None, y_from_zero: true });
        }
    }

    let axes = axis_values(stores, &runs).await?;
    if !axes.is_empty() {
        writeln!(page, "<h2>Sweep axes against mAR</h2>")?;
        for (i, (axis, values)) in axes.iter().enumerate() {
            let mut categories: Vec<&String> = values.values().collect();
            categories.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                _ => a.cmp(b),
            });
            categories.dedup();
            let x_of = |v: &String| categories.iter().position(|c| *c == v).unwrap_or(0) as f64;
            let mut by_retrieval: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
            for s in &scored {
                if let Some(v) = values.get(&s.run) {
                    by_retrieval.entry(&s.retrieval).or_default().push((x_of(v), s.mar_seed));
                }
            }
            let series = by_retrieval.into_iter().map(|(r, points)| Series { name: r.to_string(), points, dots: true }).collect();
            let ticks = categories.iter().enumerate().map(|(i, c)| (i as f64, c.to_string())).collect();
            page += &chart(&Chart { id: &format!("axis-{i}"), x: axis, y: "mAR", series, x_ticks: Some(ticks), y_from_zero: false });
        }
    }

    let losses = training_losses(stores).await?;
    if !losses.is_empty() {
        writeln!(page, "<h2>Training loss</h2>\n<p>Each training job's loss at each optimiser step.</p>")?;
        let series = losses.into_iter().map(|(output, points)| Series { name: output, points, dots: false }).collect();
        page += &chart(&Chart { id: "loss", x: "step", y: "loss", series, x_ticks: None, y_from_zero: true });
    }

    writeln!(page, "<h2>Questions</h2>\n<p>The rank of the first evidence that holds an answer; ✗: missed. \
         <label><input type=\"checkbox\" id=\"missed-only\"> only questions some retrieval missed</label></p>")?;
    page += &questions_table(&scored);
    write!(page, "<script>{SCRIPT}</script>\n</body></html>\n")?;
    Ok(page)
}

/// A run shown: the latest finished run with metrics of its (store, sweep, point).
struct Run {
    id: String,
    sweep: String,
    point: String,
    store: String,
    commit: String,
}

async fn latest_runs(stores: &[Store]) -> Result<Vec<Run>> {
    let sql = "SELECT run_id, sweep, COALESCE(point, '') AS point, store, commit FROM runs \
               WHERE status = 'done' AND run_id IN (SELECT run_id FROM metrics) ORDER BY started_unix, run_id";
    let mut latest: BTreeMap<(String, String, String), Run> = BTreeMap::new();
    for b in sql_batches(stores, sql).await? {
        let col = |i: usize| b.column(i).as_string::<i32>().clone();
        let (id, sweep, point, store, commit) = (col(0), col(1), col(2), col(3), col(4));
        for i in 0..b.num_rows() {
            let key = (store.value(i).to_string(), sweep.value(i).to_string(), point.value(i).to_string());
            latest.insert(key, Run { id: id.value(i).into(), sweep: sweep.value(i).into(), point: point.value(i).into(), store: store.value(i).into(), commit: commit.value(i).into() });
        }
    }
    let mut runs: Vec<Run> = latest.into_values().collect();
    runs.sort_by(|a, b| (&a.sweep, &a.point).cmp(&(&b.sweep, &b.point)));
    Ok(runs)
}

async fn sql_batches(stores: &[Store], sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(archive::query(stores, &Query { sql: Some(sql.into()), ..Default::default() }).await?.1)
}

/// Each shown run's retrievals, with their curves and per-question tables.
async fn scored(stores: &[Store], runs: &[Run]) -> Result<Vec<Scored>> {
    let mut out = Vec::new();
    for b in sql_batches(stores, "SELECT * FROM metrics ORDER BY run_id, retrieval").await? {
        let text = |name: &str| b.column_by_name(name).map(|c| c.as_string::<i32>().clone()).with_context(|| format!("metrics: no column `{name}`"));
        let float = |name: &str| b.column_by_name(name).map(|c| c.as_primitive::<Float64Type>().clone()).with_context(|| format!("metrics: no column `{name}`"));
        let (run_id, retrieval, mode, per_question) = (text("run_id")?, text("retrieval")?, text("mode")?, text("per_question")?);
        let questions = b.column_by_name("questions").context("metrics: no column `questions`")?.as_primitive::<UInt64Type>().clone();
        let (mar_seed, mar_strict, r1k, em, words) = (float("mar_seed")?, float("mar_strict")?, float("recall_1000w")?, float("em_top_phrase")?, float("mean_words")?);
        let curves = b.column_by_name("curve_seed").context("metrics: no column `curve_seed`")?.as_list::<i32>().clone();
        for i in 0..b.num_rows() {
            let Some(run) = runs.iter().find(|r| r.id == run_id.value(i)) else { continue };
            let store = stores.iter().find(|s| s.root_uri() == run.store).with_context(|| format!("run {} is of a store not named", run.id))?;
            let curve = curves.value(i);
            out.push(Scored {
                run: run.id.clone(),
                point: run.point.clone(),
                retrieval: retrieval.value(i).into(),
                mode: mode.value(i).into(),
                questions: questions.value(i),
                mar_seed: mar_seed.value(i),
                mar_strict: mar_strict.value(i),
                recall_1000w: r1k.value(i),
                em: em.value(i),
                mean_words: words.value(i),
                curve: curve.as_primitive::<Float64Type>().values().to_vec(),
                per_question: crate::ledger::per_question(store, per_question.value(i)).await?,
            });
        }
    }
    out.sort_by(|a, b| (&a.point, &a.run).cmp(&(&b.point, &b.run)));
    Ok(out)
}

/// Each shown retrieval's read stage: (words read, EM, F1) at each budget, by the retrieval's name.
async fn reading(stores: &[Store], scored: &[Scored]) -> Result<Vec<(String, Vec<(f64, f64, f64)>)>> {
    let mut out: Vec<(String, Vec<(f64, f64, f64)>)> = Vec::new();
    for b in sql_batches(stores, "SELECT run_id, retrieval, words, em, f1 FROM reading ORDER BY run_id, retrieval, budget").await? {
        let (run, retrieval) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        let float = |i: usize| b.column(i).as_primitive::<Float64Type>().clone();
        let (words, em, f1) = (float(2), float(3), float(4));
        for i in 0..b.num_rows() {
            let Some(s) = scored.iter().find(|s| s.run == run.value(i) && s.retrieval == retrieval.value(i)) else { continue };
            let name = s.name();
            let point = (words.value(i), em.value(i), f1.value(i));
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, points)) => points.push(point),
                None => out.push((name, vec![point])),
            }
        }
    }
    Ok(out)
}

/// Each sweep axis: its value (as text) for each shown run that has one.
async fn axis_values(stores: &[Store], runs: &[Run]) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let fixed = runs_schema().fields().len();
    let mut axes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let options = FormatOptions::default();
    for b in sql_batches(stores, "SELECT * FROM runs").await? {
        let ids = b.column(0).as_string::<i32>().clone();
        for (field, column) in b.schema().fields().iter().zip(b.columns()).skip(fixed) {
            let shown = ArrayFormatter::try_new(column.as_ref(), &options)?;
            for i in (0..b.num_rows()).filter(|&i| column.is_valid(i) && runs.iter().any(|r| r.id == ids.value(i))) {
                axes.entry(field.name().clone()).or_default().insert(ids.value(i).to_string(), shown.value(i).to_string());
            }
        }
    }
    Ok(axes)
}

/// Every training job's loss curve, by its output folder.
async fn training_losses(stores: &[Store]) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for b in sql_batches(stores, "SELECT output, step, value FROM training WHERE metric = 'loss' ORDER BY output, step").await? {
        let (output, step, value) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<UInt64Type>(), b.column(2).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            out.entry(output.value(i).to_string()).or_default().push((step.value(i) as f64, value.value(i)));
        }
    }
    Ok(out)
}

fn metrics_table(scored: &[Scored]) -> String {
    let mut t = String::from(
        "<div class=\"wide\"><table class=\"metrics\"><thead><tr><th>retrieval</th><th>point</th><th>mode</th><th>questions</th><th>mAR</th><th>95&nbsp;% interval</th>\
         <th>mAR strict</th><th>recall@1,000 words</th><th>EM</th><th>words</th><th>run</th></tr></thead><tbody>\n",
    );
    for s in scored {
        let values: Vec<f64> = s.per_question.values().map(|(m, _)| *m).collect();
        let interval = if values.is_empty() {
            "—".to_string()
        } else {
            let (_, lo, hi) = bootstrap(&values);
            format!("{lo:.4} – {hi:.4}")
        };
        let _ = writeln!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{interval}</td><td>{:.4}</td><td>{:.3}</td><td>{:.3}</td><td>{:.0}</td><td><code>{}</code></td></tr>",
            esc(&s.retrieval),
            esc(&s.point),
            esc(&s.mode),
            s.questions,
            s.mar_seed,
            s.mar_strict,
            s.recall_1000w,
            s.em,
            s.mean_words,
            esc(&s.run)
        );
    }
    t + "</tbody></table></div>\n"
}

fn questions_table(scored: &[Scored]) -> String {
    let mut t = String::from("<div class=\"wide\"><table class=\"questions\"><thead><tr><th>question</th>");
    for s in scored {
        let _ = write!(t, "<th>{}</th>", esc(&s.name()));
    }
    t += "</tr></thead><tbody>\n";
    let ids: std::collections::BTreeSet<&String> = scored.iter().flat_map(|s| s.per_question.keys()).collect();
    for id in ids {
        let cells: Vec<Option<Option<u32>>> = scored.iter().map(|s| s.per_question.get(id).map(|(_, rank)| *rank)).collect();
        let missed = cells.iter().any(|c| matches!(c, Some(None)));
        let _ = write!(t, "<tr{}><td>{}</td>", if missed { " class=\"missed\"" } else { "" }, esc(id));
        for c in cells {
            t += &match c {
                Some(Some(rank)) => format!("<td class=\"found\">{rank}</td>"),
                Some(None) => "<td class=\"miss\">✗</td>".to_string(),
                None => "<td></td>".to_string(),
            };
        }
        t += "</tr>\n";
    }
    t + "</tbody></table></div>\n"
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    /// Dots at each point (with a line through them), else a line only.
    dots: bool,
}

struct Chart<'a> {
    id: &'a str,
    x: &'a str,
    y: &'a str,
    series: Vec<Series>,
    /// Labels at chosen x positions (categories), else numeric ticks.
    x_ticks: Option<Vec<(f64, String)>>,
    y_from_zero: bool,
}

const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 48.0;

/// An SVG line chart with its legend (an HTML list whose entries toggle their curve).
fn chart(c: &Chart) -> String {
    let all = || c.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (mut y0, mut y1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if c.y_from_zero {
        y0 = y0.min(0.0);
    }
    // A flat series (nothing right at any budget) still gets a readable axis.
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let pad = |lo: &mut f64, hi: &mut f64| {
        let span = (*hi - *lo).abs().max(1e-9);
        *lo -= span * 0.05;
        *hi += span * 0.05;
    };
    pad(&mut y0, &mut y1);
    if c.x_ticks.is_some() {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0).max(1e-12) * (W - LEFT - RIGHT);
    let sy = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0).max(1e-12) * (H - TOP - BOTTOM);
    let mut svg = format!("<figure><svg id=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\">\n", c.id);
    let _ = writeln!(svg, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" class=\"frame\"/>", W - LEFT - RIGHT, H - TOP - BOTTOM);
    for (y, label) in ticks(y0, y1) {
        let (right, at, left, below) = (W - RIGHT, sy(y), LEFT - 6.0, sy(y) + 4.0);
        let _ = writeln!(svg, "<line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{at:.1}\" y2=\"{at:.1}\" class=\"grid\"/><text x=\"{left}\" y=\"{below:.1}\" class=\"tick\" text-anchor=\"end\">{label}</text>");
    }
    let x_ticks = c.x_ticks.clone().unwrap_or_else(|| ticks(x0, x1));
    for (x, label) in x_ticks {
        let _ = writeln!(svg, "<text x=\"{:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{}</text>", sx(x), H - BOTTOM + 16.0, esc(&label));
    }
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" class=\"label\" text-anchor=\"middle\">{}</text>", (LEFT + W - RIGHT) / 2.0, H - 8.0, esc(c.x));
    let middle = (TOP + H - BOTTOM) / 2.0;
    let _ = writeln!(svg, "<text x=\"14\" y=\"{middle}\" class=\"label\" text-anchor=\"middle\" transform=\"rotate(-90 14 {middle})\">{}</text>", esc(c.y));
    let mut legend = format!("<ul class=\"legend\" data-chart=\"{}\">", c.id);
    for (i, s) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut points = s.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Several points at one x (other axes varied): the line goes through their mean.
        let line: Vec<(f64, f64)> = if s.dots {
            let mut at: Vec<(f64, Vec<f64>)> = Vec::new();
            for (x, y) in &points {
                match at.last_mut() {
                    Some((ax, ys)) if ax == x => ys.push(*y),
                    _ => at.push((*x, vec![*y])),
                }
            }
            at.into_iter().map(|(x, ys)| (x, ys.iter().sum::<f64>() / ys.len() as f64)).collect()
        } else {
            points.clone()
        };
        let path: String = line.iter().enumerate().map(|(j, (x, y))| format!("{}{:.1},{:.1}", if j == 0 { "M" } else { "L" }, sx(*x), sy(*y))).collect();
        let _ = write!(svg, "<g class=\"series\" data-series=\"{i}\"><path class=\"curve\" d=\"{path}\" stroke=\"{color}\"><title>{}</title></path>", esc(&s.name));
        if s.dots {
            for (x, y) in &points {
                let _ = write!(svg, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{}: {y:.4}</title></circle>", sx(*x), sy(*y), esc(&s.name));
            }
        }
        svg += "</g>\n";
        let _ = write!(legend, "<li data-series=\"{i}\"><span style=\"background:{color}\"></span>{}</li>", esc(&s.name));
    }
    svg + "</svg>" + &legend + "</ul></figure>\n"
}

/// Five to seven round ticks between `lo` and `hi`, with labels.
fn ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let raw = (hi - lo).abs().max(1e-12) / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(magnitude * 10.0);
    let decimals = (-step.log10().floor()).max(0.0) as usize + usize::from((step / magnitude).fract() != 0.0);
    let mut out = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        // Not `-0.00`.
        let t0 = if t.abs() < step * 1e-9 { 0.0 } else { t };
        out.push((t0, format!("{t0:.decimals$}")));
        t += step;
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}.meta{color:#666}\
figure{margin:8px 0}svg{max-width:100%;height:auto}.frame{fill:none;stroke:#999}.grid{stroke:#eee}\
.tick{font-size:11px;fill:#555}.label{font-size:12px;fill:#333}.curve{fill:none;stroke-width:2}\
.series.off{display:none}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px}\
.legend li{cursor:pointer}.legend li.off{opacity:.35}.legend span{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}\
table{border-collapse:collapse;font-size:12px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}\
th{background:#f4f4f4}td:first-child,th:first-child,.metrics td:nth-child(2){text-align:left}.metrics td:nth-child(2){white-space:normal}.wide{overflow-x:auto}td.found{background:#e6f4e6}td.miss{background:#fbe3e3;text-align:center}\
.questions.only-missed tr:not(.missed){display:none}.questions thead tr{display:table-row!important}";

/// Legend entries toggle their curve; the checkbox keeps only the questions some retrieval missed.
const SCRIPT: &str = "document.querySelectorAll('.legend li').forEach(li=>li.addEventListener('click',()=>{\
const chart=li.parentElement.dataset.chart;const g=document.querySelector('#'+chart+' g[data-series=\"'+li.dataset.series+'\"]');\
g.classList.toggle('off');li.classList.toggle('off');}));\
document.getElementById('missed-only').addEventListener('change',e=>document.querySelector('table.questions').classList.toggle('only-missed',e.target.checked));";

#[cfg(test)]
mod tests {
    use super::ticks;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t: Vec<String> = ticks(0.0, 1.0).into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t: Vec<String> = ticks(100.0, 3000.0).into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["500", "1000", "1500", "2000", "2500", "3000"]);
        let t: Vec<f64> = ticks(0.9, 0.96).into_iter().map(|t| t.0).collect();
        assert!(t.len() >= 4 && t[0] >= 0.9 && *t.last().unwrap() <= 0.96 + 1e-9, "{t:?}");
    }
}
