//! Sweep grids: a config's `[sweep]` section names config keys by dotted path, each with the values it
//! takes, and expands into points, one config each, that share one store. The stages of a point are
//! planned from its own config; jobs are content-addressed, so what no axis touches (ingest, encode,
//! the index, an untouched retrieval) is the same job in every point and runs once.
//!
//! ```toml
//! [sweep]
//! "qsft.query.optim.lr" = [1e-5, 3e-5]          # the [[qsft]] run named `query`
//! "retrieval.*.k" = [100, 200]                  # every [[retrieval]]
//! seeds = [1, 2]                                # every training run's `optim.seed`
//! exclude = [{ "qsft.query.optim.lr" = 3e-5, seeds = 2 }]
//! include = [{ "qsft.query.optim.lr" = 1e-4 }]  # an extra point; other axes as the config has them
//! ```
//!
//! A path walks tables by key; in an array of tables (`[[qsft]]`, `[[retrieval]]`) a step is a `name`,
//! an index, or `*` for every element.

use crate::ExperimentConfig;
use std::fmt::Write;
use toml::{Table, Value};

/// The axis of `seeds = [...]`: it sets these keys, wherever their run is in the config.
pub const SEED_AXIS: &str = "seed";
/// (the run, its seed) pairs: where the run is there, its seed is set.
const SEED_PATHS: [(&str, &str); 3] = [("train.reader", "train.reader.optim.seed"), ("train.phrase", "train.phrase.optim.seed"), ("qsft", "qsft.*.optim.seed")];

/// One point of a sweep: the value of each axis, and the config they make.
#[derive(Debug, Clone)]
pub struct Point {
    /// `lr=1e-05 terms={ query = 1.0 }`: each axis by its shortest unambiguous name; empty for a config
    /// without `[sweep]`.
    pub label: String,
    /// Each axis (its dotted path, or `seed`) and its value here, in axis order.
    pub values: Vec<(String, Value)>,
    pub config: ExperimentConfig,
}

/// The points of the config in `text` (one, unlabelled, when it has no `[sweep]`), in grid order with
/// the last axis varying fastest, then the `include`d ones. Errors name the axis, or the point and field.
pub fn points(text: &str) -> Result<Vec<Point>, String> {
    let base = ExperimentConfig::parse(text)?;
    let Some(sweep) = base.sweep.clone() else { return Ok(vec![Point { label: String::new(), values: Vec::new(), config: base }]) };
    let line = |key: &str| text.lines().position(|l| l.contains(&format!("\"{key}\"")) || l.trim_start().starts_with(&format!("{key} "))).map_or(String::new(), |i| format!(" (line {})", i + 1));
    let bad = |key: &str, problem: String| format!("field `sweep.{key}`{}: {problem}", line(key));

    let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
    let (mut exclude, mut include) = (Vec::new(), Vec::new());
    for (key, value) in &sweep {
        let list = |value: &Value| value.as_array().cloned().ok_or_else(|| bad(key, "must be a list of values".into()));
        match key.as_str() {
            "exclude" | "include" => {
                let entries = list(value)?
                    .into_iter()
                    .map(|e| e.as_table().cloned().ok_or_else(|| bad(key, "must be a list of tables of axis values".into())))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "exclude" { exclude = entries } else { include = entries }
            }
            _ => {
                let values = list(value)?;
                if values.is_empty() {
                    return Err(bad(key, "lists no values".into()));
                }
                axes.push((axis_of(key).to_string(), values));
            }
        }
    }
    if axes.is_empty() && include.is_empty() {
        return Err(format!("field `sweep`{}: names no axis", line("[sweep]")));
    }
    for (what, entries) in [("exclude", &exclude), ("include", &include)] {
        for e in entries.iter() {
            if let Some(k) = e.keys().find(|k| !axes.iter().any(|(a, _)| a == axis_of(k)) && what == "exclude") {
                return Err(bad(what, format!("`{k}` is not an axis of the sweep")));
            }
        }
    }

    // The grid, then the included points; excluded and repeated points left out.
    let mut grid: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (axis, values) in &axes {
        grid = grid.into_iter().flat_map(|p| values.iter().map(move |v| [p.clone(), vec![(axis.clone(), v.clone())]].concat())).collect();
    }
    let excluded = |p: &[(String, Value)]| exclude.iter().any(|e| e.iter().all(|(k, v)| p.iter().any(|(a, x)| a == axis_of(k) && x == v)));
    grid.retain(|p| !excluded(p));
    grid.extend(include.iter().map(|e| e.iter().map(|(k, v)| (axis_of(k).to_string(), v.clone())).collect()));
    let mut seen = Vec::new();
    grid.retain(|p| {
        let key = format!("{p:?}");
        !seen.contains(&key) && {
            seen.push(key);
            true
        }
    });
    if grid.is_empty() {
        return Err(format!("field `sweep`{}: every point is excluded", line("[sweep]")));
    }

    let doc: Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let names: Vec<String> = grid.iter().flatten().map(|(a, _)| a.clone()).collect();
    grid.into_iter()
        .map(|values| {
            let mut point = doc.clone();
            point.remove("sweep");
            let mut root = Value::Table(point);
            for (axis, value) in &values {
                let set = if axis == SEED_AXIS {
                    let seeded: Vec<&str> = SEED_PATHS.iter().filter(|(run, _)| has(&root, run)).map(|(_, p)| *p).collect();
                    seeded.into_iter().map(|p| set(&mut root, p, value)).sum::<Result<usize, String>>()
                } else {
                    set(&mut root, axis, value)
                };
                match set {
                    Ok(0) if axis == SEED_AXIS => return Err(bad("seeds", "the config trains nothing to seed".into())),
                    Ok(_) => {}
                    Err(e) => return Err(bad(axis, e)),
                }
            }
            let label = label(&values, &names);
            let text = toml::to_string(&root).map_err(|e| e.to_string())?;
            let config = ExperimentConfig::parse(&text).map_err(|e| format!("sweep point `{label}`: {e}"))?;
            Ok(Point { label, values, config })
        })
        .collect()
}

