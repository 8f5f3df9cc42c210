"""predict.py on trained runs: the test split, a folder with a broken file, several runs, an MLflow run id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fstag.evaluate.metrics import geometric_mean

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


def _longest_test_clip(project) -> Path:
    audio = project.root / "data" / "demo" / "audio_test"
    return max(sorted(audio.glob("*.wav")), key=lambda f: sf.info(str(f)).frames)


def test_tta_crops_do_not_depend_on_the_clips_around(swept_project, tmp_path):
    """The same clip alone, among other files listed before it, and in the test split: the same crops."""
    p = swept_project
    run = p.runs_dir / "cnn_small/none/default/fold_0"
    clip = _longest_test_clip(p)
    assert sf.info(str(clip)).duration > 2.0  # longer than the 1.5 s crop: random crops differ by position
    alone, crowd = tmp_path / "alone", tmp_path / "crowd"
    alone.mkdir()
    crowd.mkdir()
    shutil.copy(clip, alone / clip.name)
    shutil.copy(clip, crowd / clip.name)
    others = [f for f in sorted(clip.parent.glob("*.wav")) if f != clip]
    for k, f in enumerate(others[:6]):  # listed before (000_...) and after (zzz_...) the clip
        shutil.copy(f, crowd / f"{'000' if k % 2 else 'zzz'}_{k}_{f.name}")
    shutil.copy(clip, crowd / f"000_x_{clip.name}")
    common = ["runs=[cnn_small/none/fold_0]", "tta=2", "batch_size=1", "mode=crops"]  # tta/seed of the tiny jobs
    p.run("predict.py", *common, f"input={alone}", "hydra.run.dir=outputs/predict/alone")
    p.run("predict.py", *common, f"input={crowd}", "hydra.run.dir=outputs/predict/crowd")
    p.run("predict.py", *common, "batch_size=256", "hydra.run.dir=outputs/predict/test_split")
    _, a = _outputs(p, "alone")
    _, c = _outputs(p, "crowd")
    _, t = _outputs(p, "test_split")
    row = lambda arrays: arrays["probs"][list(arrays["fnames"]).index(clip.name)]  # noqa: E731
    assert list(c["fnames"]).index(clip.name) > 0
    np.testing.assert_array_equal(row(c), row(a))  # batch_size=1: bit for bit
    with np.load(run / "test.npz") as z:
        test_npz = z["probs"][list(z["fnames"]).index(clip.name)]
    # the train job's test.npz and predict.py on the test split read the same float16 cache
    np.testing.assert_allclose(row(t), test_npz, rtol=0, atol=1e-6)
    # A folder's features are float32, the cache's float16 (unit roundoff 2**-11 = 4.9e-4: log-mel values
    # of -100..0 dB move by up to 0.03 dB). Through cnn_small that moves a probability by at most 1.5e-4 of
    # its value (a 20-epoch model, 8 clips), 1e-6 on this 2-epoch one. Other crops of the same clip move
    # it by 4e-4 (this near-uniform model) to 1 (a trained one): the renamed copy must be far further away.
    dev = np.abs(row(a) / test_npz - 1).max()
    assert np.allclose(row(a), test_npz, rtol=2.0**-11, atol=0), dev
    renamed = c["probs"][list(c["fnames"]).index(f"000_x_{clip.name}")]  # the same audio, other crops
    assert np.abs(renamed / test_npz - 1).max() > 10 * dev


def test_silent_clips_are_flagged_with_uniform_probabilities(swept_project, tmp_path):
    p = swept_project
    folder = tmp_path / "with_silence"
    folder.mkdir()
    real = _longest_test_clip(p)
    shutil.copy(real, folder / real.name)
    sf.write(folder / "zeros.wav", np.zeros(2 * 44100, dtype=np.int16), 44100, subtype="PCM_16")  # 2 s of 0
    # both modes share this path (tests/test_inference_modes.py checks each mode's uniform rows)
    p.run("predict.py", "runs=[cnn_small/none/fold_0]", f"input={folder}", "hydra.run.dir=outputs/predict/silence")
    table, arrays = _outputs(p, "silence")
    zero = table[table["fname"] == "zeros.wav"].iloc[0]
    assert zero["flagged"] and zero["silent"] and "silent" in zero["error"]
    other = table[table["fname"] == real.name].iloc[0]
    assert not other["flagged"] and not other["silent"]
    i = list(arrays["fnames"]).index("zeros.wav")
    assert arrays["silent"].tolist() == [f == "zeros.wav" for f in arrays["fnames"]]
    assert arrays["flagged"][i]
    c = arrays["probs"].shape[1]
    np.testing.assert_array_equal(arrays["probs"][i], np.full(c, 1 / c, dtype=np.float32))


def test_windows_mode_streams_long_files_in_chunks(swept_project, tmp_path):
    """A file over long_file_seconds is streamed chunk by chunk; its predictions equal the whole file's."""
    p = swept_project
    folder = tmp_path / "long"
    folder.mkdir()
    audio = sorted((p.root / "data" / "demo" / "audio_test").glob("*.wav"))
    parts = [sf.read(f, dtype="float32")[0] for f in audio[:8]]
    sf.write(folder / "long.wav", np.concatenate(parts), 44100, subtype="PCM_16")
    shutil.copy(audio[0], folder / audio[0].name)
    duration = sf.info(str(folder / "long.wav")).duration
    assert duration > 8
    for name, limit in (("streamed", "long_file_seconds=5"), ("whole", "long_file_seconds=null")):
        p.run("predict.py", "runs=[cnn_small/none/fold_0]", f"input={folder}", "mode=windows", "hop_frames=50",
              limit, f"hydra.run.dir=outputs/predict/long_{name}")
    _, streamed = _outputs(p, "long_streamed")
    _, whole = _outputs(p, "long_whole")
    assert not streamed["flagged"].any()
    np.testing.assert_allclose(streamed["probs"], whole["probs"], rtol=1e-5, atol=1e-6)


