"""stage=self_train: the pseudo-label selection by hand, the identity of a job that learns from a folder and
its teachers, and a real self_train job on a folder of recordings (train.py, then predict.py on its run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from fstag.core.config import CONFIG_DIR
from fstag.runs.identity import folder_digest, teachers_digest, variant_items
from fstag.train.datamodule import CropDataset, Rows
from fstag.train.self_training import (
    PseudoLabelledStore,
    PseudoLabels,
    select_pseudo_labels,
    with_pseudo_labels,
)
from tests.conftest import TINY_TRAIN

# rows:        0: class 0 (0.6)  1: class 1 (0.7)  2: class 0 (0.9)  3: a tie of 0 and 1 (0.4)
#              4: class 0 (0.6, as row 0)  5: class 2 (0.8)  6: class 2 (0.4)
PROBS = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05], [0.4, 0.4, 0.2],
                  [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])


def _sel(threshold, cap=None):
    idx, lab, conf = select_pseudo_labels(PROBS, threshold, cap)
    return idx.tolist(), lab.tolist(), np.round(conf, 6).tolist()


def test_select_pseudo_labels_by_threshold():
    assert _sel(0.5) == ([0, 1, 2, 4, 5], [0, 1, 0, 0, 2], [0.6, 0.7, 0.9, 0.6, 0.8])
    assert _sel(0.7) == ([1, 2, 5], [1, 0, 2], [0.7, 0.9, 0.8])  # at least the threshold
    assert _sel(0.0)[0] == list(range(7)) and _sel(0.0)[1][3] == 0  # a tie: the lower class id
    assert _sel(0.95) == ([], [], [])
    idx, lab, conf = select_pseudo_labels(PROBS, 0.95)
    assert idx.dtype == lab.dtype == np.int64 and conf.dtype == np.float64


def test_select_pseudo_labels_caps_each_class_most_confident_first():
    # class 0 has rows 2 (0.9), 0 and 4 (0.6 each: the lower row first), 3 (0.4)
    assert _sel(0.5, 2) == ([0, 1, 2, 5], [0, 1, 0, 2], [0.6, 0.7, 0.9, 0.8])
    assert _sel(0.0, 1) == ([1, 2, 5], [1, 0, 2], [0.7, 0.9, 0.8])
    assert _sel(0.0, 3) == ([0, 1, 2, 4, 5, 6], [0, 1, 0, 0, 2, 2], [0.6, 0.7, 0.9, 0.6, 0.8, 0.4])
    assert _sel(0.0, 100) == _sel(0.0)
    assert select_pseudo_labels(np.zeros((0, 3)), 0.5, 2)[0].tolist() == []


@pytest.mark.parametrize("threshold,cap", [(1.5, None), (-0.1, None), (0.5, 0)])
def test_select_pseudo_labels_refuses_bad_settings(threshold, cap):
    with pytest.raises(ValueError, match="self_train"):
        select_pseudo_labels(PROBS, threshold, cap)


def test_pseudo_labelled_rows_follow_the_cache_rows():
    cache = [np.full((3, 4, 5), float(i), dtype=np.float16) for i in range(3)]
    rows = Rows(index=np.array([2, 0]), targets=np.array([1, 0]), weights=np.ones(2, np.float32),
                verified=np.array([True, False]))
    clips = [np.full((3, 4, 5), 10.0 + j, dtype=np.float16) for j in range(2)]
    pseudo = PseudoLabels(Path("."), ["a.wav", "b.wav", "c.wav"], np.zeros(3, bool), np.array([0, 2]),
                          np.array([4, 3]), np.array([0.9, 0.8]), clips, [])
    store, both = with_pseudo_labels(cache, rows, pseudo, 0.5)
    assert isinstance(store, PseudoLabelledStore) and len(store) == 5
    assert both.index.tolist() == [2, 0, 3, 4] and both.targets.tolist() == [1, 0, 4, 3]
    assert both.weights.tolist() == [1.0, 1.0, 0.5, 0.5] and both.verified.tolist() == [True, False, False, False]
    ds = CropDataset(store, both, 5, train=False, aug={})
    assert [float(ds[i][0].mean()) for i in range(4)] == [2.0, 0.0, 10.0, 11.0]
    assert [ds[i][1:4] for i in (2, 3)] == [(4, 0.5, 2), (3, 0.5, 3)]
    assert pseudo.table(["a", "b", "c", "d", "e"]).to_dict("list") == {
        "file": ["a.wav", "c.wav"], "label": ["e", "d"], "confidence": [0.9, 0.8]}


# identity -----------------------------------------------------------------------------------------------
def test_self_train_keys_belong_to_the_self_train_stage_only():
    ov = ["optimizer.lr=0.05", "self_train.threshold=0.7", "retrain.max_epochs=3"]
    assert variant_items(ov, "train") == ["optimizer.lr=0.05"]
    assert variant_items(ov, "retrain_val") == ["optimizer.lr=0.05", "retrain.max_epochs=3"]
    assert variant_items(ov, "self_train") == ["optimizer.lr=0.05", "self_train.threshold=0.7"]


def test_the_job_dir_and_identity_of_a_self_train_job(monkeypatch, tmp_path):
    from fstag.runs.identity import identity

    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"RIFF a")
    monkeypatch.setenv("FSTAG_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        train = compose(config_name="train", overrides=["experiment=demo_seed", "self_train.threshold=0.9"],
                        return_hydra_config=True)
        st = compose(config_name="train", overrides=["experiment=demo_seed", "stage=self_train", f"self_train.input={folder}"],
                     return_hydra_config=True)
    for cfg in (train, st):
        with open_dict(cfg):  # what a running job sets
            cfg.hydra.runtime.output_dir, cfg.hydra.job.num, cfg.hydra.job.id = str(tmp_path / "out"), 0, "0"
    assert str(st.job_dir).endswith("/fold_0_st") and str(train.job_dir).endswith("/default/fold_0")
    assert not [k for k in identity(train) if k.startswith("self_train")]  # a train job ignores self_train.*
    ident = identity(st, teachers=[])
    assert ident["self_train.input_sha256"] == folder_digest(folder, ["wav"]) and ident["self_train.threshold"] == 0.5
    assert ident["self_train.teachers_sha256"] == teachers_digest([]) and not [k for k in ident if k.startswith("retrain")]
    with pytest.raises(ValueError, match="teachers"):
        identity(st)


def test_a_missing_or_empty_input_folder_is_a_clear_error(monkeypatch, tmp_path):
    from fstag.train.fold_data import TrainingSetupError
    from fstag.train.self_training import input_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.csv").write_text("fname,label\na.wav,Bark\n")  # not audio
    monkeypatch.setenv("FSTAG_ROOT", str(tmp_path))
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfgs = {name: compose(config_name="train", overrides=["stage=self_train", *extra])
                for name, extra in (("unset", []), ("absent", [f"self_train.input={tmp_path / 'nope'}"]),
                                    ("empty", [f"self_train.input={empty}"]),
                                    ("bad_cap", [f"self_train.input={empty}", "self_train.per_class_cap=0"]))}
    with pytest.raises(TrainingSetupError, match=r"needs self_train\.input="):
        input_folder(cfgs["unset"])
    with pytest.raises(TrainingSetupError, match=rf"self_train\.input=.*{tmp_path / 'nope'} is not a folder"):
        input_folder(cfgs["absent"])
    with pytest.raises(TrainingSetupError, match=rf"self_train\.input=.*no audio files in {empty}"):
        input_folder(cfgs["empty"])
    (empty / "a.wav").write_bytes(b"RIFF")
    assert input_folder(cfgs["empty"]) == empty.resolve()
    with pytest.raises(TrainingSetupError, match="self_train.per_class_cap=0"):
        input_folder(cfgs["bad_cap"])


def test_the_folder_digest_reads_audio_files_only(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.wav").write_bytes(b"RIFF a")
    (tmp_path / "sub" / "b.FLAC").write_bytes(b"fLaC b")
    before = folder_digest(tmp_path, ["wav", "flac"])
    (tmp_path / "labels.csv").write_text("fname,label\na.wav,Bark\n")  # never read: changes nothing
    assert folder_digest(tmp_path, ["wav", "flac"]) == before
    (tmp_path / "sub" / "b.FLAC").write_bytes(b"fLaC B")  # a file's bytes
    changed = folder_digest(tmp_path, ["wav", "flac"])
    assert changed != before
    (tmp_path / "sub" / "b.FLAC").rename(tmp_path / "b.FLAC")  # the same bytes under another name
    assert folder_digest(tmp_path, ["wav", "flac"]) not in (before, changed)


def test_the_teachers_digest_follows_their_predictions(tmp_path):
    runs = []
    for k in (0, 1):
        d = tmp_path / f"fold_{k}"
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"identity": {"fold": k}}))
        (d / "test.npz").write_bytes(b"probs %d" % k)
        runs.append(d)
    both = teachers_digest(runs)
    assert teachers_digest(runs[::-1]) == both != teachers_digest(runs[:1])
    (runs[1] / "test.npz").write_bytes(b"retrained")  # same config, other weights
    assert teachers_digest(runs) != both


# a real job -----------------------------------------------------------------------------------------------
DECOY = "Decoy_label_never_read"
EXP = "selftrain"


@pytest.fixture(scope="module")
def self_trained(swept_project, tmp_path_factory):
    """A folder of 8 test recordings plus a labels CSV that must never be read, and a self_train job of fold
    0 (exp=selftrain, 1 epoch) taught by swept_project's cnn_small/none/fold_0 on that folder."""
    p = swept_project
    folder = tmp_path_factory.mktemp("recordings")
    picked = sorted((p.root / "data" / "demo" / "audio_test").glob("*.wav"))[:8]
    for f in picked:
        shutil.copy(f, folder / f.name)
    pd.DataFrame({"fname": [f.name for f in picked], "label": DECOY}).to_csv(folder / "labels.csv", index=False)
    teacher = p.runs_dir / "cnn_small" / "none" / "default" / "fold_0"
    command = ["stage=self_train", "fold=0", *TINY_TRAIN, "trainer.max_epochs=1", f"exp={EXP}",
               f"mlflow.experiment=fstag-{EXP}", f"self_train.input={folder}", f"self_train.teachers=[{teacher}]",
               "self_train.threshold=0.0", "self_train.per_class_cap=2", "self_train.tta=2", "self_train.weight=0.5"]
    res = p.run("train.py", *command)
    jobs = sorted((p.root / "multirun" / EXP / "cnn_small" / "none").glob("*/fold_0_st"))
    assert len(jobs) == 1, jobs
    return {"project": p, "folder": folder, "teacher": teacher, "job": jobs[0], "command": command,
            "log": res.stdout + res.stderr}