/// An axis by its key in `[sweep]`.
fn axis_of(key: &str) -> &str {
    if key == "seeds" { SEED_AXIS } else { key }
}

/// Whether the config has a non-empty value at `path`.
fn has(root: &Value, path: &str) -> bool {
    path.split('.').try_fold(root, |v, k| v.get(k)).is_some_and(|v| !v.as_array().is_some_and(Vec::is_empty))
}

/// Sets the key at `path` to `value`; returns how many places it set. Missing tables are made on the way.
fn set(at: &mut Value, path: &str, value: &Value) -> Result<usize, String> {
    let (step, rest) = match path.split_once('.') {
        Some((s, r)) => (s, Some(r)),
        None => (path, None),
    };
    match at {
        Value::Table(t) => match rest {
            None => {
                t.insert(step.to_string(), value.clone());
                Ok(1)
            }
            Some(rest) => set(t.entry(step).or_insert_with(|| Value::Table(Table::new())), rest, value),
        },
        Value::Array(items) => {
            let rest = rest.ok_or_else(|| format!("`{step}` names an element of a list, not a key"))?;
            let chosen: Vec<&mut Value> = match step {
                "*" => items.iter_mut().collect(),
                _ => match step.parse::<usize>() {
                    Ok(i) => items.get_mut(i).into_iter().collect(),
                    Err(_) => items.iter_mut().filter(|v| v.get("name").and_then(Value::as_str) == Some(step)).collect(),
                },
            };
            if chosen.is_empty() {
                return Err(format!("no element named `{step}`"));
            }
            chosen.into_iter().map(|v| set(v, rest, value)).sum()
        }
        _ => Err(format!("`{step}` is below a key that holds a value, not a table")),
    }
}

/// `axis=value` for each axis, by the last step of its path unless another axis shares it.
fn label(values: &[(String, Value)], axes: &[String]) -> String {
    let short = |axis: &str| {
        let last = axis.rsplit('.').next().unwrap_or(axis);
        let shared = axes.iter().any(|a| a != axis && a.rsplit('.').next() == Some(last));
        if shared { axis.to_string() } else { last.to_string() }
    };
    let mut out = String::new();
    for (i, (axis, value)) in values.iter().enumerate() {
        let _ = write!(out, "{}{}={}", if i > 0 { " " } else { "" }, short(axis), value_text(value));
    }
    out
}

