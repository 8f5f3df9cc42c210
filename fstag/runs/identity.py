"""A training job's identity: its variant (the readable part of its directory) and its config digest.

A job lives at ``<runs_dir>/<exp>/<arch>/<aug>/<variant>/fold_<k><stage suffix>`` (``_r``: retrain_val,
``_st``: self_train):

- ``arch``, ``aug``, ``fold`` and ``stage`` are spelled by the path itself;
- ``<variant>`` spells every other override that changes the result, sorted, as Hydra's
  ``override_dirname`` does (``mixup.alpha=1,optimizer.lr=0.05``), or ``default`` when there is none.
  Left out: the group keys above, the context (``exp``; ``experiment`` (the preset of the ``exp``
  folder); the ``data`` group, which picks ``exp``'s default), bookkeeping keys (:data:`BOOKKEEPING`)
  and the data's location (:data:`DATA_LOCATION`). A job that points ``data.root`` elsewhere gets a
  ``data@<8 hex>`` item: the digest of that folder's train.csv, so the same data spelled another way is
  the same job, and other data is another job. A stage=train job also leaves out ``retrain.*`` (those keys
  only shape its retrain_val child), which is how a retrain_val job finds its parent; train and
  retrain_val jobs leave out ``self_train.*``, a self_train job ``retrain.*`` (:data:`STAGE_ONLY`). A variant longer
  than :data:`MAX_VARIANT` characters, or with characters unfit for a folder name, becomes
  ``v-<10 hex>`` with the overrides saved beside it (``<variant>/variant.json``).
- the job's *identity* is its whole resolved config less bookkeeping and data location, plus the
  train.csv digest and the feature key (a self_train job's: also the digests of its unlabelled folder and
  of its teachers, see :func:`identity`). It is saved in the job directory (``identity.json``); reusing a
  directory whose saved identity differs is an error naming the keys (:class:`JobConfigMismatch`).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fstag.core.io import sha256_file

IDENTITY_JSON = "identity.json"
VARIANT_JSON = "variant.json"
DEFAULT_VARIANT = "default"
MAX_VARIANT = 128
# Spelled by the job's path (arch/aug/fold_k[_r]) rather than its variant: the group choices and the
# names the path shows. Other keys inside those groups (arch.input_norm, aug.recording.*) are variant items.
GROUP_KEYS = ("arch", "aug", "fold", "stage")
PATH_KEYS = GROUP_KEYS + ("arch.name", "aug.name", "stage.name", "stage.suffix")
# The context a job runs in: the experiment folder, its preset, its data set (exp defaults to data.name).
CONTEXT_KEYS = ("exp", "experiment", "data")
# Keys that change where or how a job runs, not what it computes.
BOOKKEEPING = (
    "resume", "force", "loader.num_workers", "loader.pin_memory", "trainer.enable_progress_bar", "mlflow", "paths",
    "job_dir", "variant", "hydra", "optimized_metric", "predict.batch_size", "stage.parent", "logger",
    "callbacks.progress_bar", "callbacks.lr_monitor", "sweep_name", "launcher", "loader.resident",
    "cpu.channels_last", "checkpoint",
)
# Where the data is (its content counts through the train.csv digest and the feature key).
DATA_LOCATION = ("data.root", "data.features_dir", "data.generate", "data.demo")
# Keys added to the config after jobs existed, with the value that reproduces what those jobs did: a saved
# identity without such a key matches a config that has this value (an upgrade of fstag keeps its jobs).
ADDED_KEYS = {
    "task.name": "single_label", "task.monitor": "val_acc1", "data.task": "single_label", "data.layout": "kaggle2018",
    "folds.method": "stratified", "loss.name": "auto", "loss.focal_gamma": 2.0, "predict.window_reduce": "mean",
    "retrain.lr_scale": 1.0,
}
# Keys that only matter to another stage: ``retrain.*`` shape a retrain_val job, ``self_train.*`` a
# self_train job; the other stages leave them out of their variant and identity.
SELF_TRAIN = "self_train"
STAGE_ONLY = {"train": ("retrain", SELF_TRAIN), "retrain_val": (SELF_TRAIN,), SELF_TRAIN: ("retrain",)}
_SAFE = re.compile(r"[A-Za-z0-9._=,+:@\[\]-]+")


class JobConfigMismatch(RuntimeError):
    """A job directory was made with another config; the message names the keys and the ways out."""


def _matches(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


@lru_cache(maxsize=4)
def _default_choices(config_dir: str) -> dict[str, str | None]:
    """The group choices of conf/train.yaml's defaults list (``{"data": "demo", "arch": ...}``)."""
    out: dict[str, str | None] = {}
    for item in OmegaConf.load(Path(config_dir) / "train.yaml").get("defaults", []):
        if isinstance(item, (dict, DictConfig)):
            for k, v in dict(item).items():
                out[str(k).split("@")[0].lstrip("/").removeprefix("override ")] = None if v is None else str(v)
    return out


