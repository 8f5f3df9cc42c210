"""The package layout's one rule (fstag/__init__.py): packages are ordered core < data < runs < evaluate <
models < infer < train < ensemble < serve; a module imports from its own package and packages to its left only
(imports inside functions count), and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fstag"
LAYERS = ("core", "data", "runs", "evaluate", "models", "infer", "train", "ensemble", "serve")


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """fstag modules that ``path`` imports anywhere in its code (a name imported from a package that is
    itself a module counts as that module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "fstag":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fstag")
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; fstag spells imports in full (from fstag.<package>...)")
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: {d for d in _imports(p, known) if d != m and d != "fstag"} for m, p in known.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, deps in graph.items():
        own = _package(module)
        for dep in deps:
            theirs = _package(dep)
            if own is None or theirs is None or theirs == own:
                continue
            if LAYERS.index(theirs) > LAYERS.index(own):
                bad.append(f"{module} imports {dep}: fstag.{own} may not import fstag.{theirs}")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if v not in graph:
                continue
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_every_module_lives_in_a_layer_package():
    loose = [m for m in _modules() if m not in ("fstag", "fstag.demo_job", "fstag.export") and _package(m) is None]
    assert not loose, f"modules outside the packages {LAYERS}: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == set(LAYERS)


def test_packages_import_only_packages_to_their_left():
    assert layer_violations(import_graph()) == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    graph = {"fstag.data.a": {"fstag.train.job"}, "fstag.train.job": {"fstag.data.a"}}
    assert layer_violations(graph) == ["fstag.data.a imports fstag.train.job: fstag.data may not import fstag.train"]
    assert cycles(graph) == [["fstag.data.a", "fstag.train.job", "fstag.data.a"]]


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_says_what_it_holds(package):
    """Each package's docstring names its modules and the packages it may import."""
    init = PACKAGE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    modules = sorted(p.stem if p.name != "__init__.py" else p.parent.name
                     for p in (PACKAGE / package).glob("*/__init__.py")) + sorted(
        p.stem for p in (PACKAGE / package).glob("*.py") if p.name != "__init__.py")
    unnamed = [m for m in modules if f".{m}`" not in doc]
    assert not unnamed, f"{init}: the docstring does not name {unnamed}"
    if package != "core":
        assert "May import" in doc, f"{init}: say which packages it may import"


def test_identities_saved_before_the_packages_still_match():
    """A job trained with the flat layout saved ``scheduler._target_: fstag.schedules.seed_schedule``: the same
    function, so rerunning it skips or resumes instead of refusing a 'changed' config; another function differs."""
    from fstag.runs.identity import differing_keys

    now = {"scheduler._target_": "fstag.models.schedules.seed_schedule", "optimizer.lr": 0.01}
    assert differing_keys({**now, "scheduler._target_": "fstag.schedules.seed_schedule"}, now) == []
    other = {**now, "scheduler._target_": "fstag.schedules.warmup_cosine_schedule"}
    assert [k for k, _, _ in differing_keys(other, now)] == ["scheduler._target_"]
