#!/usr/bin/env python3
"""The crate's floors (README, "Architecture"), checked from the source text.

A top-level module's edges are its `crate::X` paths. Fails (exit 1) when:
  - a module imports one on a higher floor, or modules form a cycle;
  - core/ imports anything of ours outside core/, or names an I/O crate;
  - a file has more than 500 lines before its `#[cfg(test)]` part;
  - `.unwrap()`/`.expect(` appears outside tests and src/main.rs;
  - a signature returns `Result<_, String>` outside src/config/.

    python3 tests/layers.py [REPO]
"""
import os
import re
import sys

FLOORS = [
    ["core"],
    ["config"],
    ["failpoint", "fsinfo", "logging", "sd_notify", "tasks"],
    ["pgconn"],
    ["catalog", "files"],
    ["repo", "journal"],
    ["pipeline"],
    ["state"],
    ["notify"],
    ["jobs"],
    ["health"],
    ["admin"],
    ["daemon"],
    ["cli"],
]
RANK = {m: i for i, floor in enumerate(FLOORS) for m in floor}
CORE_BANNED = ("tokio", "hyper", "opendal", "postgres", "std::fs", "std::process", "std::net")
MAX_LINES = 500

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
src = os.path.join(root, "src")
problems = []


def top(path):
    first = os.path.relpath(path, src).split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def crate_refs(text):
    refs = set()
    for m in re.finditer(r"crate::(\{[^;]*?\}|[a-z_][a-z0-9_]*)", text, re.S):
        group = m.group(1)
        if group.startswith("{"):
            depth, cur, items = 0, "", []
            for ch in group[1:-1]:
                depth += ch == "{"
                depth -= ch == "}"
                if ch == "," and depth == 0:
                    items.append(cur)
                    cur = ""
                else:
                    cur += ch
            items.append(cur)
            for item in items:
                name = re.match(r"\s*([a-z_][a-z0-9_]*)", item)
                if name and name.group(1) != "self":
                    refs.add(name.group(1))
        else:
            refs.add(group)
    return refs


def code_part(text):
    return text.split("#[cfg(test)]")[0]


def strip_comments(text):
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


edges = {}
for directory, _, files in os.walk(src):
    for name in sorted(files):
        if not name.endswith(".rs"):
            continue
        path = os.path.join(directory, name)
        rel = os.path.relpath(path, root)
        module = top(path)
        text = open(path, encoding="utf-8").read()
        code = strip_comments(code_part(text))
        if module not in ("main", "lib"):
            if module not in RANK:
                problems.append(f"{rel}: module `{module}` has no floor in tests/layers.py")
            refs = crate_refs(text) - {module}
            edges.setdefault(module, set()).update(refs)
            for ref in sorted(refs):
                if ref in RANK and module in RANK and RANK[ref] > RANK[module]:
                    problems.append(f"{rel}: `{module}` imports `{ref}`, which sits above it")
            if module == "core":
                for word in CORE_BANNED:
                    if re.search(r"\b" + re.escape(word) + r"\b", code):
                        problems.append(f"{rel}: core/ names `{word}` (core does no I/O)")
        if name != "tests.rs":
            lines = code_part(text).count("\n")
            if lines > MAX_LINES:
                problems.append(f"{rel}: {lines} lines before #[cfg(test)] (at most {MAX_LINES})")
            for number, line in enumerate(code_part(text).split("\n"), 1):
                stripped = line.strip()
                if stripped.startswith("//"):
                    continue
                if rel != os.path.join("src", "main.rs") and re.search(r"\.(unwrap|expect)\(", stripped):
                    problems.append(f"{rel}:{number}: unwrap/expect outside tests")
                if not rel.startswith(os.path.join("src", "config")) and re.search(
                    r"->\s*Result<.*,\s*String>", stripped
                ):
                    problems.append(f"{rel}:{number}: a String error")

# Same-floor modules must not reach each other both ways.
for a, targets in edges.items():
    for b in targets:
        if b != a and a in edges.get(b, ()) and a < b:
            problems.append(f"`{a}` and `{b}` import each other")

for problem in problems:
    print(f"layers.py: {problem}")
if problems:
    sys.exit(1)
print("layers.py: ok (no upward edge, no cycle, core pure, files under 500 lines)")