def variant_items(overrides: list[str], stage: str = "train") -> list[str]:
    """The sorted ``key=value`` items of Hydra task overrides that make up a job's variant."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from fstag.core.config import CONFIG_DIR

    defaults = _default_choices(CONFIG_DIR)
    items = []
    for ov in OverridesParser.create().parse_overrides([str(o) for o in overrides]):
        key = ov.key_or_group
        if key in PATH_KEYS or _matches(key, CONTEXT_KEYS[:2] + BOOKKEEPING + DATA_LOCATION + STAGE_ONLY.get(stage, ())):
            continue
        if key.startswith("hydra/"):  # a Hydra group choice (hydra/launcher=joblib): how the sweep runs
            continue
        if key == "data":  # the data set picks exp (exp: ${data.name}); its content is in the identity
            continue
        value = "null" if ov.value() is None else ov.get_value_element_as_str()
        if key in defaults and value == str(defaults[key]) and not ov.is_delete():
            continue  # the default group choice, spelled out
        items.append(("~" if ov.is_delete() else "") + f"{key}={value}")
    return sorted(items)


def data_digest(data_root: str | Path | None, data: Any = None) -> str | None:
    """The digest of the data set's label files at ``data_root``, as its layout reads them (``data``: the
    ``data`` config naming ``data.layout``; the Kaggle layout by default): for the Kaggle layout exactly the
    sha256 of ``<data_root>/train.csv``. None when they are not there."""
    if not data_root:
        return None
    from fstag.data.layouts import DatasetError, open_layout

    try:
        layout = open_layout(data if data is not None else {}, root=data_root)
        return layout.digest() if layout.is_present() else None
    except (DatasetError, OSError):
        return None


def variant_name(items: list[str]) -> str:
    """``default``, the items joined by ``,``, or ``v-<10 hex>`` when too long or unfit for a folder."""
    if not items:
        return DEFAULT_VARIANT
    text = ",".join(items)
    if len(text) > MAX_VARIANT or not _SAFE.fullmatch(text) or text == DEFAULT_VARIANT:
        return "v-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return text


def task_overrides(root: Any = None) -> list[str]:
    """The job's Hydra task overrides: from the config's ``hydra`` node, else the running Hydra job."""
    if root is not None:
        found = OmegaConf.select(root, "hydra.overrides.task", default=None)
        if found is not None:
            return [str(o) for o in found]
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return [str(o) for o in HydraConfig.get().overrides.task]
    return []


def job_variant(overrides: list[str], stage: str, data_root: str | None, data: Any = None) -> tuple[str, list[str]]:
    """The variant of a job with these task overrides, and its items (a ``data@`` item included: the digest
    of the label files at ``data_root``, read by the layout of ``data``, the ``data`` config)."""
    items = variant_items(overrides, stage)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    if any(ov.key_or_group == "data.root" for ov in parsed):
        digest = data_digest(data_root, data) or hashlib.sha256(str(data_root).encode()).hexdigest()
        items = sorted(items + [f"data@{digest[:8]}"])
    return variant_name(items), items


def _variant_resolver(stage: str = "train", *, _root_) -> str:
    data_root = OmegaConf.select(_root_, "data.root", default=None)
    data = OmegaConf.select(_root_, "data", default=None)
    return job_variant(task_overrides(_root_), str(stage), None if data_root is None else str(data_root), data)[0]


def register_resolver() -> None:
    """``${fstag.variant:<stage>}``: the variant of the running job for that stage."""
    if not OmegaConf.has_resolver("fstag.variant"):
        OmegaConf.register_new_resolver("fstag.variant", _variant_resolver)


# identity ------------------------------------------------------------------------------------------
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def identity(cfg: DictConfig, teachers: list[str | Path] | None = None) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` that decides a job's results (see the module docstring).

    A stage=self_train job's identity also holds the content of its ``self_train.input`` folder
    (``self_train.input_sha256``: :func:`folder_digest`) and of its ``teachers``, the resolved run
    directories of ``self_train.teachers`` (``self_train.teachers_sha256``: :func:`teachers_digest`), so a
    changed recording or a retrained teacher is another job."""
    from fstag.core.config import to_plain
    from fstag.data.feature_config import FeatureConfig, feature_key

    plain = {k: v for k, v in to_plain(cfg).items() if k != "hydra"}
    stage = str(cfg.stage.name)
    drop = ("exp",) + BOOKKEEPING + DATA_LOCATION + STAGE_ONLY.get(stage, ())
    flat = {k: v for k, v in _flatten(plain).items() if not _matches(k, drop)}
    flat["data.train_csv_sha256"] = data_digest(cfg.data.root, cfg.data)
    if str(flat.get("fold")) == "given":  # fold=given is fold 0 (fstag.data.folds.fold_index)
        flat["fold"] = 0
    flat["features.key"] = feature_key(FeatureConfig.from_cfg(to_plain(cfg.features)))
    if stage == SELF_TRAIN:
        if teachers is None:
            raise ValueError("the identity of a stage=self_train job needs its teachers' run directories")
        st = cfg.self_train
        flat["self_train.input_sha256"] = folder_digest(Path(str(st.input)).expanduser(), list(st.extensions))
        flat["self_train.teachers_sha256"] = teachers_digest(teachers)
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def folder_digest(folder: str | Path, extensions: list[str]) -> str:
    """sha256 over the audio files below ``folder`` (those :func:`fstag.data.audio.list_audio_files` picks
    up): each one's path relative to the folder and its bytes. Other files are not read."""
    from fstag.data.audio import list_audio_files

    folder = Path(folder)
    h = hashlib.sha256()
    for p in list_audio_files(folder, extensions):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def run_digest(run_dir: str | Path) -> str:
    """What a trained run is, for a job that learns from its predictions: the digest of the identity its
    run.json records and the sha256 of its test.npz (which changes with its weights)."""
    from fstag.runs.run_dir import RUN_JSON, TEST_NPZ

    run_dir = Path(run_dir)
    info = json.loads((run_dir / RUN_JSON).read_text())
    test = run_dir / TEST_NPZ
    return f"{digest(info.get('identity') or {})}:{sha256_file(test) if test.is_file() else '-'}"


