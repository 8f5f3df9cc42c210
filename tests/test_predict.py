"""predict.py on trained runs: the test split, a folder with a broken file, several runs, an MLflow run id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fstag.metrics import geometric_mean

pytestmark = pytest.mark.slow


def _outputs(project, name: str) -> tuple[pd.DataFrame, dict]:
    out = project.root / "outputs" / "predict" / name
    table = pd.read_csv(out / "top3.csv", keep_default_na=False)
    with np.load(out / "probs.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return table, arrays


def test_predict_test_split_by_name_and_by_mlflow_run_id(swept_project):
    p = swept_project
    p.run("predict.py", "runs=[cnn_small/none/fold_0]", "tta=3", "hydra.run.dir=outputs/predict/by_name")
    table, arrays = _outputs(p, "by_name")
    sample = pd.read_csv(p.root / "data" / "demo" / "sample_submission.csv")
    assert table["fname"].tolist() == sample["fname"].tolist()  # every clip, in order
    labels = json.loads((p.runs_dir / "cnn_small/none/default/fold_0/run.json").read_text())["labels"]
    assert set(table["label1"]) <= set(labels) and not table["flagged"].any()
    np.testing.assert_allclose(arrays["probs"].sum(1), 1.0, atol=1e-5)
    assert (table["prob1"] >= table["prob2"]).all() and (table["prob2"] >= table["prob3"]).all()

    run_id = (p.runs_dir / "cnn_small/none/default/fold_0/mlflow_run_id").read_text().strip()
    p.run("predict.py", f"runs=[{run_id}]", "tta=3", "hydra.run.dir=outputs/predict/by_id")
    _, by_id = _outputs(p, "by_id")
    np.testing.assert_array_equal(by_id["probs"], arrays["probs"])  # deterministic TTA, same run


def test_two_runs_are_combined_by_geometric_mean(swept_project):
    p = swept_project
    for k in (0, 1):
        p.run("predict.py", f"runs=[cnn_small/none/fold_{k}]", "tta=2", f"hydra.run.dir=outputs/predict/one_{k}")
    p.run("predict.py", "runs=[cnn_small/none/fold_0,cnn_small/none/fold_1]", "tta=2", "hydra.run.dir=outputs/predict/both")
    _, a = _outputs(p, "one_0")
    _, b = _outputs(p, "one_1")
    _, both = _outputs(p, "both")
    np.testing.assert_allclose(both["probs"], geometric_mean(np.stack([a["probs"], b["probs"]])), rtol=1e-4, atol=1e-6)


def test_predict_folder_flags_unreadable_clips(swept_project, tmp_path):
    p = swept_project
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    test_audio = p.root / "data" / "demo" / "audio_test"
    picked = sorted(test_audio.glob("*.wav"))[:3]
    for f in picked:
        shutil.copy(f, folder / f.name)
    y, sr = sf.read(picked[0])
    sf.write(folder / "sub" / "stereo48k.flac", np.stack([y, y], axis=1)[: sr * 2], 48000)
    (folder / "broken.wav").write_bytes(b"not a wav file at all")
    p.run("predict.py", f"runs=[{p.runs_dir / 'cnn_small/none/default/fold_0'}]", f"input={folder}", "tta=2",
          "hydra.run.dir=outputs/predict/folder")
    table, arrays = _outputs(p, "folder")
    assert sorted(table["fname"]) == sorted([f.name for f in picked] + ["broken.wav", "sub/stereo48k.flac"])
    broken = table[table["fname"] == "broken.wav"].iloc[0]
    assert broken["flagged"] and broken["error"]
    assert not table[table["fname"] != "broken.wav"]["flagged"].any()
    row = list(arrays["fnames"]).index("broken.wav")
    np.testing.assert_allclose(arrays["probs"][row], 1.0 / arrays["probs"].shape[1], rtol=1e-6)


def test_predict_without_runs_is_a_clear_error(demo_project):
    res = demo_project.run("predict.py", check=False)
    assert res.returncode != 0 and "runs=[...]" in res.stderr