def test_a_train_jobs_test_predictions_flag_a_silent_clip(demo_project, tmp_path):
    """A test clip that is all zeros: test.npz marks it `silent` with uniform probabilities (predict.mode=windows,
    the job's own test predictions), and the submission's scoring report counts it."""
    from tests.conftest import TINY_DEMO, TINY_TRAIN, Project, make_env

    from fstag.ensemble.submission import read_test_flags, score_submission, write_submission

    root = tmp_path / "silent_project"
    src = demo_project.root / "data" / "demo"
    shutil.copytree(src, root / "data" / "demo", ignore=shutil.ignore_patterns("features"))
    truth = pd.read_csv(src / "test_post_competition.csv")
    victim = truth[truth["usage"] != "Ignored"]["fname"].iloc[0]
    info = sf.info(str(src / "audio_test" / victim))
    sf.write(root / "data" / "demo" / "audio_test" / victim, np.zeros(info.frames, dtype=np.int16), info.samplerate,
             subtype="PCM_16")
    p = Project(root=root, env=make_env(root))
    p.run("preprocess.py", "data=demo", *TINY_DEMO)
    p.run("train.py", "fold=0", *TINY_TRAIN, "predict.mode=windows")
    job = p.runs_dir / "cnn_small/none/predict.mode=windows/fold_0"
    with np.load(job / "test.npz") as z:
        fnames, probs, silent, missing = list(z["fnames"]), z["probs"], z["silent"], z["missing"]
    assert silent.dtype == bool and silent.tolist() == [f == victim for f in fnames] and not missing.any()
    np.testing.assert_array_equal(probs[fnames.index(victim)], np.full(probs.shape[1], 1 / probs.shape[1], dtype=np.float32))
    others = np.delete(probs, fnames.index(victim), axis=0)
    assert not np.allclose(others, 1 / probs.shape[1])  # the model's own predictions elsewhere

    labels = json.loads((job / "run.json").read_text())["labels"]
    sub = write_submission(tmp_path / "sub.csv", fnames, probs, labels)
    flags = read_test_flags([job / "test.npz"])
    assert flags == {"missing": set(), "silent": {victim}}
    scores = score_submission(sub, src / "test_post_competition.csv", labels, flags=flags)
    assert scores["n_silent"] == 1 and scores["n_missing"] == 0
    plain = score_submission(sub, src / "test_post_competition.csv", labels)
    assert "n_silent" not in plain and "map3_unflagged" in scores
