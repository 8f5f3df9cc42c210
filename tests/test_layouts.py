"""The dataset layouts FSDKaggle2019, FSD50K and class folders (fstag/data/layouts/), each read from a tiny
folder this file writes (CSV files and short real WAV files): their train tables, vocabularies, test clips,
audio paths, test labels and digests; one clear error per bad row; the multi-label stratified folds;
FSD50K's given split through train.py's composed config; and a class-folders data set through the real
entry points, preprocess.py to blend.py."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from fstag.data.layouts import DatasetError, open_layout
from tests.conftest import TINY_TRAIN, Project, make_env

SR = 16000
VOCAB_2019 = ["Meow", "Bark", "Purr", "Chirp"]  # sample_submission.csv's order, deliberately not sorted


def wav(path: Path, kind: str = "tone", freq: float = 440.0, seconds: float = 0.25, seed: int = 0) -> Path:
    """A short mono 16-bit WAV: a sine at ``freq`` or white noise, with a little noise of its own."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * rng.standard_normal(t.size) if kind == "noise" else 0.4 * np.sin(2 * np.pi * freq * t)
    y = y + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
    return path


def write_csv(path: Path, header: list[str] | None, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)  # quotes a cell holding commas, as Kaggle's files do
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


# FSDKaggle2019 -------------------------------------------------------------------------------------------
CURATED = [["c0.wav", "Bark"], ["c1.wav", "Meow,Purr"], ["c2.wav", " Chirp , Bark"], ["c3.wav", "Purr"]]
NOISY = [["n0.wav", "Chirp"], ["n1.wav", "Bark,Meow"]]
TESTS_2019 = ["t0.wav", "t1.wav", "t2.wav"]


def write_2019(root: Path, curated=CURATED, noisy=NOISY, audio: bool = True) -> Path:
    write_csv(root / "train_curated.csv", ["fname", "labels"], curated)
    if noisy is not None:
        write_csv(root / "train_noisy.csv", ["fname", "labels"], noisy)
    write_csv(root / "sample_submission.csv", ["fname", *VOCAB_2019], [[f, *["0"] * 4] for f in TESTS_2019])
    write_csv(root / "test_post_competition.csv", ["fname", "labels", "usage"],
              [["t0.wav", "Bark,Chirp", "Public"], ["t1.wav", "Meow", "Private"], ["t2.wav", "", "Ignored"]])
    if audio:
        for part, rows in (("train_curated", curated), ("train_noisy", noisy or []), ("test", [[f] for f in TESTS_2019])):
            for i, row in enumerate(rows):
                wav(root / part / row[0], seed=i)
    return root


def layout_2019(root: Path, **options):
    return open_layout({"layout": "fsdkaggle2019", "root": str(root), **options})


def test_fsdkaggle2019_reads_its_folder(tmp_path):
    root = write_2019(tmp_path / "fsd2019")
    lay = layout_2019(root)
    assert lay.task == "multi_label" and lay.is_present()
    assert lay.labels() == VOCAB_2019  # the sample submission's column order, not sorted
    table = lay.train_table()
    assert table["fname"].tolist() == ["c0.wav", "c1.wav", "c2.wav", "c3.wav", "n0.wav", "n1.wav"]
    assert table["label"].tolist() == ["Bark", "Meow,Purr", "Chirp,Bark", "Purr", "Chirp", "Bark,Meow"]
    assert table["manually_verified"].tolist() == [True] * 4 + [False] * 2
    assert table["source"].tolist() == ["curated"] * 4 + ["noisy"] * 2
    assert table["in_folds"].tolist() == [True] * 4 + [False] * 2
    assert lay.test_fnames() == TESTS_2019
    assert lay.audio_path("train", "c1.wav") == root / "train_curated" / "c1.wav"
    assert lay.audio_path("train", "n1.wav") == root / "train_noisy" / "n1.wav"
    assert lay.audio_path("test", "t2.wav") == root / "test" / "t2.wav"
    assert lay.sample_submission == root / "sample_submission.csv"
    truth = lay.test_labels()
    assert truth[["fname", "label", "usage"]].values.tolist() == [
        ["t0.wav", "Bark,Chirp", "Public"], ["t1.wav", "Meow", "Private"], ["t2.wav", "", "Ignored"]]
    assert lay.test_labels_file() == root / "test_post_competition.csv"
    lay.check_audio()  # every listed file is there
    digest = lay.digest()
    assert digest == layout_2019(root).digest() and len(digest) == 64
    write_csv(root / "train_noisy.csv", ["fname", "labels"], NOISY[:1])  # another noisy part: another data set
    assert layout_2019(root).digest() != digest

    # without train_noisy.csv: the curated rows only, and data.sources.noisy is not an error
    (root / "train_noisy.csv").unlink()
    lay = layout_2019(root)
    assert lay.train_table()["source"].unique().tolist() == ["curated"]
    from fstag.train.fold_data import TrainingSetupError, source_settings

    data = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "fsdkaggle2019.yaml")
    assert source_settings(data, lay.train_table()["source"], lay.sources) == {
        "curated": {"use": True, "weight": 1.0, "from_epoch": 0}}
    data.sources.noisey = {"use": False}  # a misspelt source stays an error
    with pytest.raises(TrainingSetupError, match=r"data.sources.noisey: this data set's train rows come from \['curated'\]"):
        source_settings(data, lay.train_table()["source"], lay.sources)


