//! The repository is self-contained: no source, test, build script, CI or deployment file, and no
//! document, refers to a path outside the checkout, and none names a path of one machine.
//!
//! A clone of the repository alone, with nothing beside it, must build and pass its tests; a
//! `../../../shared/…` that works on the project's own machines fails everywhere else.

use std::path::{Component, Path, PathBuf};

/// Text that names a place outside the repository on the project's own machines.
const FORBIDDEN: [&str; 3] = ["../shared", "/work/", "/home/"];

/// Directories never scanned: build output, the VCS, fuzzing corpora.
const SKIPPED_DIRS: [&str; 5] = [".git", "target", "corpus", "artifacts", "node_modules"];

/// File names scanned: sources, manifests, scripts, CI, deployment files and documents.
fn scanned(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let in_ci = path.parent().and_then(Path::file_name).is_some_and(|d| d == ".ci");
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    in_ci
        || name == "Dockerfile"
        || matches!(ext, "rs" | "toml" | "sh" | "yml" | "yaml" | "md" | "service" | "sql")
}

/// Every problem in one file's text. `file` is the file's path relative to the repository root,
/// `crate_dir` that of the nearest directory holding a `Cargo.toml` (for paths appended to
/// `env!("CARGO_MANIFEST_DIR")`).
fn problems(file: &Path, crate_dir: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{}:{}", file.display(), n + 1);
        for bad in FORBIDDEN {
            if line.contains(bad) {
                found.push(format!("{at}: names `{bad}`: {}", line.trim()));
            }
        }
        for (start, _) in line.match_indices("../") {
            // Only the first `../` of a run starts a relative path.
            if line[..start].ends_with("../") || line[..start].ends_with('.') {
                continue;
            }
            let rest = &line[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "./_-".contains(c)))
                .unwrap_or(rest.len());
            let relative = &rest[..end];
            // `concat!(env!("CARGO_MANIFEST_DIR"), "/../x")` is relative to the crate, a plain
            // `"../x"` (include_str!, a link, a script's path) to the file's own directory.
            let base = if line[..start].ends_with("\"/") {
                crate_dir
            } else {
                file.parent().unwrap_or(Path::new(""))
            };
            if escapes(&base.join(relative)) {
                found.push(format!("{at}: `{relative}` leads outside the repository"));
            }
        }
    }
    found
}

/// Whether a path relative to the repository root climbs above it.
fn escapes(path: &Path) -> bool {
    let mut depth: i32 = 0;
    for part in path.components() {
        match part {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name) {
                walk(root, &path, out);
            }
        } else if scanned(&path) {
            out.push(path.strip_prefix(root).expect("inside the root").to_owned());
        }
    }
}

fn crate_dir_of(root: &Path, file: &Path) -> PathBuf {
    let mut dir = file.parent().unwrap_or(Path::new("")).to_owned();
    loop {
        if root.join(&dir).join("Cargo.toml").is_file() || dir.as_os_str().is_empty() {
            return dir;
        }
        dir = dir.parent().unwrap_or(Path::new("")).to_owned();
    }
}

#[test]
fn no_file_of_the_repository_refers_outside_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent");
    let mut files = Vec::new();
    walk(root, root, &mut files);
    files.sort();
    assert!(files.len() > 100, "only {} files found under {}", files.len(), root.display());
    // This file spells the forbidden strings out; it is checked by the unit tests below instead.
    let this_file = Path::new("tests/repository.rs");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| f.as_path() != this_file) {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else { continue };
        found.extend(problems(file, &crate_dir_of(root, file), &text));
    }
    assert!(
        found.is_empty(),
        "the repository must be self-contained; copy what these need into it:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_path_to_the_shared_folder_is_found_in_every_spelling() {
    let crate_dir = Path::new("crates/openapi-check");
    let file = Path::new("crates/openapi-check/src/lib.rs");
    // Built at run time, so that this file holds no such path for other checks to find.
    let manifest = format!("    \"/{}shared/graph/graph.yaml\"", "../".repeat(3));
    assert_eq!(problems(file, crate_dir, &manifest).len(), 2, "{manifest}");
    let include = r#"include_str!("../../../../data/x.yaml")"#;
    assert_eq!(problems(file, crate_dir, include).len(), 1);
    let machine = "// see /work/notes/perf.md";
    assert_eq!(problems(file, crate_dir, machine).len(), 1);
}

#[test]
fn a_path_that_stays_inside_is_accepted() {
    let crate_dir = Path::new("crates/registry");
    let file = Path::new("crates/registry/src/report.rs");
    for ok in [
        r#"include_str!("../../../README.md")"#,
        r#"include_str!("../data/map.csv")"#,
        r#"concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations")"#,
        "let range = a..b; let open = ..;",
    ] {
        assert_eq!(problems(file, crate_dir, ok), Vec::<String>::new(), "{ok}");
    }
    let doc = Path::new("docs/rollouts.md");
    assert!(problems(doc, Path::new(""), "[README](../README.md)").is_empty());
    assert_eq!(problems(doc, Path::new(""), "[x](../../elsewhere.md)").len(), 1);
}
