"""Hydra composition of train.py's config: the seed's defaults, the sweep's job paths, the MLflow URI."""

from __future__ import annotations

import itertools
import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fstag.core.config import CONFIG_DIR


def _compose(overrides, monkeypatch, root, env_uri=None):
    monkeypatch.setenv("FSTAG_ROOT", str(root))
    if env_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def test_defaults_are_the_seeds(monkeypatch, tmp_path):
    cfg = _compose([], monkeypatch, tmp_path)
    assert cfg["arch"]["name"] == "resnext101_32x4d" and cfg["arch"]["pretrained"] is False
    assert cfg["loader"]["batch_size"] == 128 and cfg["loader"]["crop_frames"] == 150
    assert cfg["optimizer"] == {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.009, "momentum": 0.9,
                                "weight_decay": 5e-4, "nesterov": False}
    assert cfg["scheduler"] == {"_target_": "fstag.models.schedules.seed_schedule", "_partial_": True, "cosine_t_max": 50,
                                "step_milestones": [20, 30, 40], "step_gamma": 0.7, "interval": "epoch"}
    assert cfg["arch"]["input_norm"] == "bn" and cfg["loss"]["label_smoothing"] == 0.0 and cfg["noise"]["name"] == "none"
    assert not cfg["specaug"]["enabled"] and not cfg["mixstyle"]["enabled"] and cfg["loader"]["pad_value"] == 0.0
    assert cfg["trainer"]["max_epochs"] == 60 and cfg["callbacks"]["gradient_accumulation"]["scheduling"] == {5: 2, 25: 3}
    es = cfg["callbacks"]["early_stopping"]
    assert (es["monitor"], es["mode"], es["patience"], es["min_delta"]) == ("val_acc1", "max", 12, 0.01)
    assert cfg["mixup"] == {"enabled": True, "prob": 0.7, "alpha": 3.0}
    assert cfg["retrain"] == {"lr_scale": 1.0, "max_epochs": 10, "min_epochs": 2, "patience": 6}
    assert cfg["features"]["n_fft"] == 1764 and cfg["features"]["hop_length"] == 220
    assert cfg["predict"]["tta"] == 5 and cfg["folds"]["n_splits"] == 5


def test_the_design_card_sweep_gives_ten_distinct_job_dirs(monkeypatch, tmp_path):
    dirs = set()
    for arch, fold in itertools.product(["resnext101_32x4d", "resnet50"], range(5)):
        cfg = _compose([f"arch={arch}", f"fold={fold}", "data=fsdkaggle2018"], monkeypatch, tmp_path)
        assert cfg["job_dir"] == f"{tmp_path}/multirun/fsdkaggle2018/{arch}/none/default/fold_{fold}"
        dirs.add(cfg["job_dir"])
    assert len(dirs) == 10
    r = _compose(["arch=resnet50", "aug=specmask_concat", "fold=1", "stage=retrain_val"], monkeypatch, tmp_path)
    assert r["job_dir"].endswith("multirun/demo/resnet50/specmask_concat/default/fold_1_r")
    assert r["stage"]["parent"].endswith("multirun/demo/resnet50/specmask_concat/default/fold_1")
    assert r["aug"]["specmask_concat"] is True and r["aug"]["time_mask"] == 30 and r["aug"]["freq_mask"] == 15


def test_mlflow_uri_is_an_absolute_sqlite_file_unless_the_environment_says_otherwise(monkeypatch, tmp_path):
    cfg = _compose([], monkeypatch, tmp_path)
    assert cfg["mlflow"]["tracking_uri"] == f"sqlite:///{tmp_path}/mlflow.db"
    assert cfg["mlflow"]["tracking_uri"].startswith("sqlite:////")
    assert cfg["mlflow"]["artifact_location"] == f"{tmp_path}/mlartifacts"
    env = _compose([], monkeypatch, tmp_path, env_uri="http://127.0.0.1:5999")
    assert env["mlflow"]["tracking_uri"] == "http://127.0.0.1:5999"


def test_fold_is_a_plain_integer_key(monkeypatch, tmp_path):
    assert _compose(["fold=3"], monkeypatch, tmp_path)["fold"] == 3
    with pytest.raises(Exception):
        _compose(["arch=no_such_arch"], monkeypatch, tmp_path)