@pytest.mark.parametrize("csv_name, rows, pattern", [
    ("train_curated.csv", [["c0.wav", "Bark"], ["c1.wav", "Meow,Woof"]],
     r"train_curated.csv: row 3: label 'Woof' is not in the vocabulary \(4 labels; the closest: "),
    ("train_curated.csv", [["c0.wav", "Bark"], ["c1.wav", ""]], r"train_curated.csv: row 3: column 'labels' is empty"),
    ("train_noisy.csv", [["n0.wav", "Bark, Purr,Bark"]], r"train_noisy.csv: row 2: label 'Bark' is listed twice"),
    ("train_noisy.csv", [["n0.wav", "Bark"], ["c1.wav", "Purr"]],
     r"fname 'c1.wav' is listed in both .*train_curated.csv \(row 3\) and .*train_noisy.csv \(row 3\)"),
])
def test_fsdkaggle2019_bad_rows(tmp_path, csv_name, rows, pattern):
    root = write_2019(tmp_path, audio=False)
    write_csv(root / csv_name, ["fname", "labels"], rows)
    with pytest.raises(DatasetError, match=pattern):
        layout_2019(root).train_table()


def test_fsdkaggle2019_bad_vocabulary_and_test_labels(tmp_path):
    root = write_2019(tmp_path, audio=False)
    write_csv(root / "sample_submission.csv", ["fname", "Bark", "Meow", "Bark"], [["t0.wav", "0", "0", "0"]])
    with pytest.raises(DatasetError, match=r"sample_submission.csv: row 1: label 'Bark' is a column twice"):
        layout_2019(root).labels()
    write_2019(root, audio=False)
    write_csv(root / "test_post_competition.csv", ["fname", "labels", "usage"],
              [["t0.wav", "Bark", "Public"], ["t1.wav", "Mewo", "Private"]])
    with pytest.raises(DatasetError, match=r"test_post_competition.csv: row 3: label 'Mewo' is not in the vocabulary "
                                           r"\(4 labels; the closest: Meow"):
        layout_2019(root).test_labels()
    write_csv(root / "test_post_competition.csv", ["fname", "labels"], [["t9.wav", "Bark"]])
    with pytest.raises(DatasetError, match=r"test_post_competition.csv: row 2: fname 't9.wav' is not a test clip"):
        layout_2019(root).test_labels()


def test_a_listed_file_that_is_missing_is_one_error_naming_its_row(tmp_path):
    """preprocess.py asks the layout before computing anything (fstag.data.job.preprocess)."""
    from fstag.data.feature_config import FeatureConfig
    from fstag.data.job import preprocess

    root = write_2019(tmp_path / "fsd2019")
    (root / "train_noisy" / "n1.wav").unlink()
    (root / "test" / "t0.wav").unlink()
    with pytest.raises(DatasetError, match=r"train_noisy.csv: row 3: fname 'n1.wav': its audio file .*n1.wav is "
                                           r"missing \(.*train_noisy holds 1 entries\); 1 more listed clip"):
        preprocess(layout_2019(root), tmp_path / "features", FeatureConfig())
    assert not (tmp_path / "features").exists()  # nothing computed

    root = write_50k(tmp_path / "fsd50k")
    (root / "FSD50K.dev_audio" / "103.wav").unlink()
    with pytest.raises(DatasetError, match=r"dev.csv: row 5: fname '103': its audio file .*103.wav is missing"):
        layout_50k(root).check_audio()


