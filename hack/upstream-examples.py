#!/usr/bin/env python3
"""Vendors upstream Argo Rollouts' own YAML as test data for
tests/upstream_manifests.rs: the files under the module's examples/ and the
fenced YAML blocks of its docs/ that hold a complete Rollout,
AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun or Experiment.

Usage (the module's source, as `go mod download -json` prints its Dir):
  GOTOOLCHAIN=go1.27.3 go mod download -json github.com/argoproj/argo-rollouts@v1.10.2
  python3 hack/upstream-examples.py <Dir> v1.10.2

Writes tests/fixtures/upstream-<version>/ afresh: examples/ copied as they
are, docs/<page>/L<line>.yaml per block (dedented, with a comment naming its
source), and README.md listing what was left out and why. Needs PyYAML
(Debian: python3-yaml).
"""

import os
import re
import shutil
import sys

import yaml

KINDS = {"Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate", "AnalysisRun", "Experiment"}
SEPARATOR = re.compile(r"^---\s*$", re.M)
FENCE = re.compile(r"^(\s*)(```+|~~~+)")


def documents(text):
    """Each YAML document of a stream, parsed, or the exception it raised."""
    for piece in SEPARATOR.split(text):
        try:
            yield yaml.safe_load(piece)
        except yaml.YAMLError as e:
            yield e


def ours(doc):
    return (
        isinstance(doc, dict)
        and doc.get("kind") in KINDS
        and str(doc.get("apiVersion", "")).startswith("argoproj.io/")
    )


def complete(doc):
    meta = doc.get("metadata")
    return isinstance(meta, dict) and bool(meta.get("name")) and isinstance(doc.get("spec"), dict)


def blocks(text):
    """(line, text) of each fenced block of a Markdown page, dedented by the
    fence's own indentation (blocks in mkdocs tabs are indented)."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group(1), m.group(2)
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        yield i + 1, "\n".join(body) + "\n"
        i = j + 1


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, version = sys.argv[1], sys.argv[2]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(repo, "tests", "fixtures", f"upstream-{version}")
    if os.path.isdir(out):
        shutil.rmtree(out)
    left_out = []
    counts = {"examples": 0, "docs": 0}

    for root, dirs, files in os.walk(os.path.join(src, "examples")):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith((".yaml", ".yml")):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            docs = list(documents(open(path, encoding="utf-8").read()))
            if any(ours(d) and complete(d) for d in docs):
                dest = os.path.join(out, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copyfile(path, dest)
                counts["examples"] += 1
                bad = [i for i, d in enumerate(docs) if isinstance(d, Exception)]
                if bad:
                    left_out.append(f"{rel}: document(s) {bad} are not YAML (kept; the test knows them)")
            elif any(isinstance(d, Exception) for d in docs):
                left_out.append(f"{rel}: not YAML (a Helm template or similar)")

    for root, dirs, files in os.walk(os.path.join(src, "docs")):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".md"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            if rel.startswith("docs/proposals/"):
                # Designs, some never built: their new fields (such as
                # spec.resourcePlugin) are not in upstream's CRDs either.
                if "\nkind: " in open(path, encoding="utf-8").read():
                    left_out.append(f"{rel}: a design proposal, not the served API")
                continue
            for line, text in blocks(open(path, encoding="utf-8").read()):
                if not re.search(r"^kind:\s*(%s)\s*$" % "|".join(KINDS), text, re.M):
                    continue
                docs = list(documents(text))
                if any(isinstance(d, Exception) for d in docs):
                    left_out.append(f"{rel}:{line}: not YAML (an excerpt with `...` or a template)")
                    continue
                mine = [d for d in docs if ours(d)]
                if not mine:
                    continue
                if not all(complete(d) for d in mine):
                    left_out.append(f"{rel}:{line}: not a complete object (no metadata.name or no spec)")
                    continue
                dest = os.path.join(out, os.path.splitext(rel)[0], f"L{line}.yaml")
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "w", encoding="utf-8") as f:
                    f.write(f"# From Argo Rollouts {version}, {rel}, the block at line {line}.\n")
                    f.write(text)
                counts["docs"] += 1

    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(
            f"""# Upstream Argo Rollouts {version} manifests (test data)

From the Go module `github.com/argoproj/argo-rollouts@{version}` (Apache License 2.0),
written by `hack/upstream-examples.py`: {counts['examples']} files of its `examples/`,
copied unchanged, and {counts['docs']} YAML blocks of its `docs/` that hold a complete
Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun or Experiment, one
file per block named after its page and line (the block as written, dedented, after
a comment naming its source). `tests/upstream_manifests.rs` applies every object of
those kinds to our CRDs and fails if the API server drops a field.

Left out or partly unusable:

"""
        )
        for item in left_out:
            f.write(f"- {item}\n")
    print(f"{counts['examples']} example files, {counts['docs']} doc blocks -> {out}")
    for item in left_out:
        print("  left out:", item)


if __name__ == "__main__":
    main()
