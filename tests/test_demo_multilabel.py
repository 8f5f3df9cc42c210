"""The multi-label demo: its generator (the FSDKaggle2019 layout's files, label unions, the noisy part's wrong
share, determinism for a seed, worker independence, atomicity) and a multi-label job end to end through the
real entry points on a tiny generated set (preprocess -> train -> retrain_val -> predict -> blend -> an
FSDKaggle2019 submission, rebuilt byte-identical from the blend's saved config)."""

from __future__ import annotations

import csv
import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fstag.core.task import split_labels
from fstag.data.demo import (
    DEFAULT_LABELS,
    TRUTH_CSV,
    MultilabelDemoSettings,
    ensure_multilabel_demo,
    generate_multilabel_demo,
    plan_multilabel,
)
from fstag.data.demo import cli as demo_cli
from fstag.data.demo import multilabel as ml_write
from fstag.data.demo.mix import render_mixture

# 21 labels, 24 curated clips (every label heads at least one), 16 noisy, 6 test; sources of at most 3 s
TINY_ML = dict(n_curated=24, n_noisy=16, n_test=6, max_duration=3.0, max_margin=0.3, seed=5, workers=1,
               noisy_wrong_share=0.5, progress=False)
LAYOUT_FILES = {"train_curated.csv", "train_noisy.csv", "sample_submission.csv", "test_post_competition.csv",
                TRUTH_CSV}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _truth(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / TRUTH_CSV, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml") / "demo_multilabel"
    assert ensure_multilabel_demo(root, **TINY_ML) == root
    return root


def test_the_folder_is_in_the_fsdkaggle2019_layout(tiny):
    assert {p.name for p in tiny.iterdir()} == LAYOUT_FILES | {"train_curated", "train_noisy", "test"}
    curated = pd.read_csv(tiny / "train_curated.csv", dtype=str)
    noisy = pd.read_csv(tiny / "train_noisy.csv", dtype=str)
    template = pd.read_csv(tiny / "sample_submission.csv", dtype=str)
    scoring = pd.read_csv(tiny / "test_post_competition.csv", dtype=str)
    assert list(curated.columns) == list(noisy.columns) == ["fname", "labels"]
    assert list(scoring.columns) == ["fname", "labels", "usage"]
    # the vocabulary: sample_submission.csv's columns, sorted, and a row of zeros per test clip
    assert list(template.columns) == ["fname", *sorted(DEFAULT_LABELS)]
    assert (template.drop(columns="fname") == "0").all().all()
    assert template["fname"].tolist() == scoring["fname"].tolist() == sorted(template["fname"])
    assert set(scoring["usage"]) <= {"Public", "Private", "Ignored"} and "Ignored" in set(scoring["usage"])
    for table, folder in ((curated, "train_curated"), (noisy, "train_noisy"), (template, "test")):
        assert sorted(p.name for p in (tiny / folder).iterdir()) == sorted(table["fname"])
    assert len(curated) == 24 and len(noisy) == 16 and len(template) == 6
    assert len(set(curated["fname"]) | set(noisy["fname"]) | set(template["fname"])) == 46  # all distinct
    # a cell of several labels is one CSV field, quoted by the writer; the csv module reads it back whole
    text = (tiny / "train_curated.csv").read_text()
    multi = [c for c in curated["labels"] if "," in c]
    assert multi and all(f'"{c}"' in text for c in multi)
    with open(tiny / "train_curated.csv", newline="") as fh:
        assert all(len(row) == 2 for row in csv.reader(fh))
    for cells in (curated["labels"], noisy["labels"], scoring["labels"]):
        for cell in cells:
            labs = split_labels(cell)
            assert labs == sorted(labs) and len(set(labs)) == len(labs) and set(labs) <= set(DEFAULT_LABELS)


def test_labels_are_the_union_of_the_sources(tiny):
    truth = _truth(tiny)
    for row in truth.itertuples():
        sources = row.sources.split(";")
        assert 1 <= len(sources) <= 3 and len(set(sources)) == len(sources)
        assert split_labels(row.true_labels) == sorted(sources) and int(row.n_sources) == len(sources)
        assert len(row.offsets_s.split(";")) == len(row.gains_db.split(";")) == len(sources)
        assert row.arrangement == ("single" if len(sources) == 1 else row.arrangement)
        assert row.arrangement in ({"single"} if len(sources) == 1 else {"overlap", "sequence"})
    listed = {s: dict(zip(t["fname"], t["labels"])) for s, t in (
        ("curated", pd.read_csv(tiny / "train_curated.csv", dtype=str)),
        ("test", pd.read_csv(tiny / "test_post_competition.csv", dtype=str)))}
    for split in ("curated", "test"):  # the curated and test files list every clip's true labels
        rows = truth[truth.split == split]
        assert [listed[split][f] for f in rows["fname"]] == rows["true_labels"].tolist()
    assert {lab for c in truth[truth.split == "curated"]["true_labels"] for lab in split_labels(c)} == set(DEFAULT_LABELS)
    assert set(truth["n_sources"]) == {"1", "2", "3"}


def test_the_noisy_part_has_its_share_of_wrong_label_sets(tiny):
    truth = _truth(tiny)
    noisy = truth[truth.split == "noisy"]
    listed = dict(pd.read_csv(tiny / "train_noisy.csv", dtype=str).values)
    wrong = [f for f, t in zip(noisy["fname"], noisy["true_labels"]) if listed[f] != t]
    assert len(wrong) == 8  # round(0.5 * 16)
    assert set(noisy["corruption"][noisy["fname"].isin(wrong)]) <= {"dropped", "added", "swapped"}
    assert (noisy["corruption"][~noisy["fname"].isin(wrong)] == "").all()
    for row in noisy[noisy["fname"].isin(wrong)].itertuples():
        true, got = set(split_labels(row.true_labels)), set(split_labels(listed[row.fname]))
        assert {"dropped": got < true and len(true - got) == 1, "added": got > true and len(got - true) == 1,
                "swapped": len(got) == len(true) and len(got - true) == 1}[row.corruption]
    assert (truth[truth.split != "noisy"]["corruption"] == "").all()


def test_the_plan_follows_its_shares():
    cfg = MultilabelDemoSettings(n_curated=420, n_noisy=300, n_test=60, noisy_wrong_share=0.3,
                                 source_shares=(0.5, 0.3, 0.2))
    plan = plan_multilabel(cfg)
    noisy = plan[plan.split == "noisy"]
    assert int((noisy["labels"] != noisy["true_labels"]).sum()) == 90
    assert set(noisy["corruption"]) == {"", "dropped", "added", "swapped"}
    counts = plan[plan.split == "curated"]["n_sources"].value_counts(normalize=True)
    assert counts[1] > counts[2] > counts[3] > 0.1
    heads = plan[plan.split == "curated"]["sources"].str.split(";").str[0].value_counts()
    assert set(heads) == {20}  # 420 curated clips, each label heads 20
    assert plan["fname"].is_unique
    test = plan[plan.split == "test"]
    assert (test["usage"] == "Ignored").sum() == 6 and (test["usage"] == "Public").sum() == 18


def test_the_audio_is_the_mixture_of_its_sources(tiny):
    truth = _truth(tiny).set_index("fname")
    cfg = MultilabelDemoSettings.from_mapping({k: v for k, v in TINY_ML.items() if k != "progress"})
    codes = {"curated": 11, "noisy": 12, "test": 13}
    plan = plan_multilabel(cfg).set_index("fname")
    for split, folder in (("curated", "train_curated"), ("noisy", "train_noisy"), ("test", "test")):
        for path in sorted((tiny / folder).iterdir())[:3]:
            audio, sr = sf.read(path)
            info = sf.info(path)
            assert (sr, info.channels, info.subtype) == (44100, 1, "PCM_16")
            assert len(audio) / sr == pytest.approx(float(truth.loc[path.name].duration), abs=1e-3)
            assert -21.0 < 20 * np.log10(np.abs(audio).max()) < -0.5
            # the file is render_mixture of the planned sources with the clip's own seed, (seed, split, index)
            planned = plan.loc[path.name]
            assert planned.split == split
            expected, _ = render_mixture(planned.sources.split(";"), (5, codes[split], int(planned["index"])), cfg)
            assert np.abs(audio - expected).max() < 2 / 32768
    lengths = truth["source_durations"].str.split(";").apply(lambda d: [float(x) for x in d])
    for arrangement, dur, srcs in zip(truth["arrangement"], truth["duration"].astype(float), lengths):
        # in sequence the sources follow one another; overlapping, the clip is as long as the longest
        assert dur == pytest.approx(sum(srcs) if arrangement == "sequence" else max(srcs), abs=2e-3)


def test_the_same_seed_gives_the_same_bytes_whatever_the_workers(tiny, tmp_path):
    again = generate_multilabel_demo(tmp_path / "again", **{**TINY_ML, "workers": 2})
    assert _files(again) == _files(tiny)
    match, mismatch, errors = filecmp.cmpfiles(tiny, again, _files(tiny), shallow=False)
    assert not mismatch and not errors
    other = generate_multilabel_demo(tmp_path / "other", **{**TINY_ML, "seed": 6, "n_noisy": 0})
    assert (pd.read_csv(other / "train_curated.csv")["fname"] != pd.read_csv(tiny / "train_curated.csv")["fname"]).all()
    assert not (other / "train_noisy.csv").exists() and not (other / "train_noisy").exists()  # n_noisy=0: no noisy part


def test_a_failed_build_leaves_nothing_and_nothing_is_overwritten(tmp_path, monkeypatch):
    def boom(job):
        raise RuntimeError("synthesis failed")

    monkeypatch.setattr(ml_write, "_mix_job", boom)
    with pytest.raises(RuntimeError, match="synthesis failed"):
        generate_multilabel_demo(tmp_path / "ml", **TINY_ML)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a build beside it
    monkeypatch.undo()
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "train_curated.csv").write_text("fname,labels\n")
    with pytest.raises(FileExistsError, match="train_curated.csv"):
        generate_multilabel_demo(tmp_path / "ml", **TINY_ML)
    assert ensure_multilabel_demo(tmp_path / "ml", **TINY_ML) == tmp_path / "ml"  # present: left alone
    assert _files(tmp_path / "ml") == ["train_curated.csv"]