/// A value as labels and the ledger show it: a string as itself, anything else as its TOML text
/// without spaces (`{query=1.0,context=1.0}`).
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(value_text).collect::<Vec<_>>().join(",")),
        Value::Table(t) => format!("{{{}}}", t.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect::<Vec<_>>().join(",")),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "s"
[store]
uri = "out"
[corpus]
path = "docs.jsonl"
[questions]
path = "q.jsonl"
[train]
qsft_train = "q.jsonl"
qsft_dev = "q.jsonl"
[[qsft]]
name = "query"
terms = { query = 1.0 }
[[qsft]]
name = "other"
terms = { doc = 1.0 }
[[retrieval]]
name = "a"
mode = "single"
unit = "sentence"
encoder = "query"
[[retrieval]]
name = "b"
mode = "bm25"
unit = "paragraph"
"#;

    #[test]
    fn a_grid_expands_by_name_index_and_star_less_its_exclusions_plus_its_inclusions() {
        let text = format!(
            "{BASE}\n[sweep]\n\"qsft.query.optim.lr\" = [1e-5, 3e-5]\n\"retrieval.*.k\" = [10, 20]\n\"search.nprobes\" = [4]\nseeds = [1, 2]\n\
             exclude = [{{ \"qsft.query.optim.lr\" = 3e-5, seeds = 2 }}]\ninclude = [{{ \"qsft.query.optim.lr\" = 1e-4 }}]\n"
        );
        let points = points(&text).unwrap();
        // 2 × 2 × 1 × 2 = 8, less the 2 excluded, plus 1 included.
        assert_eq!(points.len(), 7, "{:?}", points.iter().map(|p| &p.label).collect::<Vec<_>>());
        let first = &points[0];
        assert_eq!(first.label, "lr=0.00001 k=10 nprobes=4 seed=1");
        assert_eq!(first.config.qsft[0].optim.lr, 1e-5);
        assert_eq!(first.config.qsft[1].optim.lr, points[6].config.qsft[1].optim.lr, "the run not named keeps its rate");
        assert!(first.config.retrieval.iter().all(|r| r.k == 10));
        assert_eq!(first.config.search.nprobes, 4);
        assert!(first.config.qsft.iter().all(|r| r.optim.seed == 1));
        assert!(first.config.sweep.is_none());
        assert!(!points.iter().any(|p| p.config.qsft[0].optim.lr == 3e-5 && p.config.qsft[0].optim.seed == 2));
        let included = points.last().unwrap();
        assert_eq!((included.label.as_str(), included.config.qsft[0].optim.lr), ("lr=0.0001", 1e-4));
    }

    #[test]
    fn a_config_without_a_sweep_is_one_point() {
        let points = points(BASE).unwrap();
        assert_eq!((points.len(), points[0].label.as_str()), (1, ""));
    }

    #[test]
    fn bad_axes_name_the_axis_and_its_line_or_the_point_and_field() {
        let err = |sweep: &str| points(&format!("{BASE}\n[sweep]\n{sweep}\n")).unwrap_err();
        let e = err("\"qsft.nope.optim.lr\" = [1e-5]");
        assert!(e.contains("sweep.qsft.nope.optim.lr") && e.contains("line 29") && e.contains("no element named `nope`"), "{e}");
        let e = err("\"qsft.query.optim.lrr\" = [1e-5]");
        assert!(e.contains("sweep point `lrr=0.00001`") && e.contains("lrr"), "{e}");
        let e = err("\"search.nprobes\" = 4");
        assert!(e.contains("must be a list"), "{e}");
        let e = err("\"search.nprobes\" = [4]\nexclude = [{ \"search.k\" = 1 }]");
        assert!(e.contains("`search.k` is not an axis"), "{e}");
        let e = err("\"search.nprobes\" = [4]\nexclude = [{ \"search.nprobes\" = 4 }]");
        assert!(e.contains("every point is excluded"), "{e}");
    }
}