def _job_paths(overrides, monkeypatch, root):
    """job_dir, stage.parent and Hydra's run and sweep dirs as a real job resolves them (hydra node kept)."""
    monkeypatch.setenv("FSTAG_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    sweep = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}"
    return str(cfg.job_dir), str(cfg.stage.parent), str(cfg.hydra.run.dir), sweep


def test_the_variant_spells_the_overrides_that_change_the_result(monkeypatch, tmp_path):
    base = f"{tmp_path}/multirun/demo/cnn_small/none"
    job, _, run_dir, sweep_dir = _job_paths(["experiment=demo_seed", "fold=0"], monkeypatch, tmp_path)
    assert job == run_dir == sweep_dir == f"{base}/default/fold_0"
    # bookkeeping, context and the default group choice stay out; the rest is sorted, Hydra-style
    job, _, run_dir, sweep_dir = _job_paths(
        ["experiment=demo_seed", "fold=1", "mixup.alpha=1", "optimizer.lr=0.05", "resume=false", "loader.num_workers=0",
         "trainer.enable_progress_bar=false", "data=demo", "mlflow.experiment=x", "data.demo.n_train=9"],
        monkeypatch, tmp_path)
    assert job == run_dir == sweep_dir == f"{base}/mixup.alpha=1,optimizer.lr=0.05/fold_1"
    # a retrain_val job keeps its retrain.* keys; its parent is the train job without them
    job, parent, _, _ = _job_paths(["experiment=demo_seed", "stage=retrain_val", "optimizer.lr=0.05", "retrain.max_epochs=3"],
                                   monkeypatch, tmp_path)
    assert job == f"{base}/optimizer.lr=0.05,retrain.max_epochs=3/fold_0_r"
    assert parent == f"{base}/optimizer.lr=0.05/fold_0"
    # a long variant becomes a short hash (fstag.runs.identity saves the overrides beside it)
    long = [f"optimizer.lr=0.0{i}23456789012345" for i in range(1, 2)] + [
        "mixup.alpha=2.3456789012345", "mixup.prob=0.56789012345678", "loader.crop_frames=123", "data.unverified_weight=0.123456789"]
    job, _, _, _ = _job_paths(["experiment=demo_seed", *long], monkeypatch, tmp_path)
    assert re.fullmatch(rf"{re.escape(base)}/v-[0-9a-f]{{10}}/fold_0", job)


def test_a_new_data_root_is_a_new_variant_named_by_its_train_csv(monkeypatch, tmp_path):
    for name, rows in (("a", "fname,label,manually_verified\nx.wav,Bark,1\n"), ("b", "fname,label,manually_verified\ny.wav,Bark,1\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.csv").write_text(rows)
    (tmp_path / "same").symlink_to(tmp_path / "a")
    a = _job_paths(["experiment=demo_seed", f"data.root={tmp_path / 'a'}"], monkeypatch, tmp_path)[0]
    same = _job_paths(["experiment=demo_seed", f"data.root={tmp_path / 'same'}"], monkeypatch, tmp_path)[0]
    b = _job_paths(["experiment=demo_seed", f"data.root={tmp_path / 'b'}"], monkeypatch, tmp_path)[0]
    assert re.search(r"/cnn_small/none/data@[0-9a-f]{8}/fold_0$", a) and a == same != b


def test_keys_inside_the_path_groups_are_variant_items(monkeypatch, tmp_path):
    base = f"{tmp_path}/multirun/demo"
    # arch.name and the group choices are spelled by the path; other keys of those groups change the result
    job = _job_paths(["experiment=scratch", "arch=resnet50", "arch.name=resnet18", "fold=0"], monkeypatch, tmp_path)[0]
    assert job == f"{base}/resnet18/specmask_concat/default/fold_0"
    job = _job_paths(["experiment=scratch", "aug=robust", "arch=resnet50", "arch.name=resnet18", "arch.input_norm=bn",
                      "aug.recording.mel_shift=2"], monkeypatch, tmp_path)[0]
    assert job == f"{base}/resnet18/robust/arch.input_norm=bn,aug.recording.mel_shift=2/fold_0"


def test_a_launcher_choice_is_not_a_variant_item():
    """`hydra/launcher=joblib` says how a sweep runs, not what a job computes: the demo job computes its
    members' names from its command line, launcher included (fstag.demo_job)."""
    from fstag.runs.identity import job_variant

    assert job_variant(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.05"], "train", None) == (
        "optimizer.lr=0.05", ["optimizer.lr=0.05"])