def test_settings_are_checked():
    with pytest.raises(TypeError, match=r"unknown multi-label demo setting\(s\) \['n_train'\]"):
        MultilabelDemoSettings.from_mapping({"n_train": 10})
    with pytest.raises(ValueError, match="max_sources"):
        MultilabelDemoSettings(labels=("Cello", "Oboe"), n_curated=4, max_sources=3)
    with pytest.raises(ValueError, match="source_shares"):
        MultilabelDemoSettings(source_shares=(1.0, 1.0))
    with pytest.raises(ValueError, match="n_curated >= 21"):
        MultilabelDemoSettings(n_curated=10)
    with pytest.raises(ValueError, match="noisy_wrong_share"):
        MultilabelDemoSettings(noisy_wrong_share=1.5)
    with pytest.raises(ValueError, match="cannot be voiced"):
        MultilabelDemoSettings(labels=("Cello", "Bark"))


def test_cli(tmp_path, capsys):
    demo_cli.main(["--multi-label", "--root", str(tmp_path / "cli"), "--n-curated", "21", "--n-noisy", "3",
                   "--n-test", "2", "--max-sources", "2", "--seed", "1", "--workers", "1"])
    assert str(tmp_path / "cli") in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "cli" / "train_noisy.csv")) == 3
    assert _truth(tmp_path / "cli")["n_sources"].astype(int).max() <= 2