# FSD50K --------------------------------------------------------------------------------------------------
VOCAB_50K = [["0", "Zipper", "/m/01"], ["1", "Bark", "/m/02"], ["2", "Chirp", "/m/03"]]
DEV = [["100", "Bark", "/m/02", "train"], ["101", "Zipper,Bark", "/m/01,/m/02", "train"],
       ["102", "Chirp", "/m/03", "val"], ["103", "Bark,Chirp", "/m/02,/m/03", "train"],
       ["104", "Zipper", "/m/01", "val"], ["105", "Chirp,Zipper", "/m/03,/m/01", "train"]]
EVAL = [["200", "Chirp", "/m/03"], ["201", "Bark,Zipper", "/m/02,/m/01"]]


def write_50k(root: Path, dev=DEV, audio: bool = True) -> Path:
    gt = root / "FSD50K.ground_truth"
    write_csv(gt / "vocabulary.csv", None, VOCAB_50K)
    write_csv(gt / "dev.csv", ["fname", "labels", "mids", "split"], dev)
    write_csv(gt / "eval.csv", ["fname", "labels", "mids"], EVAL)
    if audio:
        for folder, rows in (("FSD50K.dev_audio", dev), ("FSD50K.eval_audio", EVAL)):
            for i, row in enumerate(rows):
                labels = row[1].split(",")
                wav(root / folder / f"{row[0]}.wav", "noise" if "Zipper" in labels else "tone",
                    500 if "Bark" in labels else 3000, seed=i)
    return root


def layout_50k(root: Path):
    return open_layout({"layout": "fsd50k", "root": str(root)})


def test_fsd50k_reads_its_folder(tmp_path):
    root = write_50k(tmp_path)
    lay = layout_50k(root)
    assert lay.task == "multi_label" and lay.is_present()
    assert lay.labels() == ["Zipper", "Bark", "Chirp"]  # vocabulary.csv's order
    table = lay.train_table()
    assert table["fname"].tolist() == ["100", "101", "102", "103", "104", "105"]  # ids, no extension
    assert table["label"].tolist() == [r[1] for r in DEV]
    assert table["fold"].tolist() == [1, 1, 0, 1, 0, 1]  # val rows are the given fold 0
    assert table["manually_verified"].all() and set(table["source"]) == {"dev"}
    assert lay.test_fnames() == ["200", "201"]
    assert lay.audio_path("train", "103") == root / "FSD50K.dev_audio" / "103.wav"
    assert lay.audio_path("test", "201") == root / "FSD50K.eval_audio" / "201.wav"
    assert lay.sample_submission is None
    assert lay.test_labels().values.tolist() == [["200", "Chirp"], ["201", "Bark,Zipper"]]
    assert lay.test_labels_file() == root / "FSD50K.ground_truth" / "eval.csv"
    lay.check_audio()
    assert lay.digest() == layout_50k(root).digest()


@pytest.mark.parametrize("row, pattern", [
    (["103", "Bark,Chrip", "", "train"], r"dev.csv: row 5: label 'Chrip' is not in the vocabulary \(3 labels; the closest: Chirp"),
    (["103", "", "", "train"], r"dev.csv: row 5: column 'labels' is empty"),
    (["103", "Chirp,Chirp", "", "train"], r"dev.csv: row 5: label 'Chirp' is listed twice in 'Chirp,Chirp'"),
    (["103", "Chirp", "", "test"], r"dev.csv: row 5: column 'split' is 'test'; expected one of \['val', 'train'\]"),
])
def test_fsd50k_bad_rows(tmp_path, row, pattern):
    dev = [*DEV[:3], row, *DEV[4:]]
    root = write_50k(tmp_path, dev=dev, audio=False)
    with pytest.raises(DatasetError, match=pattern):
        layout_50k(root).train_table()


def test_fsd50k_bad_vocabulary(tmp_path):
    root = write_50k(tmp_path, audio=False)
    write_csv(root / "FSD50K.ground_truth" / "vocabulary.csv", None, [*VOCAB_50K, ["3", "Bark", "/m/04"]])
    with pytest.raises(DatasetError, match=r"vocabulary.csv: row 4: label 'Bark' is listed twice \(rows 2 and 4\)"):
        layout_50k(root).labels()


