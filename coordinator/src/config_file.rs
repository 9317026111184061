//! Reading an experiment config from its file: the edge where the contracts crate's pure parser meets the
//! file system. Relative paths in the file are taken from the file's folder.

use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_schemas::sweep::{self, Point};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

/// Reads and checks a config file; the error names the file, and the field and line within it.
pub fn load(path: &Path) -> Result<ExperimentConfig, ConfigError> {
    let text = read(path)?;
    let mut config = ExperimentConfig::parse(&text).map_err(|message| ConfigError { file: path.to_path_buf(), message })?;
    config.resolve_paths(|p| resolve(folder(path), p));
    Ok(config)
}

/// The sweep points of a config file (one, unlabelled, without `[sweep]`), each config checked.
pub fn points(path: &Path) -> Result<Vec<Point>, ConfigError> {
    let text = read(path)?;
    let mut points = sweep::points(&text).map_err(|message| ConfigError { file: path.to_path_buf(), message })?;
    for p in &mut points {
        p.config.resolve_paths(|s| resolve(folder(path), s));
    }
    Ok(points)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError { file: path.to_path_buf(), message: format!("cannot read: {e}") })
}

fn folder(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// `p` as an absolute path from `base`, unless it is a URI or absolute already.
fn resolve(base: &Path, p: &str) -> String {
    if p.contains("://") || Path::new(p).is_absolute() {
        return p.to_string();
    }
    let joined = base.join(p);
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    normalize(&absolute).to_string_lossy().into_owned()
}

/// Removes `.` and `..` without touching the file system (the store folder may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_taken_from_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let configs = dir.path().join("configs");
        std::fs::create_dir(&configs).unwrap();
        let file = configs.join("c.toml");
        std::fs::write(&file, "name = \"t\"\n[store]\nuri = \"out\"\n[corpus]\npath = \"../data/./docs.jsonl\"\n[encoders]\nbase = \"default\"\nmine = \"m/x\"\ndp = \"densephrases:../dp\"\n").unwrap();
        let c = load(&file).unwrap();
        assert_eq!(c.corpus.path, dir.path().join("data/docs.jsonl").to_string_lossy());
        assert_eq!(c.store.uri, configs.join("out").to_string_lossy());
        assert_eq!(c.encoders["base"], "default", "the default model is a name, not a path");
        assert_eq!(c.encoders["mine"], configs.join("m/x").to_string_lossy());
        assert_eq!(c.encoders["dp"], format!("densephrases:{}", dir.path().join("dp").display()), "a DensePhrases folder, resolved");
        let e = load(&configs.join("missing.toml")).unwrap_err();
        assert!(e.to_string().contains("missing.toml") && e.to_string().contains("cannot read"), "{e}");
    }

    /// The learning curve's largest point is the recipe's own run on the same store (its jobs are the
    /// recipe's, so done already): everything the two configs share must stay the same.
    #[test]
    fn the_recipe_curves_largest_point_is_the_recipe() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let recipe = load(&configs.join("recipe-cpu.toml")).unwrap();
        let curve = points(&configs.join("recipe-cpu-curve.toml")).unwrap();
        let size = |c: &ExperimentConfig| c.train.as_ref().and_then(|t| t.phrase.as_ref()).and_then(|p| p.max_examples);
        assert!(curve.len() >= 3, "a curve of {} points", curve.len());
        let largest = curve.iter().map(|p| &p.config).max_by_key(|c| size(c)).unwrap();
        assert_eq!(size(largest), size(&recipe), "the curve ends at the recipe's size");
        // Sections as JSON: not all of them implement `PartialEq`.
        fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap()
        }
        assert_eq!(largest.store.uri, recipe.store.uri, "one store");
        for (what, a, b) in [
            ("corpus", json(&largest.corpus), json(&recipe.corpus)),
            ("questions", json(&largest.questions), json(&recipe.questions)),
            ("encode", json(&largest.encode), json(&recipe.encode)),
            ("index", json(&largest.index), json(&recipe.index)),
            ("search", json(&largest.search), json(&recipe.search)),
            ("train", json(&largest.train), json(&recipe.train)),
        ] {
            assert_eq!(a, b, "[{what}] differs between the curve and the recipe");
        }
        for q in &largest.qsft {
            let same = recipe.qsft.iter().find(|r| r.name == q.name).unwrap_or_else(|| panic!("the recipe has no QSFT run `{}`", q.name));
            assert_eq!(q, same, "QSFT run `{}` differs", q.name);
        }
        for r in &largest.retrieval {
            let same = recipe.retrieval.iter().find(|x| x.name == r.name).unwrap_or_else(|| panic!("the recipe has no retrieval `{}`", r.name));
            assert_eq!(r, same, "retrieval `{}` differs", r.name);
        }
    }

}