def teachers_digest(run_dirs: list[str | Path]) -> str:
    """sha256 over the :func:`run_digest` of each run (in any order: their predictions are combined by a
    geometric mean)."""
    return hashlib.sha256("\n".join(sorted(run_digest(d) for d in run_dirs)).encode()).hexdigest()


def digest(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# Modules of the flat layout (fstag <= 7636029) whose functions a config may name as ``_target_``, and where
# they live now: an identity saved by a job of that time names the old path, which is the same function.
MOVED_MODULES = {
    "fstag.schedules": "fstag.models.schedules", "fstag.batch_aug": "fstag.models.batch_aug",
    "fstag.augment": "fstag.models.augment", "fstag.models": "fstag.models.backbones",
    "fstag.label_noise": "fstag.models.label_noise", "fstag.tracking": "fstag.runs.tracking",
    "fstag.callbacks": "fstag.runs.hydra_callbacks",
}


def current_path(value: Any) -> Any:
    """``value`` with a moved module's dotted path (:data:`MOVED_MODULES`) spelled as it is now."""
    if isinstance(value, str) and value.startswith("fstag."):
        module, _, name = value.rpartition(".")
        if module in MOVED_MODULES:
            return f"{MOVED_MODULES[module]}.{name}"
    return value


def differing_keys(saved: dict[str, Any], current: dict[str, Any], ignore=()) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each dotted key whose value differs (or is only in one);
    a saved value naming a moved module's function (:func:`current_path`) is compared as it is named now, and
    a key added to fstag's config since (:data:`ADDED_KEYS`) matches when it has the value it had then."""
    missing = object()
    out = []
    for k in sorted(set(saved) | set(current)):
        if _matches(k, ignore):
            continue
        if k not in saved and k in ADDED_KEYS and current.get(k, missing) == ADDED_KEYS[k]:
            continue  # a key added since the job was made, at the value it had then
        a, b = current_path(saved.get(k, missing)), current_path(current.get(k, missing))
        if a != b:
            out.append((k, "<unset>" if a is missing else a, "<unset>" if b is missing else b))
    return out


def format_diff(diff: list[tuple[str, Any, Any]], limit: int = 12) -> str:
    parts = [f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:limit]]
    more = f" (and {len(diff) - limit} more)" if len(diff) > limit else ""
    return "; ".join(parts) + more


def read_saved(job_dir: str | Path) -> dict[str, Any] | None:
    p = Path(job_dir) / IDENTITY_JSON
    return json.loads(p.read_text()) if p.is_file() else None


def check_reuse(job_dir: Path, current: dict[str, Any]) -> None:
    """Raise :class:`JobConfigMismatch` if ``job_dir`` holds a job made with another identity."""
    saved = read_saved(job_dir)
    if saved is None:
        return
    diff = differing_keys(saved.get("identity", {}), current)
    if diff:
        raise JobConfigMismatch(
            f"{job_dir} holds a job made with another config; differing keys: {format_diff(diff)}. "
            "Reusing it would mix results: retrain it with force=true, or run under another exp=<name>"
        )


def write_identity(job_dir: Path, ident: dict[str, Any], variant: str, items: list[str]) -> None:
    from fstag.core.io import write_json_atomic

    write_json_atomic(Path(job_dir) / IDENTITY_JSON,
                      {"digest": digest(ident), "variant": variant, "overrides": items, "identity": ident})
    vfile = Path(job_dir).parent / VARIANT_JSON
    if not vfile.is_file():
        write_json_atomic(vfile, {"variant": variant, "overrides": items})