def compose_train(overrides: list[str], tmp_path: Path):
    """train.py's config as the running job resolves it (its output folder and hydra's job set)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from fstag.core.config import CONFIG_DIR

    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "output")
        cfg.hydra.job.num, cfg.hydra.job.id = 0, "0"
    HydraConfig.instance().set_config(cfg)
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    finally:
        HydraConfig.instance().cfg = None
    del resolved["hydra"]
    return resolved


def test_fsd50k_fold_given_is_its_own_validation_split(tmp_path, monkeypatch):
    """fold=given composes to the fold_0 job folder and trains on dev.csv's train rows, validates on its val rows."""
    import fstag.runs.resolvers  # noqa: F401
    from fstag.data.feature_config import FeatureConfig
    from fstag.data.job import PreprocessSettings, preprocess
    from fstag.train.fold_data import load_fold_data

    monkeypatch.setenv("FSTAG_ROOT", str(tmp_path))
    root = write_50k(tmp_path / "data" / "fsd50k")
    cfg = compose_train(["data=fsd50k", "fold=given", "arch=cnn_small"], tmp_path)
    assert cfg.folds.method == "given" and cfg.task.name == "multi_label"
    assert cfg.job_dir == str(tmp_path / "multirun" / "fsd50k" / "cnn_small" / "none" / "default" / "fold_0")
    preprocess(open_layout(cfg.data), cfg.data.features_dir, FeatureConfig.from_cfg(cfg.features),
               PreprocessSettings(num_workers=1, progress=False))
    data = load_fold_data(cfg)
    assert data.fold_fnames == ["102", "104"]  # the val rows
    assert sorted(data.train_store.fnames[i] for i in data.train_rows.index) == ["100", "101", "103", "105"]
    assert data.val_rows.targets.tolist() == [[0, 0, 1], [1, 0, 0]]  # multi-label targets, vocabulary order
    assert data.fold_split["method"] == "given" and data.fold_split["train_csv_sha256"] == layout_50k(root).digest()
    with pytest.raises(Exception, match="with folds.method=given the data set has one validation split"):
        load_fold_data(compose_train(["data=fsd50k", "fold=1", "arch=cnn_small"], tmp_path))


def test_fsdkaggle2019_noisy_clips_train_and_never_validate(tmp_path, monkeypatch):
    """The data config's sources through load_fold_data: noisy rows train (weight 0.5, from their epoch), are in
    no validation fold, and data.sources.noisy.use=false leaves them out; the split stays the same."""
    import fstag.runs.resolvers  # noqa: F401
    from fstag.data.feature_config import FeatureConfig
    from fstag.data.job import PreprocessSettings, preprocess
    from fstag.train.fold_data import load_fold_data

    monkeypatch.setenv("FSTAG_ROOT", str(tmp_path))
    write_2019(tmp_path / "data" / "fsdkaggle2019")
    base = ["data=fsdkaggle2019", "arch=cnn_small", "folds.n_splits=2", "fold=0"]
    cfg = compose_train(base + ["data.sources.noisy.from_epoch=3"], tmp_path)
    assert cfg.task.name == "multi_label" and cfg.folds.method == "stratified"
    preprocess(open_layout(cfg.data), cfg.data.features_dir, FeatureConfig.from_cfg(cfg.features),
               PreprocessSettings(num_workers=1, progress=False))
    data = load_fold_data(cfg)
    names = lambda rows: [data.train_store.fnames[i] for i in rows.index]  # noqa: E731
    assert set(data.fold_fnames) < {"c0.wav", "c1.wav", "c2.wav", "c3.wav"} and len(data.fold_fnames) == 2
    train = dict(zip(names(data.train_rows), zip(data.train_rows.weights.tolist(), data.train_rows.start_epoch.tolist())))
    assert train["n0.wav"] == train["n1.wav"] == (0.5, 3)
    assert sorted(train) == sorted(["n0.wav", "n1.wav", *({"c0.wav", "c1.wav", "c2.wav", "c3.wav"} - set(data.fold_fnames))])
    assert data.train_rows.targets.shape == (4, 4) and data.labels == VOCAB_2019
    curated_only = load_fold_data(compose_train(base + ["data.sources.noisy.use=false"], tmp_path))
    assert not {"n0.wav", "n1.wav"} & {curated_only.train_store.fnames[i] for i in curated_only.train_rows.index}
    assert curated_only.fold_fnames == data.fold_fnames and curated_only.fold_split == data.fold_split