def _predict_in_process(runs: list[Path], folder: Path, out: Path, tta: int) -> pd.DataFrame:
    """predict.py's job in this process (its config composed as predict.py composes it): top3.csv."""
    from fstag.infer.job import run_predict

    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="predict", overrides=[f"runs=[{','.join(map(str, runs))}]", f"input={folder}",
                                                        f"tta={tta}", f"output_dir={out}"])
    run_predict(cfg)
    return pd.read_csv(out / "top3.csv")


@pytest.mark.slow
def test_self_train_job_learns_from_the_teachers_top1(self_trained, monkeypatch, tmp_path):
    p, job, folder = self_trained["project"], self_trained["job"], self_trained["folder"]
    info = json.loads((job / "run.json").read_text())
    assert info["complete"] and info["stage"] == "self_train" and info["name"] == "fold_0_st"
    assert (job / "checkpoints" / "best.ckpt").is_file() and (job / "oof.npz").is_file() and (job / "test.npz").is_file()
    st = info["self_train"]
    table = pd.read_csv(job / "pseudo_labels.csv")
    assert list(table.columns) == ["file", "label", "confidence"] and DECOY not in set(table["label"])
    assert st["files"] == 8 and st["selected"] == len(table) > 0 and sum(st["per_class"].values()) == len(table)
    assert st["per_class"] == {lab: int((table["label"] == lab).sum()) for lab in info["labels"]}
    assert (st["threshold"], st["per_class_cap"], st["weight"], st["tta"]) == (0.0, 2, 0.5, 2)
    assert st["teachers"] == [str(self_trained["teacher"])] and st["teachers_trained_on_val_fold"] == []
    assert f"({len(table)} pseudo-labelled)" in self_trained["log"]  # they joined the training rows

    # the teacher's own predictions on the folder (predict.py's job, the same crops): the top-1 of the kept
    # files, at most 2 per label, the most confident of each label
    monkeypatch.setenv("FSTAG_ROOT", str(p.root))
    top = _predict_in_process([self_trained["teacher"]], folder, tmp_path / "teacher", tta=2).set_index("fname")
    assert len(top) == 8 and "labels.csv" not in top.index
    kept = top.loc[table["file"]]
    assert kept["label1"].tolist() == table["label"].tolist()
    np.testing.assert_allclose(kept["prob1"], table["confidence"], atol=2e-6)
    for label, n in top["label1"].value_counts().items():
        want = top[top["label1"] == label]["prob1"].sort_values(ascending=False, kind="stable").index[:2]
        assert sorted(table[table["label"] == label]["file"]) == sorted(want), label
        assert min(n, 2) == st["per_class"][label]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(p.tracking_uri)
    run = client.get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["pseudo_labels"] == len(table)
    assert run.data.metrics["pseudo_label_files"] == 8
    assert "pseudo_labels.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_predict_tags_the_folder_with_the_self_trained_run(self_trained):
    p = self_trained["project"]
    p.run("predict.py", f"runs=['{self_trained['job']}']", f"input={self_trained['folder']}", "tta=2",
          "hydra.run.dir=outputs/predict/student")
    top = pd.read_csv(p.root / "outputs" / "predict" / "student" / "top3.csv")
    labels = json.loads((self_trained["job"] / "run.json").read_text())["labels"]
    assert len(top) == 8 and set(top["label1"]) <= set(labels) and not top["flagged"].any()


@pytest.mark.slow
def test_a_changed_recording_is_another_job_identity(self_trained):
    """Last: it changes the folder. The same command on a changed folder refuses the used job directory."""
    p, folder = self_trained["project"], self_trained["folder"]
    first = min(folder.glob("*.wav"))
    other = sorted((p.root / "data" / "demo" / "audio_test").glob("*.wav"))[8]
    shutil.copy(other, first)
    res = p.run("train.py", *self_trained["command"], check=False)
    assert res.returncode != 0 and "JobConfigMismatch" in res.stderr
    assert "self_train.input_sha256" in res.stderr and str(self_trained["job"]) in res.stderr
