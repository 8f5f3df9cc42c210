"""Every command in the ```bash blocks of README.md and docs/*.md runs as written.

Each command line (backslash continuations joined, `# comments` stripped) is checked without running it:

- ``python train.py|predict.py|blend.py|preprocess.py [-m] <overrides>`` (also ``.venv/bin/python``, after
  ``VAR=value`` prefixes or an ``srun ...`` wrapper): the overrides compose against conf/ with Hydra's
  compose API and the config resolves (``-m``: each comma list at its first value, and every value of a
  group's list is an option of that group). ``--cfg``,
  ``--resolve`` and ``hydra/launcher=...`` are checked by the same composition; ``--config-path
  <dir> --config-name <name>`` (blend.py's rebuild) must name the folder and file that blend.py writes.
- ``python -m fstag.<module> ...``: the module's ``--help`` runs, and lists every ``--option`` used.
- ``make <target>``: the Makefile has the target.
- ``mlflow ui|server|models serve|models predict ...``: .venv/bin/mlflow exists and its CLI defines every
  ``--option`` used (servers are not started).
- ``export NAME=value`` and ``. .venv/bin/activate``: shell builtins (the exports of a block apply to the
  commands after them in that block).
- anything else fails, saying how to support it, so no unchecked command gets into the docs.

Placeholders (``<run id>``, ``<name>``, ``<time>``) are replaced by valid dummies (:data:`PLACEHOLDERS`);
data folders such as ``/data/FSDKaggle2018`` need not exist, since composing never reads the data (a job's
variant hashes the train.csv when there is one, else the path). An unquoted ``[`` is an error: bash would
glob it, and optional parts (``[-m]``) belong in prose. Also checked: every relative link of the pages
resolves (anchors included), every path of the repository they name exists, README links every page,
and every page opens with the line saying what task it serves.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)
from fstag.core.config import CONFIG_DIR

# fstag.runs.resolvers silences Hydra's notice about fstag's launcher configs; pytest resets warning filters.
pytestmark = pytest.mark.filterwarnings("ignore:\\s*'hydra/launcher/:UserWarning")

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = ROOT / ".venv" / "bin"

# Entry point -> the config it composes (the config_name of its @hydra.main).
ENTRY_POINTS = {"train.py": "train", "predict.py": "predict", "blend.py": "ensemble", "preprocess.py": "preprocess"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
WRAPPERS = {"srun"}  # cluster wrappers: their own options are skipped, the wrapped command is checked
BUILTINS = {"export", ".", "source"}
# Placeholders the pages use, and the dummies that stand in for them.
PLACEHOLDERS = {
    "<run id>": "0123456789abcdef0123456789abcdef",
    "<id>": "0123456789abcdef0123456789abcdef",
    "<name>": "demo",
    "<time>": "2026-01-01_00-00-00",
}
# Commands of pages this test may not edit (docs/benchmarks.md keeps its content) that do not run as
# written: (page, command) -> why. Each must keep failing (strict xfail); fix the page, then drop the entry.
KNOWN_UNRUNNABLE: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Command:
    page: str   # relative to the project root
    line: int   # first line of the command in the page
    text: str   # backslash continuations joined, comment stripped
    block: int  # index of its bash block in the page

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


# extraction ------------------------------------------------------------------------------------------
def strip_comment(line: str) -> str:
    """The line without its `# comment` (a # that starts a word outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each fenced ```bash block."""
    blocks, current, start = [], None, 0
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if current is None and re.fullmatch(r"```(bash|sh|shell|console)\s*", s):
            current, start = [], n + 1
        elif current is not None and s.startswith("```"):
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def page_commands(page: Path) -> list[Command]:
    rel = page.relative_to(ROOT).as_posix()
    out = []
    for b, (start, lines) in enumerate(bash_blocks(page.read_text())):
        pending, first = "", None
        for n, raw in enumerate(lines, start):
            line = strip_comment(raw)
            if first is None:
                first = n
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            text = (pending + line.strip()).strip()
            if text:
                out.append(Command(rel, first, text, b))
            pending, first = "", None
    return out


ALL_COMMANDS = [c for page in PAGES for c in page_commands(page)]


# checking ------------------------------------------------------------------------------------------
class DocCommandError(AssertionError):
    pass


def fail(cmd: str, why: str):
    raise DocCommandError(f"{cmd!r}: {why}")


def substitute(cmd: str) -> str:
    for k, v in PLACEHOLDERS.items():
        cmd = cmd.replace(k, v)
    left = re.findall(r"<[^<>\s][^<>]*>", cmd)
    if left:
        fail(cmd, f"unknown placeholder(s) {left}: write a real value or add it to PLACEHOLDERS in {__name__}")
    return cmd


def check_shell_syntax(cmd: str) -> None:
    """One simple command: no unquoted pipes, lists, redirections, substitutions or globs."""
    quote = None
    for i, ch in enumerate(cmd):
        if quote:
            if ch == quote:
                quote = None
            elif quote == '"' and cmd.startswith("$(", i):
                fail(cmd, "command substitution is not checked")
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "[":
            fail(cmd, "unquoted `[`: bash globs it; quote the list (\"key=[a,b]\"), and write optional parts "
                      "([-m], [key=value]) in prose or as separate commands")
        elif ch in "|;&<>`" or cmd.startswith("$(", i):
            fail(cmd, f"unquoted {ch!r}: one simple command per line (pipes, lists, redirections and "
                      "substitutions are not checked); quote it if it is part of a value")
        elif ch in "*?":
            fail(cmd, f"unquoted {ch!r}: bash globs it; quote it")
    if quote:
        fail(cmd, "unterminated quote")


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([A-Za-z0-9_.\- ]+):(?!=)", text, re.M) for t in line.split()}


def long_options(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def check_python_module(cmd: str, module: str, args: list[str]) -> None:
    if not module.startswith("fstag."):
        fail(cmd, f"`python -m {module}` is not checked: only fstag modules are (their --help runs); "
                  "teach check_python in tests/test_docs_commands.py how to check it")
    if importlib.util.find_spec(module) is None:
        fail(cmd, f"no module {module}")
    res = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        fail(cmd, f"`python -m {module} --help` exited {res.returncode}: {res.stderr[-2000:]}")
    for opt in long_options(args):
        if opt not in res.stdout:
            fail(cmd, f"{module} --help does not list {opt}")


def blend_config_name() -> str:
    """fstag.ensemble.job.CONFIG_NAME, read from the source (importing the job pulls in torch)."""
    tree = ast.parse((ROOT / "fstag" / "ensemble" / "job.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CONFIG_NAME" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("fstag/ensemble/job.py has no CONFIG_NAME")


def compose_and_resolve(config_name: str, overrides: list[str], tmp_path: Path):
    cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):  # what a running job sets: its output folder and number
        cfg.hydra.runtime.output_dir = str(tmp_path / "output")
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    try:
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation, the job's variant and paths included
    finally:  # not left behind for the next test on this worker (a job's variant reads the running job's overrides)
        HydraConfig.instance().cfg = None
    return cfg


def sweep_overrides(cmd: str, overrides: list[str]) -> list[str]:
    """The overrides of one job of a ``-m`` sweep: each comma list at its first value. Every other value of a
    config group's list must be an option of that group; values of a plain key are parsed (Hydra's
    grammar) but not composed one by one: a plain YAML key takes any value."""
    loader = GlobalHydra.instance().config_loader()
    out = []
    for text, ov in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if not ov.is_sweep_override():
            out.append(text)
            continue
        values = list(ov.sweep_string_iterator())
        options = loader.get_group_options(ov.key_or_group)
        bad = [v for v in values if options and v not in options]
        if bad:
            fail(cmd, f"{ov.key_or_group}={','.join(bad)}: not an option of the group {ov.key_or_group} ({options})")
        out.append(f"{ov.get_key_element()}={values[0]}")
    return out


def check_entry_point(cmd: str, script: str, args: list[str], tmp_path: Path) -> None:
    config_name = ENTRY_POINTS[script]
    multirun, overrides, config_path, cfg_name = False, [], None, None
    it = iter(args)
    for a in it:
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in ("--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c"):
            value = next(it, None)
            if value is None:
                fail(cmd, f"{a} without a value")
            if a in ("--config-path", "-cp"):
                config_path = value
            elif a in ("--config-name", "-cn"):
                cfg_name = value
            elif value not in ("job", "hydra", "all"):
                fail(cmd, f"--cfg {value}: Hydra takes job, hydra or all")
        elif a == "--resolve":
            pass
        elif a.startswith("-"):
            fail(cmd, f"{a}: not a Hydra flag this test knows (-m, --cfg, --resolve, --config-path, --config-name)")
        else:
            overrides.append(a)
    if config_path is not None or cfg_name is not None:
        # A rebuild from a saved config: only blend.py saves one (tests/test_blend.py rebuilds for real).
        if script != "blend.py" or config_path is None or cfg_name is None:
            fail(cmd, "--config-path/--config-name are checked for blend.py's rebuild only "
                      "(python blend.py --config-path outputs/blend/<name>/<time> --config-name config)")
        if f"{cfg_name}.yaml" != blend_config_name():
            fail(cmd, f"blend.py saves {blend_config_name()}, not {cfg_name}.yaml")
        run_dir = OmegaConf.to_container(compose(config_name, return_hydra_config=True).hydra.run)["dir"]
        pattern = re.sub(r"\\\$\\\{[^}]*\\\}", "[^/]+", re.escape(run_dir.replace("${paths.root_dir}/", "")))
        if not re.fullmatch(pattern, config_path.rstrip("/")):
            fail(cmd, f"--config-path {config_path} is not a blend output folder ({run_dir})")
        if overrides:
            fail(cmd, "overrides on a rebuild are not checked")
        return
    if multirun:
        overrides = sweep_overrides(cmd, overrides)
    try:
        compose_and_resolve(config_name, overrides, tmp_path)
    except Exception as exc:  # Hydra's composition and OmegaConf's resolution errors
        fail(cmd, f"{script} ({config_name}) does not compose with {overrides}: {type(exc).__name__}: {exc}")


def mlflow_cli_source() -> str:
    spec = importlib.util.find_spec("mlflow")
    base = Path(spec.origin).parent
    return (base / "cli" / "__init__.py").read_text() + (base / "utils" / "cli_args.py").read_text()


def check_mlflow(cmd: str, exe: str, args: list[str]) -> None:
    if not (VENV_BIN / "mlflow").is_file():
        fail(cmd, ".venv/bin/mlflow is missing (make setup installs it)")
    if exe not in ("mlflow", ".venv/bin/mlflow"):
        fail(cmd, f"{exe}: write mlflow or .venv/bin/mlflow")
    models = args[:2] in (["models", "serve"], ["models", "predict"])  # docs/serving.md
    if not args or (args[0] not in ("ui", "server") and not models):
        fail(cmd, "only `mlflow ui`, `mlflow server` and `mlflow models serve|predict` are checked; teach check_mlflow about others")
    source = mlflow_cli_source() + ((Path(importlib.util.find_spec("mlflow").origin).parent / "models" / "cli.py").read_text()
                                    if models else "")
    for opt in long_options(args[2 if models else 1:]):
        if f'"{opt}"' not in source:
            fail(cmd, f"mlflow {args[0]} has no option {opt}")


def check_command(cmd: str, tmp_path: Path, env: dict[str, str]) -> None:
    """Raise DocCommandError unless ``cmd`` runs as written (see the module docstring)."""
    text = substitute(cmd)
    check_shell_syntax(text)
    words = shlex.split(text)
    local_env = dict(env)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value prefixes
        k, v = words.pop(0).split("=", 1)
        local_env[k] = v
    if not words:
        fail(cmd, "no command")
    expand = {**os.environ, "PWD": str(ROOT), **local_env}
    words = [re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: expand.get(m.group(1), m.group(0)), w)
             for w in words]
    exe = words[0]
    if exe in WRAPPERS:
        rest = words[1:]
        while rest and rest[0] not in PYTHONS:
            rest.pop(0)
        if not rest:
            fail(cmd, f"{exe} wraps no python command")
        words = rest
        exe = words[0]
    if exe in BUILTINS:
        if exe == "export":
            for a in words[1:]:
                m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", a)
                if not m:
                    fail(cmd, f"export {a}: write NAME=value")
                env[m.group(1)] = m.group(2)  # applies to the rest of the block
        elif len(words) != 2 or not (ROOT / words[1]).is_file():
            fail(cmd, f"{exe} needs one existing file (relative to the project root)")
        return
    if exe == "make":
        missing = [t for t in words[1:] if "=" not in t and t not in makefile_targets()]
        if len(words) < 2 or missing:
            fail(cmd, f"the Makefile has no target {missing or '(none given)'}")
        return
    if exe in ("mlflow", ".venv/bin/mlflow"):
        check_mlflow(cmd, exe, words[1:])
        return
    if exe in PYTHONS:
        args = words[1:]
        if args[:1] == ["-m"] and len(args) > 1:
            check_python_module(cmd, args[1], args[2:])
            return
        if args and args[0] in ENTRY_POINTS:
            old = {k: os.environ.get(k) for k in local_env}
            os.environ.update(local_env)
            try:
                check_entry_point(cmd, args[0], args[1:], tmp_path)
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            return
        fail(cmd, f"python {' '.join(args[:1])}: only the entry points {sorted(ENTRY_POINTS)} and "
                  "`python -m fstag.<module>` are checked; teach check_command how to check this one")
    fail(cmd, f"`{exe}` is not a command this test can check; add a branch to check_command in "
              "tests/test_docs_commands.py (or write the command in prose)")


# fixtures and tests --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hydra_conf():
    """One Hydra initialisation on conf/ for the whole module (cleared afterwards)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


@pytest.fixture
def project_env(monkeypatch, tmp_path):
    """The commands run in the project root; their outputs would go to a scratch FSTAG_ROOT."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FSTAG_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # ${fstag.n_jobs:} (hydra/launcher=joblib) counts GPUs through torch: a 5 s import for a number that
    # tests/test_cluster.py checks; here the launcher's config only has to compose and resolve.
    monkeypatch.setattr("fstag.runs.launchers.visible_gpus", lambda: [])
    return tmp_path


def block_env(command: Command) -> dict[str, str]:
    """The exports of the lines before ``command`` in its block."""
    env: dict[str, str] = {}
    for c in ALL_COMMANDS:
        if c.page == command.page and c.block == command.block and c.line < command.line:
            m = re.fullmatch(r"export\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)", c.text)
            if m:
                env[m.group(1)] = m.group(2)
    return env


def _params():
    for c in ALL_COMMANDS:
        why = KNOWN_UNRUNNABLE.get((c.page, c.text))
        marks = [pytest.mark.xfail(reason=why, strict=True, raises=DocCommandError)] if why else []
        yield pytest.param(c, id=c.id, marks=marks)


def test_the_pages_have_commands():
    assert len(ALL_COMMANDS) > 40, [c.id for c in ALL_COMMANDS]
    assert {c.page for c in ALL_COMMANDS} >= {"README.md", "docs/recipes.md", "docs/clusters.md"}
    for page, text in KNOWN_UNRUNNABLE:
        assert any(c.page == page and c.text == text for c in ALL_COMMANDS), f"stale KNOWN_UNRUNNABLE entry {text!r}"


@pytest.mark.parametrize("command", list(_params()))
def test_command_runs_as_written(command: Command, hydra_conf, project_env):
    check_command(command.text, project_env, block_env(command))


@pytest.mark.parametrize("bad, why", [
    ("python train.py optimizer.lrr=1e-3", "does not compose"),              # a misspelled key
    ("python train.py -m arch=resnet50,resnet5O fold=0", "not an option of the group arch"),  # in a sweep
    ("python train.py -m fold=0,1 optimizer.lrr=1e-3,1e-2", "does not compose"),
    ("python train.py arch=resnet50,resnet18 fold=0", "does not compose"),     # a sweep without -m
    ("python train.py [-m] arch=resnet50", "unquoted `[`"),                  # optional notation
    ("python blend.py blend.calibration=prior|temperature", "unquoted '|'"),
    ("python predict.py \"runs=[<mlflow run>]\"", "unknown placeholder"),
    ("python blend.py --config-path outputs/predict/<time> --config-name config", "not a blend output folder"),
    ("python -m fstag.no_such_module --help", "no module"),
    ("python -m fstag.demo_job --no-such-option", "does not list"),
    ("make no_such_target", "no target"),
    (".venv/bin/mlflow ui --no-such-option 1", "no option"),
    ("rm -rf multirun", "not a command this test can check"),
    ("python bench/accuracy.py", "only the entry points"),
])
def test_the_checker_rejects_broken_commands(bad, why, hydra_conf, project_env):
    with pytest.raises(DocCommandError, match=re.escape(why)):
        check_command(bad, project_env, {})


# links, paths, page openings ---------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_and_paths_resolve(page: Path):
    text = page.read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.is_file(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in anchors(dest), f"{page.name}: link to {target}: no such heading in {dest.name}"
    for path in set(re.findall(r"(?<![\w./<-])((?:conf|fstag|tests|bench|docs)/[\w./-]*[\w/])", prose)):
        assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"


def test_readme_links_every_page_and_each_page_says_its_task():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        rel = page.relative_to(ROOT).as_posix()
        assert f"]({rel})" in readme, f"README.md does not link {rel}"
        if page.name == "benchmarks.md":
            continue  # kept as it is
        lines = [ln for ln in page.read_text().splitlines() if ln.strip()]
        assert lines[0].startswith("# ") and lines[1].startswith("Use this page to"), \
            f"{rel}: start with a title, then one line saying what task the page serves"