# multi-label folds ---------------------------------------------------------------------------------------
def test_multilabel_stratified_folds_keep_every_label_in_every_fold():
    from fstag.core.task import split_labels
    from fstag.data.folds import assign_folds

    rng = np.random.default_rng(3)
    vocab = [f"L{j}" for j in range(8)]
    common = rng.choice(8, size=80, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])
    cells = [",".join(sorted({vocab[c], *rng.choice(vocab, size=int(rng.integers(0, 3)), replace=False)}))
             for c in common]
    cells += ["Rare", "Rare,L0", "Rare,L1"]  # a label with fewer rows than folds
    table = pd.DataFrame({"fname": [f"{i}.wav" for i in range(len(cells))], "label": cells})
    folds = assign_folds(table, n_splits=5, seed=2018, multi_label=True)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    assert np.bincount(folds).min() >= len(cells) // 5 - 2  # balanced
    counts = pd.Series([lab for c in cells for lab in split_labels(c)]).value_counts()
    for lab, n in counts.items():
        in_folds = {int(f) for f, c in zip(folds, cells) if lab in split_labels(c)}
        assert len(in_folds) == min(n, 5), (lab, n, in_folds)
    assert (folds == assign_folds(table, n_splits=5, seed=2018, multi_label=True)).all()  # seeded


# class folders -------------------------------------------------------------------------------------------
def write_folders(root: Path, n_per_label: int = 4, seconds: float = 0.25) -> Path:
    """train/<label>/ with distinct sounds per label (a low tone, a high tone, noise), one nested subfolder,
    hidden and non-audio files; test/ with labelled and loose clips."""
    sounds = {"Alpha": ("tone", 300.0), "Beta": ("tone", 3000.0), "Gamma": ("noise", 0.0)}
    for j, (label, (kind, freq)) in enumerate(sounds.items()):
        for i in range(n_per_label):
            sub = "park/" if (label == "Beta" and i == 0) else ""
            wav(root / "train" / label / f"{sub}{i:03d}.wav", kind, freq * (1 + 0.05 * i), seconds, seed=10 * j + i)
        wav(root / "test" / label / "t.wav", kind, freq * 1.02, seconds, seed=100 + j)
    wav(root / "test" / "loose.wav", "tone", 300.0, seconds, seed=200)
    wav(root / "test" / "unsorted" / "u.wav", "noise", 0.0, seconds, seed=201)
    (root / "train" / "README.txt").write_text("not a clip\n")
    (root / "train" / "Alpha" / "notes.txt").write_text("not a clip\n")
    wav(root / "train" / ".trash" / "old.wav", seed=300)          # hidden folder
    wav(root / "train" / "Alpha" / ".hidden.wav", seed=301)         # hidden file
    return root


def layout_folders(root: Path, **options):
    return open_layout({"layout": "folders", "root": str(root), **options})


def test_folders_reads_its_folder(tmp_path):
    root = write_folders(tmp_path / "clips")
    wav(root / "train" / "Gamma" / "cache" / "x.wav", seed=400)  # inside data.features_dir: never a clip
    lay = layout_folders(root, features_dir=str(root / "train" / "Gamma" / "cache"))
    assert lay.task == "single_label" and lay.is_present() and lay.sample_submission is None
    assert lay.labels() == ["Alpha", "Beta", "Gamma"]
    table = lay.train_table()
    expected = ["Alpha/000.wav", "Alpha/001.wav", "Alpha/002.wav", "Alpha/003.wav", "Beta/001.wav", "Beta/002.wav",
                "Beta/003.wav", "Beta/park/000.wav", "Gamma/000.wav", "Gamma/001.wav", "Gamma/002.wav", "Gamma/003.wav"]
    assert table["fname"].tolist() == expected
    assert table["label"].tolist() == [f.split("/")[0] for f in expected]  # nested clips keep their top folder
    assert table["manually_verified"].all() and set(table["source"]) == {"train"}
    assert lay.audio_path("train", "Beta/park/000.wav") == root / "train" / "Beta" / "park" / "000.wav"
    assert lay.test_fnames() == ["Alpha/t.wav", "Beta/t.wav", "Gamma/t.wav", "loose.wav", "unsorted/u.wav"]
    assert lay.audio_path("test", "unsorted/u.wav") == root / "test" / "unsorted" / "u.wav"
    assert lay.test_labels().values.tolist() == [["Alpha/t.wav", "Alpha"], ["Beta/t.wav", "Beta"], ["Gamma/t.wav", "Gamma"]]
    lines = "".join(sorted(f"{f}\t{f.split('/')[0]}\n" for f in expected))
    assert lay.digest() == hashlib.sha256(lines.encode()).hexdigest() == layout_folders(root, features_dir=str(
        root / "train" / "Gamma" / "cache")).digest()
    with pytest.raises(DatasetError, match=r"label folder 'Alpha' holds no audio file \(.flac\)"):
        layout_folders(root, extensions=["flac"]).train_table()

    shutil.rmtree(root / "test")  # no test/: no test split
    lay = layout_folders(root)
    assert lay.test_fnames() == [] and lay.test_labels() is None and lay.test_labels_file() is None
    assert len(lay.train_table()) == 13  # the cache folder is a clip folder once it is not data.features_dir