def test_the_layout_reader_reads_the_generated_folder(tiny):
    from fstag.data.layouts import open_layout

    layout = open_layout({"layout": "fsdkaggle2019", "root": str(tiny)})
    assert layout.task == "multi_label" and layout.is_present()
    layout.check_audio()
    assert layout.labels() == sorted(DEFAULT_LABELS)
    table = layout.train_table()
    assert table.groupby("source").size().to_dict() == {"curated": 24, "noisy": 16}
    assert table["manually_verified"].tolist() == [True] * 24 + [False] * 16
    assert layout.audio_path("train", table["fname"].iloc[-1]).parent.name == "train_noisy"
    truth = layout.test_labels()
    assert truth["fname"].tolist() == layout.test_fnames() and set(truth["usage"]) <= {"Public", "Private", "Ignored"}


# The end-to-end job: a tiny multi-label demo (42 curated clips, 2 per label, 21 noisy, 12 test, sources of
# at most 3 s) through the real entry points, each step as users run it
TINY_ML_DATA = ["data=demo_multilabel", "data.demo.n_curated=42", "data.demo.n_noisy=21", "data.demo.n_test=12",
                "data.demo.max_duration=3.0", "data.demo.seed=7"]


@pytest.mark.slow(seconds=70)
def test_a_multilabel_job_end_to_end(tmp_path):
    import json
    import re
    import shutil

    from mlflow.tracking import MlflowClient

    from fstag.data.layouts import open_layout
    from fstag.ensemble.submission import score_probabilities, validate_probability_submission
    from fstag.core.task import get_task
    from tests.conftest import TEST_CONF, Project, make_env

    project = Project(root=tmp_path, env=make_env(tmp_path))
    train = [f"hydra.searchpath=[file://{TEST_CONF}]", "experiment=tiny_multilabel", *TINY_ML_DATA,
             "aug=none,specmask_concat", "fold=0"]
    project.run("preprocess.py", *TINY_ML_DATA)
    project.run("train.py", "-m", *train)
    project.run("train.py", "-m", *train, "stage=retrain_val")
    jobs = tmp_path / "multirun" / "demo_multilabel" / "cnn_small"
    data = tmp_path / "data" / "demo_multilabel"
    layout = open_layout({"layout": "fsdkaggle2019", "root": str(data)})
    labels, table = layout.labels(), layout.train_table()
    curated = set(table["fname"][table["source"] == "curated"])

    client = MlflowClient(project.tracking_uri)
    for aug in ("none", "specmask_concat"):
        for suffix in ("", "_r"):
            job = jobs / aug / "default" / f"fold_0{suffix}"
            info = json.loads((job / "run.json").read_text())
            assert info["task"] == "multi_label" and info["complete"] and info["labels"] == labels
            oof = np.load(job / "oof.npz")
            assert oof["targets"].dtype == np.uint8 and oof["targets"].shape == (len(oof["fnames"]), 21)
            assert set(np.unique(oof["targets"])) == {0, 1} and (oof["targets"].sum(axis=1) >= 1).all()
            assert ((oof["probs"] >= 0) & (oof["probs"] <= 1)).all()
            assert set(oof["fnames"]) <= curated  # the noisy clips train, never validate
            # the OOF targets are the curated label sets
            listed = dict(zip(table["fname"], table["label"]))
            for f, row in zip(oof["fnames"], oof["targets"]):
                assert sorted(labels[j] for j in np.flatnonzero(row)) == sorted(split_labels(listed[f]))
            run = client.get_run((job / "mlflow_run_id").read_text().strip())
            assert run.data.tags["fstag.task"] == "multi_label"
            if not suffix:
                assert info["best_monitor"]["name"] == "val_lwlrap"
                assert {"val_lwlrap", "val_map", "best_val_lwlrap"} <= set(run.data.metrics)
                assert 0 <= run.data.metrics["val_lwlrap"] <= 1 and 0 <= run.data.metrics["val_map"] <= 1

    res = project.run("predict.py", *TINY_ML_DATA, "runs=[cnn_small/none/fold_0]")
    (out,) = (tmp_path / "outputs" / "predict").iterdir()
    probs = pd.read_csv(out / "probs.csv")
    assert list(probs.columns) == ["fname", *labels] and probs["fname"].tolist() == layout.test_fnames()
    tags = pd.read_csv(out / "tags.csv", keep_default_na=False)
    assert tags["fname"].tolist() == layout.test_fnames() and {"labels", "label1", "prob1"} <= set(tags.columns)
    assert "predictions: " in res.stdout

    # the run as an MLflow model tags the test clips as predict.py does from their files: per-label probabilities
    # and the labels at or above the threshold (fstag.serve)
    from fstag.serve.tagger import Tagger

    test_dir = data / "test"
    project.run("predict.py", *TINY_ML_DATA, "runs=[cnn_small/none/fold_0]", f"input={test_dir}",
                "hydra.run.dir=outputs/predict_folder")
    by_file = pd.read_csv(tmp_path / "outputs" / "predict_folder" / "probs.csv")
    folder_tags = pd.read_csv(tmp_path / "outputs" / "predict_folder" / "tags.csv", keep_default_na=False)
    project.run("-m fstag.export", *TINY_ML_DATA, "runs=[cnn_small/none/fold_0]", "hydra.run.dir=outputs/export_ml")
    tagger = Tagger.load(tmp_path / "outputs" / "export_ml" / "model" / "artifacts" / "bundle")
    rows = tagger.tag([{"path": str(test_dir / f)} for f in by_file["fname"]]).to_dict(orient="records")
    served = np.array([[r["probs"][lab] for lab in labels] for r in rows])
    assert np.abs(served - by_file[labels].to_numpy()).max() < 1e-5
    assert [",".join(r["labels"]) for r in rows] == folder_tags["labels"].tolist()
    # as ONNX, the torch-free path (librosa features, numpy crops, sigmoid probabilities): the same answers
    project.run("-m fstag.export", *TINY_ML_DATA, "runs=[cnn_small/none/fold_0]", "format=onnx",
                "hydra.run.dir=outputs/export_ml_onnx")
    onnx = Tagger.load(tmp_path / "outputs" / "export_ml_onnx" / "model" / "artifacts" / "bundle")
    assert onnx.backend == "onnx"
    rows = onnx.tag([{"path": str(test_dir / f)} for f in by_file["fname"]]).to_dict(orient="records")
    served = np.array([[r["probs"][lab] for lab in labels] for r in rows])
    assert np.abs(served - by_file[labels].to_numpy()).max() < 1e-5
    assert [",".join(r["labels"]) for r in rows] == folder_tags["labels"].tolist()

    first = project.run("blend.py", *TINY_ML_DATA, "blend=demo_multilabel")
    submission = tmp_path / "submissions" / "demo_multilabel.csv"
    validate_probability_submission(submission, data / "sample_submission.csv", labels)
    assert submission.read_text().splitlines()[0] == (data / "sample_submission.csv").read_text().splitlines()[0]
    match = re.search(r"^test lwlrap ([0-9.]+) \(mAP ([0-9.]+), public ([0-9.]+), private ([0-9.]+)\) on (\S+)$",
                      first.stdout, re.MULTILINE)
    assert match and match.group(5) == str(data / "test_post_competition.csv"), first.stdout[-2000:]
    sub = pd.read_csv(submission)
    scores = score_probabilities(get_task("multi_label"), sub["fname"].tolist(), sub[labels].to_numpy(), labels,
                                 layout.test_labels())
    assert float(match.group(1)) == pytest.approx(scores["lwlrap"], abs=1e-4)
    assert float(match.group(2)) == pytest.approx(scores["map"], abs=1e-4)

    # rebuilt byte for byte from the blend's saved config (docs/blending.md)
    built = submission.read_bytes()
    (saved,) = (tmp_path / "outputs" / "blend" / "demo_multilabel").glob("*/config.yaml")
    copy = tmp_path / "saved"
    copy.mkdir()
    shutil.copy(saved, copy / "config.yaml")
    submission.unlink()
    project.run("blend.py", "--config-path", str(copy), "--config-name", "config")
    assert submission.read_bytes() == built


