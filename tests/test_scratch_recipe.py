"""experiment=scratch through the real entry points: composition with any arch/aug, a tiny training job
whose checkpoint carries its input standardisation, label-noise pruning, predictions on a folder."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from fstag.data.band_stats import BAND_STATS_NPZ
from fstag.core.config import CONFIG_DIR
from tests.conftest import TINY_OVERRIDES


def _compose(overrides, monkeypatch, root):
    monkeypatch.setenv("FSTAG_ROOT", str(root))
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return OmegaConf.to_container(compose(config_name="train", overrides=overrides), resolve=True)


def test_scratch_composes_with_arch_aug_and_data(monkeypatch, tmp_path):
    cfg = _compose(["experiment=scratch", "arch=resnet50", "arch.name=resnet18", "data=fsdkaggle2018"], monkeypatch, tmp_path)
    assert cfg["arch"]["name"] == "resnet18" and cfg["arch"]["input_norm"] == "band_stats" and not cfg["arch"]["pretrained"]
    assert cfg["optimizer"]["_target_"] == "torch.optim.AdamW" and cfg["scheduler"]["_target_"] == "fstag.models.schedules.warmup_cosine_schedule"
    assert cfg["aug"]["name"] == "specmask_concat" and cfg["aug"]["specmask_concat"] and "recording" not in cfg["aug"]
    assert cfg["specaug"]["enabled"] and cfg["loss"]["label_smoothing"] == 0.1 and cfg["data"]["name"] == "fsdkaggle2018"
    assert cfg["noise"]["name"] == "prune"
    # an aug on the command line wins over the recipe's
    plain = _compose(["experiment=scratch", "aug=none"], monkeypatch, tmp_path)
    assert plain["aug"]["name"] == "none" and "recording" not in plain["aug"]
    robust = _compose(["experiment=scratch", "aug=robust"], monkeypatch, tmp_path)
    assert robust["aug"]["specmask_concat"] and robust["aug"]["recording"]["enabled"]
    # the seed's recipe is untouched without the experiment
    seed = _compose(["aug=robust"], monkeypatch, tmp_path)
    assert seed["optimizer"]["_target_"] == "torch.optim.SGD" and seed["arch"]["input_norm"] == "bn" and seed["aug"]["recording"]["enabled"]


@pytest.mark.slow
def test_scratch_job_carries_its_band_stats_and_predicts_a_folder(demo_project, tmp_path):
    p = demo_project
    p.run("train.py", "experiment=scratch", "arch=cnn_small", "aug=robust", "exp=scratch", "noise=prune", "noise.warmup_epochs=2",
          *TINY_OVERRIDES)
    jobs = sorted((p.root / "multirun" / "scratch").rglob("run.json"))
    assert len(jobs) == 1
    job = jobs[0].parent
    ckpt = torch.load(job / "checkpoints" / "best.ckpt", map_location="cpu")
    hp = ckpt["hyper_parameters"]
    assert hp["optimizer"]["_target_"] == "torch.optim.AdamW" and hp["recording"]["enabled"] and hp["noise"]["name"] == "prune"
    stats_file = next((p.root / "data" / "demo" / "features").rglob(BAND_STATS_NPZ))
    with np.load(stats_file) as z:
        np.testing.assert_allclose(np.array(hp["band_stats"]["mean"]), z["mean"], rtol=1e-6)
        np.testing.assert_allclose(ckpt["state_dict"]["model.band_std"][..., 0], np.maximum(z["std"], 1e-3), rtol=1e-6)
    client = MlflowClient(p.tracking_uri)
    run_id = (job / "mlflow_run_id").read_text().strip()
    dropped = [m.value for m in client.get_metric_history(run_id, "noise_dropped")]
    unverified = int((pd.read_csv(p.root / "data" / "demo" / "train.csv")["manually_verified"] == 0).sum())
    assert dropped == [0.0, pytest.approx(dropped[-1])] and 0 < dropped[-1] < unverified  # after warm-up only
    # a folder of new recordings: features computed from the audio, the standardisation from the checkpoint
    folder = tmp_path / "new_recordings"
    folder.mkdir()
    for f in sorted((p.root / "data" / "demo" / "audio_test").glob("*.wav"))[:4]:
        shutil.copy(f, folder / f.name)
    p.run("predict.py", f"runs=['{job}']", f"input={folder}", "tta=2", f"hydra.run.dir={tmp_path / 'pred'}")
    with np.load(tmp_path / "pred" / "probs.npz") as z:
        probs = z["probs"]
    assert probs.shape[0] == 4 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