@pytest.mark.parametrize("make, pattern", [
    (lambda r: wav(r / "train" / "stray.wav"), r"train/stray.wav: an audio file directly in .*train has no label"),
    (lambda r: (r / "train" / "Delta").mkdir() or (r / "train" / "Delta" / "a.txt").write_text("x"),
     r"train/Delta: label folder 'Delta' holds no audio file"),
    (lambda r: wav(r / "train" / "Dog bark" / "a.wav"), r"label folder 'Dog bark' holds whitespace or a comma.*'Dog_bark'"),
])
def test_folders_bad_trees(tmp_path, make, pattern):
    root = write_folders(tmp_path, n_per_label=1, seconds=0.05)
    make(root)
    with pytest.raises(DatasetError, match=pattern):
        layout_folders(root).train_table()


@pytest.mark.slow(seconds=45)
def test_folders_end_to_end(tmp_path):
    """preprocess.py, train.py, predict.py and blend.py on a folder of class folders."""
    root = write_folders(tmp_path / "clips", n_per_label=5, seconds=1.0)  # a clip of each label in each of 5 folds
    proj = Project(root=tmp_path / "project", env=make_env(tmp_path / "project"))
    proj.root.mkdir()
    data = ["data=folders", f"data.root={root}"]
    # a new interpreter: forked from the warm one (tests/warm_python.py imports torchmetrics), preprocess.py's
    # torch-in-threads run ends in a C++ std::system_error abort at exit on this machine (rc -6)
    proj.run("preprocess.py", *data, fresh=True)
    assert (root / "features").is_dir() and not (root / "train" / "features").exists()
    proj.run("train.py", *data, *TINY_TRAIN)
    jobs = sorted(proj.root.glob("multirun/folders/cnn_small/*/*/fold_0/run.json"))
    assert len(jobs) == 1, jobs
    job = jobs[0].parent
    info = json.loads(jobs[0].read_text())
    assert info["complete"] and info["task"] == "single_label" and info["labels"] == ["Alpha", "Beta", "Gamma"]
    test_fnames = ["Alpha/t.wav", "Beta/t.wav", "Gamma/t.wav", "loose.wav", "unsorted/u.wav"]
    with np.load(job / "test.npz") as z:
        assert z["fnames"].tolist() == test_fnames and z["probs"].shape == (5, 3)
    train = layout_folders(root).train_table()
    with np.load(job / "oof.npz") as z:  # the validation fold: one clip of each label (5 a label, 5 folds)
        assert sorted(train["label"][train["fname"].isin(z["fnames"].tolist())]) == ["Alpha", "Beta", "Gamma"]
        assert z["targets"].tolist() == [0, 1, 2]

    member = str(job.relative_to(proj.root / "multirun" / "folders"))
    out = proj.root / "pred"
    proj.run("predict.py", *data, f"runs=[{member}]", f"hydra.run.dir={out}")
    top3 = pd.read_csv(out / "top3.csv", keep_default_na=False)
    assert top3["fname"].tolist() == test_fnames and set(top3["label1"]) <= {"Alpha", "Beta", "Gamma"}

    res = proj.run("blend.py", *data, "blend.name=folders_x", f"blend.members=[{member}]", "blend.weights=null")
    sub = pd.read_csv(proj.root / "submissions" / "folders_x.csv", keep_default_na=False)
    assert sub["fname"].tolist() == test_fnames  # every test clip, the unlabelled ones too
    assert all(sorted(c.split(" ")) == ["Alpha", "Beta", "Gamma"] for c in sub["label"])
    assert "test MAP@3" in res.stdout and str(root / "test") in res.stdout
    blend = json.loads(next((proj.root / "outputs" / "blend" / "folders_x").glob("*/blend.json")).read_text())
    assert blend["task"] == "single_label" and blend["metrics"]["test_n_scored"] == 3  # the labelled test clips
