"""The device-resident input path (loader.resident, fstag/train/resident_data.py) against the CPU DataLoader
path, on a real feature cache (written by the cache's own SplitWriter, read by FeatureStore): for a fixed
seed both give the same batches to the bit (crop offsets, specmask_concat masks, padding), the same later
draws from torch's RNG (mixup pairs and lambda), and the same trained weights through a real Lightning
Trainer. Here the resident store lives on the CPU; tests marked gpu put it on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

from fstag.data.feature_store import FeatureStore, SplitWriter
from fstag.models.augment import mixup_batch
from fstag.train.datamodule import FoldDataModule, Rows
from fstag.train.resident_data import ResidentDataModule, fold_datamodule

N_MELS = 16
# short clips (padded, specmask_concat), ones at and around the crop and half the crop, long ones (cropped)
LENGTHS = [3, 10, 19, 20, 21, 39, 40, 41, 80, 7, 33, 55, 12, 60, 2, 25]
AUG = {"name": "specmask_concat", "specmask_concat": True, "time_mask": 6, "freq_mask": 5, "mask_value": -80.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    d = tmp_path_factory.mktemp("features")
    (d / "features.yaml").write_text(yaml.safe_dump({"n_mels": N_MELS}))
    writer = SplitWriter(d, "train")
    rng = np.random.default_rng(0)
    for i, t in enumerate(LENGTHS):
        writer.add(f"c{i}.wav", rng.normal(-30, 10, (3, N_MELS, t)).astype(np.float16))
    writer.finish()
    return FeatureStore.open(d, "train")


def _rows(n: int) -> tuple[Rows, Rows]:
    train = Rows(index=np.arange(n)[::-1].copy(), targets=np.arange(n) % 5,
                 weights=np.linspace(0.5, 1, n).astype(np.float32), verified=np.arange(n) % 3 == 0)
    val = Rows(index=np.arange(0, n, 2), targets=np.arange(0, n, 2) % 5, weights=np.ones(n // 2, np.float32))
    return train, val


def _loader(pad_value, **kw) -> dict:
    return {"batch_size": 5, "num_workers": 0, "crop_frames": 40, "pad_value": pad_value, "pin_memory": False, **kw}


def _batches(dm: FoldDataModule, epochs: int = 2) -> list[tuple[torch.Tensor, ...]]:
    """Every batch of ``epochs`` epochs (train, then validation) with the mixup draw the module makes after
    each training batch."""
    torch.manual_seed(11)
    out = []
    for _ in range(epochs):
        for b in dm.train_dataloader():
            b = dm.batch_of(b) if isinstance(b, dict) else b
            _, _, y_b, _, _, lam = mixup_batch(b[0], b[1], b[2], 3.0)
            out.append((*b, y_b, torch.tensor(lam)))
        for b in dm.val_dataloader():
            out.append(dm.batch_of(b) if isinstance(b, dict) else b)
    return out


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for k, (p, q) in enumerate(zip(a, b)):
        assert len(p) == len(q)
        for x, y in zip(p, q):
            assert x.dtype == y.dtype and x.shape == y.shape, (k, x.dtype, y.dtype, x.shape, y.shape)
            assert torch.equal(x.cpu(), y.cpu()), f"batch {k} differs"


@pytest.mark.parametrize("pad_value", [0.0, None], ids=["pad0", "floor"])
def test_resident_batches_equal_the_cpu_paths(store, pad_value):
    train, val = _rows(len(store))
    cpu = _batches(FoldDataModule(store, train, val, _loader(pad_value), AUG, on_gpu=False))
    resident = ResidentDataModule(store, train, val, _loader(pad_value), AUG, on_gpu=False)
    resident.place(torch.device("cpu"))
    got = _batches(resident)
    _assert_same(cpu, got)
    masked = [x for x, *_ in cpu[:3]]
    assert any(bool((x == -80.0).any()) for x in masked)  # the batches do hold masks and padding ...
    assert any(bool((x == 0).all(dim=(1, 2)).any()) for x in masked) or pad_value is None
    # ... and a different seed gives other crops: the comparison can fail
    torch.manual_seed(12)
    other = resident.batch_of(next(iter(resident.train_dataloader())))[0]
    assert not torch.equal(other, cpu[0][0])


def _train(dm: FoldDataModule) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(initial, trained) weights of the small CNN after two epochs on ``dm``."""
    from fstag.models.module import TaggingModule

    pl.seed_everything(5, workers=True)
    module = TaggingModule(
        arch={"name": "cnn_small", "pretrained": False, "in_chans": 3, "input_norm": "bn"}, labels=list("abcde"),
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9},
        scheduler={"_target_": "torch.optim.lr_scheduler.ConstantLR", "factor": 1.0},
        mixup={"enabled": True, "prob": 0.5, "alpha": 3.0},
        specaug={"enabled": True, "time_masks": 1, "time_width": 5, "freq_masks": 1, "freq_width": 3})
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return initial, {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_resident_training_equals_cpu_training(store):
    """Through Lightning (setup on the Trainer's device, on_after_batch_transfer, the module's SpecAugment and
    mixup): two epochs give the same weights, to the bit."""
    train, val = _rows(len(store))
    initial, cpu = _train(FoldDataModule(store, train, val, _loader(None), AUG, on_gpu=False))
    dm = fold_datamodule(store, train, val, _loader(None, resident=True), AUG, on_gpu=False)
    assert isinstance(dm, ResidentDataModule)
    _, resident = _train(dm)
    assert dm.resident is not None and dm.resident.device.type == "cpu"  # placed by the Trainer's setup
    assert cpu.keys() == resident.keys()
    assert [k for k in cpu if not torch.equal(cpu[k], resident[k])] == []
    assert any(not torch.equal(initial[k], cpu[k]) for k in cpu)  # it did train


def test_loader_resident_choice(store):
    train, val = _rows(len(store))
    pick = lambda value, gpu=False: type(fold_datamodule(store, train, val, _loader(0.0, resident=value), AUG, gpu))  # noqa: E731
    assert pick("auto") is FoldDataModule  # the CPU path stays the default on CPU
    assert pick(False) is FoldDataModule and pick("false") is FoldDataModule
    assert pick(True) is ResidentDataModule and pick("true") is ResidentDataModule
    with pytest.raises(ValueError, match=r"loader.resident='maybe': choose one of auto, true, false"):
        pick("maybe")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pad_value", [0.0, None], ids=["pad0", "floor"])
def test_resident_batches_on_cuda_equal_the_cpu_paths(store, pad_value):
    """On CUDA (auto picks it): the same crops and masks as the CPU path's, cut on the GPU."""
    train, val = _rows(len(store))
    cpu = FoldDataModule(store, train, val, _loader(pad_value), AUG, on_gpu=False)
    dm = fold_datamodule(store, train, val, _loader(pad_value, resident="auto"), AUG, on_gpu=True)
    assert isinstance(dm, ResidentDataModule)
    dm.place(torch.device("cuda"))
    assert dm.resident.data.is_cuda
    for loader_a, loader_b in ((cpu.train_dataloader, dm.train_dataloader), (cpu.val_dataloader, dm.val_dataloader)):
        torch.manual_seed(3)
        a = list(loader_a())
        torch.manual_seed(3)
        b = [dm.batch_of(t) for t in loader_b()]
        assert all(y[0].is_cuda for y in b)
        _assert_same([x[:5] for x in a], [y[:5] for y in b])
