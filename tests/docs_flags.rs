//! The docs name only flags the binaries have: every `--flag` in the
//! controller's flag section of docs/operations.md, on a command line that
//! runs `rollouts-controller` in README.md or docs/, and in docs/cli.md or
//! on a `kubectl rollouts` command line, is in the `--help` of the binary
//! (or of one of the plugin's subcommands). No cluster needed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

/// The `--flag` tokens of `text` (a `--flag=value` counts as `--flag`).
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '-') {
            continue;
        }
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            out.insert(format!("--{name}"));
        }
    }
    out
}

fn help(bin: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .with_context(|| format!("running {bin} {args:?} --help"))?;
    ensure!(out.status.success(), "{bin} {args:?} --help failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The help of the plugin and of every subcommand, nested ones included.
fn plugin_help(bin: &str) -> Result<String> {
    let mut all = String::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(bin, &args)?;
        let commands = text
            .split("Commands:")
            .nth(1)
            .map(|rest| rest.split("\n\n").next().unwrap_or_default())
            .unwrap_or_default();
        for line in commands.lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if name != "help" {
                let mut sub = path.clone();
                sub.push(name.to_string());
                todo.push(sub);
            }
        }
        all.push_str(&text);
    }
    Ok(all)
}

fn read(path: &str) -> Result<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).with_context(|| format!("reading {path}"))
}

fn docs() -> Result<Vec<(String, String)>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![("README.md".to_string(), read("README.md")?)];
    for entry in std::fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = format!(
                "docs/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            out.push((name.clone(), read(&name)?));
        }
    }
    Ok(out)
}

/// The flags on the command lines of `text` that run `program` (its first
/// word, after a `$ ` prompt and environment assignments, ends with
/// `program`; or `cargo run --bin program -- ...`), after it.
fn command_flags(text: &str, program: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches("$ ");
        // A shell comment is prose.
        let line = line.split(" #").next().unwrap_or_default();
        let mut words = line.split_whitespace().skip_while(|w| w.contains('='));
        let args: Vec<&str> = match words.next() {
            Some(first) if first.ends_with(program) => words.collect(),
            Some("cargo") if line.contains(&format!("--bin {program} -- ")) => {
                words.skip_while(|w| *w != "--").skip(1).collect()
            }
            _ => continue,
        };
        out.extend(flags(&args.join(" ")));
    }
    out
}

#[test]
fn every_flag_the_docs_name_is_in_the_help() -> Result<()> {
    let controller = help(env!("CARGO_BIN_EXE_rollouts-controller"), &[])?;
    let plugin = plugin_help(env!("CARGO_BIN_EXE_kubectl-rollouts"))?;
    let known = |help: &str, flag: &str| {
        let alias = format!("{flag},");
        let last_alias = format!("{flag}]");
        help.split_whitespace().any(|w| {
            w == flag
                || w == alias
                || w == last_alias
                || w.starts_with(&format!("{flag}["))
                || w.starts_with(&format!("{flag}="))
        })
    };
    let mut missing = Vec::new();

    let operations = read("docs/operations.md")?;
    let section = operations
        .split("\n## Flags")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .context("docs/operations.md has no '## Flags' section")?;
    let mut wanted: Vec<(String, &str, String)> = flags(section)
        .into_iter()
        .map(|f| ("docs/operations.md, Flags".to_string(), "controller", f))
        .collect();
    for (file, text) in docs()? {
        for f in command_flags(&text, "rollouts-controller") {
            wanted.push((file.clone(), "controller", f));
        }
        for f in command_flags(
            &text.replace("kubectl rollouts ", "kubectl-rollouts "),
            "kubectl-rollouts",
        ) {
            wanted.push((file.clone(), "plugin", f));
        }
    }
    let cli = read("docs/cli.md")?;
    let prose: String = cli
        .lines()
        .filter(|l| !l.contains("cargo "))
        .collect::<Vec<_>>()
        .join("\n");
    for f in flags(&prose) {
        wanted.push(("docs/cli.md".to_string(), "plugin", f));
    }
    ensure!(
        wanted.len() > 40,
        "found only {} flags: is the parsing broken?",
        wanted.len()
    );
    for (file, bin, flag) in &wanted {
        let help = if *bin == "controller" {
            &controller
        } else {
            &plugin
        };
        if !known(help, flag) {
            missing.push(format!("{file}: {flag} ({bin})"));
        }
    }
    ensure!(
        missing.is_empty(),
        "flags named in the docs that the binaries do not have:\n{}",
        missing.join("\n")
    );
    Ok(())
}

#[test]
fn the_flag_parser_finds_flags_and_not_dashes() {
    let found = flags("`--qps N`, a -- b, x--y, --leader-elect=false, --9");
    assert_eq!(
        found,
        BTreeSet::from(["--qps".into(), "--leader-elect".into()])
    );
    let lines = "cargo run --bin rollouts-controller -- --namespace a --leader-elect=false   # uses --nope\n$ KUBECONFIG=x target/release/rollouts-controller --qps 5\nkubectl scale deployment rollouts-controller --replicas=0";
    assert_eq!(
        command_flags(lines, "rollouts-controller"),
        BTreeSet::from([
            "--namespace".into(),
            "--leader-elect".into(),
            "--qps".into()
        ])
    );
}