def test_the_demo_job_runs_the_multilabel_presets(monkeypatch, tmp_path, capsys):
    """``python -m fstag.demo_job --task multi_label``: the steps it runs and what it prints (the steps
    themselves run end to end above; the single-label job in tests/test_main_job.py)."""
    import fstag.demo_job as demo_job

    calls = []

    def fake_run(step, args):
        calls.append((step, args))
        return ["submission: /x/submissions/demo_multilabel.csv",
                "test lwlrap 0.8000 (mAP 0.7000, public 0.8100, private 0.7900) on /x/test_post_competition.csv"] \
            if step == "blend.py" else []

    monkeypatch.setattr(demo_job, "_run", fake_run)
    monkeypatch.setenv("FSTAG_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    demo_job.main(["--task", "multi_label", "--jobs", "1"])
    assert [c[0] for c in calls] == ["preprocess.py", "train.py", "train.py", "predict.py", "blend.py"]
    assert calls[0][1] == ["data=demo_multilabel"]
    assert calls[1][1] == ["-m", "experiment=demo_multilabel", "fold=0", "aug=none,specmask_concat", "data=demo_multilabel"]
    assert calls[2][1][-1] == "stage=retrain_val"
    assert calls[3][1] == ["data=demo_multilabel", "runs=[cnn_small/none/fold_0,cnn_small/specmask_concat/fold_0]"]
    assert calls[4][1] == ["data=demo_multilabel", "blend=demo_multilabel",
                           "blend.members=[cnn_small/none/fold_0,cnn_small/none/fold_0_r,"
                           "cnn_small/specmask_concat/fold_0,cnn_small/specmask_concat/fold_0_r]"]
    out = capsys.readouterr().out
    assert "test lwlrap 0.8000 (mAP 0.7000, public 0.8100, private 0.7900)" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in out
    assert "python -m fstag.runs data=demo_multilabel --sort val_lwlrap" in out
