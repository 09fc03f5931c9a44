//! Writes the CRDs generated from `src/api` into `crds/` (or the directory
//! given as the first argument).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("crdgen: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (file, crd) in rollouts::api::crds() {
        let path = dir.join(file);
        let written = rollouts::api::render_crd(&crd)
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(&path, yaml).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
