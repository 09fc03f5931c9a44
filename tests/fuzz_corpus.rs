//! The fuzz targets' entry functions over every committed seed in
//! fuzz/corpus/<target>/ (crashes found by hack/fuzz.sh are added there
//! once fixed), on stable Rust and without a cluster: a panic here is a
//! regression of a bug the fuzzer found.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target),
    )
}

fn files(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn run(target: &str, entry: fn(&[u8])) {
    let mut seeds = corpus(target);
    if target == "rollout" {
        // hack/fuzz.sh seeds the rollout target with these too.
        seeds.extend(files(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed"),
        ));
    }
    for (path, data) in seeds {
        // The file's name in the failure, then the panic itself.
        eprintln!("{target}: {}", path.display());
        entry(&data);
    }
}

#[test]
fn rollout_corpus() {
    run("rollout", rollouts::fuzzing::rollout);
}

#[test]
fn analysis_template_corpus() {
    run("analysis_template", rollouts::fuzzing::analysis_template);
}

#[test]
fn condition_corpus() {
    run("condition", rollouts::fuzzing::condition);
}
