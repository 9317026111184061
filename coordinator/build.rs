//! Bakes the commit the binary is built from into it (`PHRASESWEEP_COMMIT`: the short hash, `+dirty`
//! when tracked files have changes, `unknown` outside a git checkout), for worker cards and provenance.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}+dirty") } else { hash }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=PHRASESWEEP_COMMIT={commit}");
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={git_dir}/{f}");
        }
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
    // Edits to the sources change the dirty flag before anything is staged.
    for dir in ["build.rs", "src", "../workers/src", "../schemas/src"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
