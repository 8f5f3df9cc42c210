"""How checkpoints reach the disk (fstag.train.checkpoint_io): whole or not at all, chosen by ``checkpoint.*``
(in the background on request) unless ``trainer.plugins`` names a writer; and where a job's time goes
(fstag.train.timings)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from pytorch_lightning.plugins.io import AsyncCheckpointIO

import fstag.runs.resolvers  # noqa: F401  (the ${fstag.*} resolvers of conf/)
from fstag.core.config import CONFIG_DIR
from fstag.runs.identity import identity
from fstag.train.checkpoint_io import FileCheckpointIO, checkpoint_io
from fstag.train.lightning_parts import build_callbacks, build_trainer
from fstag.train.timings import StepTimes, process_age_s


def _cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[f"paths.root_dir={tmp_path}", "trainer=cpu", *overrides])


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = FileCheckpointIO()
    io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(3)}}, path)
    assert torch.load(path)["epoch"] == 1

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"epoch": 2, "bad": Unpicklable()}, path)
    assert torch.load(path)["epoch"] == 1  # the previous checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # and no temporary file is left


def test_checkpoint_settings_choose_the_writer_and_bad_keys_are_named():
    assert type(checkpoint_io(None)) is FileCheckpointIO
    assert type(checkpoint_io({"async_write": False})) is FileCheckpointIO
    io = checkpoint_io({"async_write": True})
    assert isinstance(io, AsyncCheckpointIO) and isinstance(io.checkpoint_io, FileCheckpointIO)
    with pytest.raises(ValueError, match="checkpoint.asynch: not a setting.*async_write"):
        checkpoint_io({"asynch": False})


def test_the_trainer_writes_as_configured_and_the_settings_are_not_part_of_a_jobs_identity(tmp_path):
    cfg = _cfg(tmp_path)
    trainer = build_trainer(cfg, tmp_path / "job", build_callbacks(cfg, tmp_path / "job"), [])
    assert type(trainer.strategy.checkpoint_io) is FileCheckpointIO
    best = trainer.checkpoint_callbacks[0]
    assert best.filename == "best" and best.save_weights_only  # checkpoint.best_weights_only
    assert not [c for c in trainer.checkpoint_callbacks if c.filename == "last"][0].save_weights_only

    other = _cfg(tmp_path, "checkpoint.async_write=true", "checkpoint.best_weights_only=false")
    trainer = build_trainer(other, tmp_path / "job", build_callbacks(other, tmp_path / "job"), [])
    io = trainer.strategy.checkpoint_io
    assert isinstance(io, AsyncCheckpointIO) and isinstance(io.checkpoint_io, FileCheckpointIO)
    assert not trainer.checkpoint_callbacks[0].save_weights_only
    assert identity(other) == identity(cfg)  # how checkpoints are written is bookkeeping

    own = _cfg(tmp_path, "+trainer.plugins=[{_target_:lightning_fabric.plugins.TorchCheckpointIO}]")
    trainer = build_trainer(own, tmp_path / "job", [], [])
    assert type(trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO"  # a user's writer is kept


def test_step_times_add_up_and_the_process_age_is_read():
    age = process_age_s()
    assert age is not None and 0 < age < 24 * 3600
    times = StepTimes()
    for _ in range(2):
        with times.step("predict"):
            pass
    with pytest.raises(KeyError):
        with times.step("build"):
            raise KeyError("a failing step is timed too")
    out = times.as_dict()
    assert set(out) == {"startup", "predict", "build"} and out["predict"] >= 0 and out["build"] >= 0
