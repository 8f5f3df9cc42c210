"""The audio-native backbones (fstag.models.audio_backbones): built through timm's registry and conf/arch/,
trained a step, loaded from PANNs' and EfficientAT's checkpoint layouts through arch.pretrained_path, and a
tiny experiment=scratch job through train.py that predict.py reloads bit for bit."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fstag.core.config import CONFIG_DIR
from fstag.models.audio_backbones import efficientat_to_timm
from fstag.models.backbones import PretrainedWeightsUnavailable, build_model
from tests.conftest import TINY_OVERRIDES

ARCHS = ["cnn6", "cnn10", "cnn14", "mn10_audio"]
X = torch.randn(2, 3, 64, 32)  # fstag's (batch, log-mel + deltas, mel bands, frames), a short crop


def _arch(name: str, **overrides) -> dict:
    """conf/arch/<name>.yaml as train.py composes it with experiment=scratch (and the DDP trainer)."""
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=["experiment=scratch", f"arch={name}", "trainer=ddp_sim"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
    return {**OmegaConf.to_container(cfg.arch, resolve=True), **overrides}


BAND_STATS = {"mean": np.zeros((3, 64), np.float32), "std": np.ones((3, 64), np.float32)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one compute thread is fastest, and does not spin against the other workers' threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ARCHS)
def test_builds_through_timm_and_the_arch_config_and_trains_a_step(name):
    with torch.device("meta"):  # shapes only: no time spent initialising cnn14's 80 M weights twice
        model = timm.create_model(name, num_classes=41, in_chans=3)
        assert model.eval()(X.to("meta")).shape == (2, 41)
    arch = _arch(name)
    assert arch["name"] == name and arch["input_norm"] == "band_stats" and not arch["pretrained"]
    torch.manual_seed(0)
    net = build_model(arch, num_classes=5, band_stats=BAND_STATS).train()
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(net(X), torch.tensor([1, 3]))
    loss.backward()
    # DDP (find_unused_parameters=false) needs a gradient for every parameter
    assert [k for k, p in net.named_parameters() if p.grad is None] == []
    opt.step()
    changed = [k for k, p in net.named_parameters() if not torch.equal(p, before[k])]
    assert len(changed) == len(before)
    assert net.eval()(X).shape == (2, 5)


def test_registry_weights_are_refused_with_a_pointer_to_pretrained_path():
    with pytest.raises(PretrainedWeightsUnavailable, match="arch.pretrained_path"):
        build_model({"name": "cnn10", "pretrained": True}, num_classes=5)


def _panns_checkpoint(path, name: str = "cnn10") -> dict:
    """A file as PANNs' training saves it: {'iteration', 'model': state dict, 'sampler': numpy state}, its
    model with 1 input channel, the 527-class fc_audioset and the feature extractor's buffers."""
    torch.manual_seed(1)
    src = timm.create_model(name, num_classes=527, in_chans=1)
    for m in src.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
    state = {("fc_audioset." + k[3:] if k.startswith("fc.") else k): v for k, v in src.state_dict().items()}
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(513, 1, 1024)
    state["logmel_extractor.melW"] = torch.zeros(513, 64)
    torch.save({"iteration": 10000, "model": state, "sampler": {"indexes_per_class": [np.arange(5)]}}, path)
    return state


def test_a_panns_checkpoint_loads_what_fits_and_reports_the_rest(tmp_path, caplog):
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    saved = _panns_checkpoint(path)
    with caplog.at_level(logging.INFO, logger="fstag.models.pretrained"):
        net = build_model(_arch("cnn10", pretrained_path=str(path)), num_classes=5, band_stats=BAND_STATS)
    own = net.backbone.state_dict()
    for key in ("bn0.running_mean", "conv_block2.conv1.weight", "conv_block4.bn2.running_mean", "fc1.weight"):
        assert torch.equal(own[key], saved[key]), key
    first = own["conv_block1.conv1.weight"]  # (64, 3, 3, 3): PANNs' log-mel kernel, zero for the deltas
    assert torch.equal(first[:, :1], saved["conv_block1.conv1.weight"]) and not first[:, 1:].any()
    report = net.pretrained_report
    assert report.adapted == ["conv_block1.conv1.weight (64, 1, 3, 3) -> (64, 3, 3, 3)"]
    assert set(report.skipped) == {"fc_audioset.weight as fc.weight", "fc_audioset.bias as fc.bias",
                                   "spectrogram_extractor.stft.conv_real.weight", "logmel_extractor.melW"}
    assert report.missing == ["fc.weight", "fc.bias"]  # the classifier is fstag's own
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipped 4" in warning and "logmel_extractor.melW (cnn10 has no such key)" in warning

    # a Cnn6 checkpoint in a cnn10: the BatchNorms and fc1 fit, its 5x5 kernels do not
    small = tmp_path / "Cnn6.pth"
    _panns_checkpoint(small, "cnn6")
    report = build_model({"name": "cnn10", "pretrained_path": str(small)}, num_classes=5).pretrained_report
    assert report.skipped["conv_block2.conv1.weight"] == "shape (128, 64, 5, 5), cnn10 has (128, 64, 3, 3)"
    assert "conv_block2.conv2.weight" in report.missing and "fc1.weight" in report.loaded


