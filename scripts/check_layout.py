#!/usr/bin/env python3
"""Checks the code layout rules of ARCHITECTURE.md; exits 1 naming every breach.

1. No .rs file over 600 lines under src/, crates/*/src or examples/.
2. Every adapter crate has the template's files.
3. No two files of one crate import each other, directly or around a circle
   (`use crate::a::…`, `use super::…`, `crate::a::x` paths; file-level graph).
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 600
ADAPTERS = ["longshore-rabbitmq", "longshore-kafka", "longshore-nats", "longshore-postgres",
            "longshore-sqlite"]
TEMPLATE = ["lib.rs", "config.rs", "client.rs", "broker.rs", "publisher.rs", "acker.rs",
            "mapping.rs", "health.rs", "error.rs"]

problems = []


def rust_files(top):
    for d, _, files in os.walk(top):
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def check_lengths():
    tops = [os.path.join(ROOT, "src"), os.path.join(ROOT, "examples")]
    crates = os.path.join(ROOT, "crates")
    tops += [os.path.join(crates, c, "src") for c in sorted(os.listdir(crates))]
    for top in tops:
        for path in rust_files(top):
            with open(path, encoding="utf-8") as fh:
                n = sum(1 for _ in fh)
            if n > MAX_LINES:
                problems.append(f"{os.path.relpath(path, ROOT)}: {n} lines (most {MAX_LINES})")


def check_template():
    for crate in ADAPTERS:
        src = os.path.join(ROOT, "crates", crate, "src")
        for f in TEMPLATE:
            if not os.path.exists(os.path.join(src, f)):
                problems.append(f"crates/{crate}/src/{f}: missing (adapter template)")
        if not (os.path.exists(os.path.join(src, "subscriber.rs"))
                or os.path.exists(os.path.join(src, "subscriber", "mod.rs"))):
            problems.append(f"crates/{crate}/src/subscriber.rs: missing (adapter template)")


def module_of(src, path):
    """The module path of a file: ['memory', 'broker'] for src/memory/broker.rs."""
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return tuple(rel)


USE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def check_cycles(src):
    files = {module_of(src, p): p for p in rust_files(src)}
    edges = {m: set() for m in files}
    for mod, path in files.items():
        is_mod_file = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        # Tests may reach anywhere; only the code's own structure counts.
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        # Doc links and comments are not imports.
        text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        for m in USE.finditer(text):
            parts = m.group(2).split("::")[1:]
            if m.group(1) == "crate":
                base = ()
            else:
                base = mod if is_mod_file else mod[:-1]
                base = base[:-1]
            # `use super::{a, b}` groups: take the longest existing module prefix.
            target = None
            for i in range(len(parts), 0, -1):
                cand = base + tuple(parts[:i])
                if cand in files:
                    target = cand
                    break
            if target is None or target == mod or target == ():
                continue
            # A parent module file (mod.rs) naming its children is not an import.
            if target[: len(mod)] == mod and is_mod_file:
                continue
            edges[mod].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    for comp in out:
        names = sorted("::".join(c) or "lib" for c in comp)
        problems.append(f"{os.path.relpath(src, ROOT)}: import circle between {', '.join(names)}")


def main():
    check_lengths()
    check_template()
    crates = os.path.join(ROOT, "crates")
    check_cycles(os.path.join(ROOT, "src"))
    for c in sorted(os.listdir(crates)):
        check_cycles(os.path.join(crates, c, "src"))
    for p in problems:
        print(p)
    if problems:
        print(f"layout: {len(problems)} problem(s)")
        return 1
    print("layout: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
