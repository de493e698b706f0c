"""The package layout keeps its promises: no import cycles, imports flow one way, every
subpackage says what it owns, and the public API exposes what ``__all__`` lists.

The import graph is built from the source with :mod:`ast` (nothing is imported), from
module-level AND function-level imports, absolute (``neurorit_lens.x.y``) and relative;
``from pkg import submodule`` counts as an import of the submodule.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "neurorit_lens"
PKG = "neurorit_lens"

# Cycles tolerated, each with its reason; none is (test_no_import_cycles_at_all checks it).
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve_relative(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports_of(mod: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``mod`` imports anywhere in its source (module or function level)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PKG)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(mod, path.name == "__init__.py", node.level, node.module)
            elif node.module and node.module.split(".")[0] == PKG:
                base = node.module
            else:
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & known
            out.update(subs)
            if len(subs) < len(node.names):  # at least one plain name from `base` itself
                out.add(base)
    # an import of a.b.c that is not a module (e.g. an attribute) falls back to its package
    resolved = set()
    for name in out:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name != mod:
            resolved.add(name)
    return resolved


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports_of(m, p, known) for m, p in mods.items()}


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components with more than one module are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    return comps


def _cycle_path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One concrete cycle inside a strongly connected component, for the error message."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def _describe(graph, comps) -> str:
    return "\n".join(" -> ".join(_cycle_path(graph, c)) + f"   (component: {', '.join(c)})" for c in comps)


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from neurorit_lens.data import schema\n    from . import b\n")
    got = _imports_of("neurorit_lens.x.a", tmp_path / "a.py",
                      {"neurorit_lens.data", "neurorit_lens.data.schema", "neurorit_lens.x", "neurorit_lens.x.b"})
    assert got == {"neurorit_lens.data.schema", "neurorit_lens.x.b"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _cycle_path(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and "neurorit_lens.data.schema" in graph["neurorit_lens.data"]
    comps = _strongly_connected(graph)
    unexpected = [c for c in comps if frozenset(c) not in KNOWN_CYCLES]
    assert not unexpected, "import cycles:\n" + _describe(graph, unexpected)


def test_no_import_cycles_at_all():
    graph = import_graph()
    comps = _strongly_connected(graph)
    assert not comps, "import cycles:\n" + _describe(graph, comps)


def _subpackage(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


# The pipeline's stages in the order data flows (docs/contributing.md: data -> prompts/tokens -> model +
# hooks -> scores -> neuron sets -> training -> ablation -> evaluation -> experiments -> report).
# A module may import modules of its own stage and of earlier ranks, never of a later rank; stages that
# share a rank are parallel and do not import each other. Ablation comes after training: its gate
# mode learns gates with the trainer.
STAGES: tuple[tuple[str, ...], ...] = (
    ("base",), ("data",), ("models",), ("neurons",), ("distributed",), ("training",), ("ablation",),
    ("evaluation",), ("experiments",), ("viz",), ("runner",), ("cli",),
)
# Modules whose stage is not their subpackage, each with its reason (every other module's
# stage is its subpackage). The root ``__init__`` (the public API) imports every stage.
STAGE_OF: dict[str, tuple[str, str]] = {
    "io": ("base", "atomic JSON/text writes and provenance; imports nothing of the package"),
    "config": ("base", "every stage's config dataclass; imports only io"),
    "statistics": ("base", "the one bootstrap and the comparison tests; numeric, imports nothing"),
    "memory": ("base", "the peak resident memory of a stretch of work; imports nothing of the package"),
    "stages": ("base", "the stage-folder record and skip rule the runner and the comparison share; imports io"),
    "tl_backend": ("base", "the TransformerLens import shim; imports nothing of the package"),
    "precision": ("base", "bf16 autocast around forward passes, which every stage runs; imports only config"),
    "hooks": ("base", "hook factories every stage attaches; imports config, tl_backend, neuron_sets"),
    "objective": ("base", "tokenisation and the teacher-forced loss; imports config, hooks, tl_backend"),
    "registry": ("base", "the generic name -> implementation table of the registered choices; imports nothing"),
    "neuron_sets": ("base", "the NeuronSet type and the neurons.json format, which hooks take and the "
                            "saved-model folder records; imports only io"),
    "__main__": ("cli", "``python -m neurorit_lens`` runs cli.main"),
}


def _stage(mod: str) -> str:
    rel = mod.removeprefix(PKG + ".")
    for key, (stage, _) in STAGE_OF.items():
        if rel == key or rel.startswith(key + "."):
            return stage
    return _subpackage(mod)


def _rank(stage: str) -> int:
    ranks = [i for i, group in enumerate(STAGES) if stage in group]
    if not ranks:
        raise AssertionError(f"stage {stage!r} is in no rank of STAGES: place it there or in STAGE_OF")
    return ranks[0]


def _backward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a later rank's module, or of a parallel stage's (root ``__init__`` exempt)."""
    bad = []
    for m, deps in sorted(graph.items()):
        if m == PKG:
            continue
        sm = _stage(m)
        for t in sorted(deps):
            st = _stage(t)
            if st != sm and _rank(st) >= _rank(sm):
                bad.append(f"{m} ({sm}) imports {t} ({st})")
    return bad


def test_stage_rule_flags_backward_and_parallel_imports():
    graph = {f"{PKG}.ablation.a": {f"{PKG}.evaluation.e", f"{PKG}.training.t", f"{PKG}.io", f"{PKG}.data.d"},
             f"{PKG}.training.t": {f"{PKG}.ablation.a"},
             f"{PKG}.neuron_sets": {f"{PKG}.neurons.mining"}, f"{PKG}.hooks": {f"{PKG}.neuron_sets"},
             PKG: {f"{PKG}.cli.main"}}
    assert _backward_imports(graph) == [
        f"{PKG}.ablation.a (ablation) imports {PKG}.evaluation.e (evaluation)",
        f"{PKG}.neuron_sets (base) imports {PKG}.neurons.mining (neurons)",
        f"{PKG}.training.t (training) imports {PKG}.ablation.a (ablation)",
    ]


def test_layers_point_one_way():
    graph = import_graph()
    assert all(_rank(_stage(m)) >= 0 for m in graph if m != PKG)  # every module has a stage
    bad = _backward_imports(graph)
    order = " < ".join(" / ".join(group) for group in STAGES)
    assert not bad, f"imports must point down the chain {order}:\n" + "\n".join(bad)
    missing = [k for k in STAGE_OF if f"{PKG}.{k}" not in graph]
    assert not missing, f"STAGE_OF places modules that do not exist: {missing}"


def test_every_subpackage_has_a_docstring():
    for init in sorted(ROOT.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 5, f"{init.relative_to(ROOT.parent)} needs a docstring saying what it owns"


def test_public_api_exposes_all():
    import neurorit_lens as nrl

    assert nrl.__all__ and len(set(nrl.__all__)) == len(nrl.__all__)
    missing = [name for name in nrl.__all__ if not hasattr(nrl, name)]
    assert not missing, f"neurorit_lens.__all__ names what it does not expose: {missing}"


def test_ci_fails_a_real_data_skip_when_the_data_is_there(tmp_path):
    """conftest turns the skip of a ``real_data`` test into a failure under CI when the
    shared data folder exists (here an empty stand-in, so every file is "not available")."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CI": "1", "NEURORIT_SHARED_DATA": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/unit/test_data.py", "-k", "real_files"],
                          cwd=ROOT.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "3 failed" in proc.stdout and "real-data test skipped although" in proc.stdout