def test_unusable_pretrained_files_fail_clearly(tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match="file not found"):
        build_model({"name": "cnn6", "pretrained_path": str(tmp_path / "nope.pth")}, num_classes=5)
    other = tmp_path / "small.pt"
    torch.save(timm.create_model("cnn_small", num_classes=5).state_dict(), other)
    with pytest.raises(PretrainedWeightsUnavailable, match="none of its .* tensors fits cnn6"):
        build_model({"name": "cnn6", "pretrained_path": str(other)}, num_classes=5)
    pickled = tmp_path / "with_args.pth"
    torch.save({"model": {"bn0.weight": torch.ones(64)}, "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(PretrainedWeightsUnavailable, match="Python objects besides tensors"):
        build_model({"name": "cnn6", "pretrained_path": str(pickled)}, num_classes=5)


# EfficientAT's mn10 (models/mn/model.py): torchvision's MobileNetV3 names; per inverted-residual block
# (input, expanded, output channels, squeeze-excitation) as in its _mobilenet_v3_conf, width 1.0
EFFICIENTAT_BLOCKS = [(16, 16, 16, False), (16, 64, 24, False), (24, 72, 24, False), (24, 72, 40, True),
                      (40, 120, 40, True), (40, 120, 40, True), (40, 240, 80, False), (80, 200, 80, False),
                      (80, 184, 80, False), (80, 184, 80, False), (80, 480, 112, True), (112, 672, 112, True),
                      (112, 672, 160, True), (160, 960, 160, True), (160, 960, 160, True)]


def _efficientat_keys() -> list[str]:
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    conv_bn = lambda p: [f"{p}.0.weight", *(f"{p}.1.{b}" for b in bn)]  # noqa: E731  (ConvNormActivation)
    keys = conv_bn("features.0")
    for i, (c_in, c_exp, _, se) in enumerate(EFFICIENTAT_BLOCKS, start=1):
        j, parts = 0, []
        if c_exp != c_in:
            parts, j = conv_bn(f"features.{i}.block.0"), 1
        parts += conv_bn(f"features.{i}.block.{j}")
        if se:
            parts += [f"features.{i}.block.{j + 1}.conc_se_layers.0.{fc}.{w}" for fc in ("fc1", "fc2") for w in ("weight", "bias")]
            j += 1
        keys += parts + conv_bn(f"features.{i}.block.{j + 1}")
    return keys + conv_bn("features.16") + [f"classifier.{i}.{w}" for i in (2, 5) for w in ("weight", "bias")]


def test_an_efficientat_checkpoint_maps_onto_mn10_audio(tmp_path):
    torch.manual_seed(2)
    src = timm.create_model("mn10_audio", num_classes=527, in_chans=1).eval()
    keys = _efficientat_keys()
    names = efficientat_to_timm(keys, src)
    assert len(names) == len(keys) == len(set(names.values())) and set(names.values()) == set(src.state_dict())
    # the file as EfficientAT saves it: its squeeze-excitation and classifier.2 are linear layers
    own = src.state_dict()
    state = {k: own[names[k]].flatten(1) if ("conc_se" in k or "classifier.2" in k) and k.endswith("weight") else own[names[k]]
             for k in keys}
    path = tmp_path / "mn10_as_mAP_471.pt"
    torch.save(state, path)
    net = build_model({"name": "mn10_audio", "pretrained_path": str(path), "input_norm": "none"}, num_classes=41)
    report = net.pretrained_report
    assert report.adapted == ["features.0.0.weight as conv_stem.weight (16, 1, 3, 3) -> (16, 3, 3, 3)"]
    assert set(report.skipped) == {"classifier.5.weight as classifier.weight", "classifier.5.bias as classifier.bias"}
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # the log-mel channel alone computes what the source model computed
        want = src.forward_head(src.forward_features(x), pre_logits=True)
        got = net.backbone.eval().forward_head(net.backbone.forward_features(torch.cat([x, torch.randn(2, 2, 64, 64)], 1)),
                                               pre_logits=True)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_scratch_job_trains_saves_and_predict_reloads_it_bit_for_bit(demo_project, tmp_path):
    """mn10_audio, the cheapest of them on a CPU, through train.py with experiment=scratch; predict.py on the
    test split with the job's TTA gives its test.npz exactly."""
    p = demo_project
    p.run("train.py", "experiment=scratch", "arch=mn10_audio", "fold=1", "exp=audio_backbones", *TINY_OVERRIDES)
    (run_json,) = (p.root / "multirun" / "audio_backbones").rglob("fold_1/run.json")
    job = run_json.parent
    ckpt = torch.load(job / "checkpoints" / "best.ckpt", map_location="cpu")  # weights_only, torch's default
    assert ckpt["hyper_parameters"]["arch"]["name"] == "mn10_audio"
    assert "model.backbone.blocks.5.2.se.conv_reduce.weight" in ckpt["state_dict"]
    p.run("predict.py", f"runs=['{job}']", "tta=2", f"hydra.run.dir={tmp_path / 'pred'}")
    with np.load(tmp_path / "pred" / "probs.npz") as z, np.load(job / "test.npz") as t:
        assert z["fnames"].tolist() == t["fnames"].tolist()
        np.testing.assert_array_equal(z["probs"], t["probs"])
