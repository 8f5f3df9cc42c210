"""fstag.serve end to end, with real parts only: swept_project's two trained jobs blended by blend.py and registered
(SQLite store; and through a real ``mlflow server``, as ONNX), served by ``mlflow models serve`` (a subprocess on a
free 127.0.0.1 port, started once for the module) and asked over HTTP with a WAV, a FLAC, a silent clip and bad
files; the answers compared with predict.py's on the same clips and runs; the registry alias and tags; the ONNX
model loaded from the server in a fresh process elsewhere (no conf/, no multirun/) and compared with torch's;
``python -m fstag.export`` for runs without a blend."""

from __future__ import annotations

import base64
import json
import os
import signal
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, free_port, http_answers, mlflow_server

RUNS = "[cnn_small/none/fold_0,cnn_small/none/fold_1]"
WEIGHTS = [0.7, 0.3]
VENV_BIN = Path(sys.executable).parent
HEARD = ("a.wav", "b.flac", "silent.wav")  # the clips predict.py tags too


def _clips(root: Path, p) -> dict[str, Path]:
    """Real audio: two demo test clips (one re-encoded as FLAC), silence, a 6 s tone (longer than the model's
    max_seconds=5), a file that is not audio, a WAV with no samples and a 0-byte file."""
    import soundfile as sf

    folder = root / "heard"
    folder.mkdir(parents=True)
    tests = sorted((p.root / "data" / "demo" / "audio_test").glob("*.wav"))
    shutil.copy(tests[0], folder / "a.wav")
    y, sr = sf.read(tests[1], dtype="float32")
    sf.write(folder / "b.flac", y, sr)
    sf.write(folder / "silent.wav", np.zeros(22050, dtype=np.float32), 22050)
    bad = root / "bad"
    bad.mkdir()
    t = np.arange(6 * 8000) / 8000
    sf.write(bad / "long.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    (bad / "garbage.wav").write_bytes(b"not audio at all, " * 40)
    sf.write(bad / "no_samples.wav", np.zeros(0, dtype=np.float32), 22050)
    (bad / "zero_bytes.wav").write_bytes(b"")
    return {f.name: f for f in [*folder.iterdir(), *bad.iterdir()]}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _post(url: str, payload: dict | str, content_type: str = "application/json") -> tuple[int, dict]:
    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    req = urllib.request.Request(url + "/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _probs(rows: list[dict], labels: list[str]) -> np.ndarray:
    return np.array([[row["probs"][lab] for lab in labels] for row in rows])


@pytest.fixture(scope="module")
def served(swept_project, tmp_path_factory):
    """The blend registered in the project's SQLite store as ``tagger`` (alias champion), served by
    ``mlflow models serve -m models:/tagger@champion`` from another folder; yields what the tests ask about."""
    p = swept_project
    tmp = tmp_path_factory.mktemp("serving")
    clips = _clips(tmp, p)
    blend = p.run("blend.py", "blend.name=served", f"blend.members={RUNS}", f"blend.weights={json.dumps(WEIGHTS)}",
                  "blend.register=tagger", "serve.max_seconds=5", "hydra.run.dir=outputs/blend/served")
    out = p.root / "outputs" / "blend" / "served"
    port = free_port()
    env = {**p.env, "MLFLOW_TRACKING_URI": p.tracking_uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # the model brings its own copy of fstag
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/tagger@champion",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not http_answers(url + "/ping", proc, 180):
            raise AssertionError(f"mlflow models serve did not start:\n{(tmp / 'serve.log').read_text()[-4000:]}")
        yield {"project": p, "url": url, "clips": clips, "blend_dir": out, "blend_stdout": blend.stdout, "tmp": tmp,
               "blend": json.loads((out / "blend.json").read_text())}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def reference(served):
    """predict.py's probabilities of the heard clips, each run alone (input=<folder>: features computed in memory,
    as the server computes them), combined by the blend's weights as the blend combines members."""
    from fstag.core.task import get_task
    from fstag.ensemble.blending import combine

    p = served["project"]
    per_run = []
    for k in (0, 1):
        p.run("predict.py", f"runs=[cnn_small/none/fold_{k}]", f"input={served['clips']['a.wav'].parent}",
              f"hydra.run.dir=outputs/predict/serving_{k}")
        with np.load(p.root / "outputs" / "predict" / f"serving_{k}" / "probs.npz") as z:
            order = [list(z["fnames"]).index(f) for f in HEARD]
            per_run.append(z["probs"][order])
            flagged, silent, labels = z["flagged"][order], z["silent"][order], [str(s) for s in z["labels"]]
    probs = combine(np.stack(per_run), WEIGHTS, "gmean", get_task("single_label")).astype(np.float32)
    probs[flagged] = 1.0 / probs.shape[1]
    return {"probs": probs, "flagged": flagged, "silent": silent, "labels": labels}


@pytest.mark.slow(seconds=90)
def test_served_answers_equal_predict_py(served, reference):
    clips = served["clips"]
    rows = [{"name": "a.wav", "audio": _b64(clips["a.wav"])}, {"name": "b.flac", "audio": _b64(clips["b.flac"])},
            {"path": str(clips["silent.wav"])}]
    status, body = _post(served["url"], {"dataframe_records": rows, "params": {"top_k": 5}})
    assert status == 200, body
    got = body["predictions"]
    assert [r["fname"] for r in got] == list(HEARD)
    probs = _probs(got, reference["labels"])
    assert np.abs(probs - reference["probs"]).max() < 1e-5
    for row, ref in zip(got, reference["probs"]):
        assert len(row["top_labels"]) == 5 and row["top_labels"][0] == reference["labels"][int(np.argmax(ref))]
        assert row["top_probs"] == sorted(row["top_probs"], reverse=True)
    assert [r["silent"] for r in got] == [False, False, True] and [r["flagged"] for r in got] == [False, False, True]
    assert got[2]["error"].startswith("silent") and reference["silent"].tolist() == [False, False, True]
    # a CSV of paths, as `mlflow models predict -t csv` sends it
    csv = "path,name\n" + "".join(f"{clips[f]},{f}\n" for f in HEARD)
    status, body = _post(served["url"], csv, "text/csv")
    assert status == 200 and np.abs(_probs(body["predictions"], reference["labels"]) - reference["probs"]).max() < 1e-5


@pytest.mark.slow(seconds=5)
def test_bad_clips_get_a_400_naming_them_and_the_server_goes_on(served):
    clips, url = served["clips"], served["url"]
    cases = {"garbage.wav": "not audio", "long.wav": "too long: 6.0 s", "no_samples.wav": "empty audio (0 samples)",
             "zero_bytes.wav": "empty"}
    for name, reason in cases.items():
        status, body = _post(url, {"dataframe_records": [{"name": "a.wav", "audio": _b64(clips["a.wav"])},
                                                         {"name": name, "path": str(clips[name])}]})
        assert status == 400, body
        assert body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert f"1 of 2 clip(s) cannot be tagged: clip 1 ('{name}'): {reason}" in body["message"]
    status, body = _post(url, {"dataframe_records": [{"name": "x.wav", "audio": "%%% not base64 %%%"}]})
    assert status == 400 and "clip 0 ('x.wav'): 'audio' is not base64" in body["message"]
    status, body = _post(url, {"dataframe_records": [{"name": "a.wav"}]})
    assert status == 400 and "clip 0 ('a.wav'): neither 'audio' (base64 audio bytes) nor 'path' given" in body["message"]
    # errors=flag: predict.py's way, the unreadable clip flagged with the reason, the others tagged
    status, body = _post(url, {"dataframe_records": [{"name": "a.wav", "audio": _b64(clips["a.wav"])},
                                                     {"name": "garbage.wav", "audio": _b64(clips["garbage.wav"])}],
                               "params": {"errors": "flag"}})
    assert status == 200, body
    a, garbage = body["predictions"]
    assert not a["flagged"] and garbage["flagged"] and garbage["error"].startswith("not audio: cannot decode audio")
    assert list(garbage["probs"].values()) == pytest.approx([1 / len(garbage["probs"])] * len(garbage["probs"]))
    with urllib.request.urlopen(url + "/ping", timeout=5) as r:  # still serving
        assert r.status == 200


@pytest.mark.slow(seconds=5)
def test_the_alias_resolves_to_the_version_tagged_with_the_blend_run(served):
    from mlflow.tracking import MlflowClient

    p, blend = served["project"], served["blend"]
    client = MlflowClient(tracking_uri=p.tracking_uri, registry_uri=p.tracking_uri)
    mv = client.get_model_version_by_alias("tagger", "champion")
    (latest,) = client.search_model_versions("name='tagger'")
    assert str(mv.version) == str(latest.version) == "1"
    assert mv.run_id == blend["mlflow_run_id"] and mv.tags["fstag.blend_run_id"] == blend["mlflow_run_id"]
    run = client.get_run(blend["mlflow_run_id"])
    assert run.data.tags["fstag.registered_model"] == "tagger" and run.data.tags["fstag.registered_version"] == "1"
    assert run.info.status == "FINISHED"
    digest = mv.tags["fstag.config_digest"]
    assert digest.startswith("sha256:") and digest in mv.description
    assert blend["fold_split"]["digest"] in mv.description and blend["data_digest"] in mv.description
    assert f"oof_map3 {blend['metrics']['oof_map3']:.4f}" in mv.description
    assert f"test_map3 {blend['metrics']['test_map3']:.4f}" in mv.description
    assert "registered: tagger version 1, alias champion" in served["blend_stdout"]
    # the model's files: signature, input example, pinned requirements, fstag's code
    import mlflow

    from fstag.serve.registry import tracking

    with tracking(p.tracking_uri):  # the registry's URI too: models:/ resolves there
        local = Path(mlflow.artifacts.download_artifacts(f"models:/tagger/{mv.version}",
                                                         dst_path=str(served["tmp"] / "downloaded")))
    reqs = (local / "requirements.txt").read_text().split()
    assert "torch==2.11.0" in reqs and any(r.startswith("mlflow==") for r in reqs) and any(r.startswith("timm==") for r in reqs)
    assert (local / "code" / "fstag" / "serve" / "tagger.py").is_file() and (local / "input_example.json").is_file()
    meta = (local / "MLmodel").read_text()
    assert "signature:" in meta and '"name": "audio"' in meta and '"name": "top_k"' in meta
    spec = json.loads((local / "artifacts" / "bundle" / "tagger.json").read_text())
    assert spec["combine"]["weights"] == pytest.approx(WEIGHTS) and spec["settings"]["max_seconds"] == 5


@pytest.fixture(scope="module")
def onnx_on_server(served, tmp_path_factory):
    """The same blend registered through a real ``mlflow server`` as ``tagger-onnx``, its members as ONNX."""
    p = served["project"]
    with mlflow_server(tmp_path_factory.mktemp("server")) as uri:
        res = p.run("blend.py", "blend.name=served_onnx", f"blend.members={RUNS}", f"blend.weights={json.dumps(WEIGHTS)}",
                    "blend.register=tagger-onnx", "blend.format=onnx", "hydra.run.dir=outputs/blend/served_onnx",
                    env={"MLFLOW_TRACKING_URI": uri})
        yield {"uri": uri, "stdout": res.stdout}


FRESH = """
import importlib.abc, json, sys
from pathlib import Path


class NoTorch(importlib.abc.MetaPathFinder):  # as if torch, torchaudio, timm and Lightning were not installed
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "torchvision", "timm", "pytorch_lightning", "lightning"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")


sys.meta_path.insert(0, NoTorch())
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/tagger-onnx@champion")
rows = model.predict(pd.DataFrame({"path": sys.argv[1:], "name": [Path(a).name for a in sys.argv[1:]]}))
import fstag, onnxruntime
tagger = model.unwrap_python_model().tagger
session = tagger.nets[0].session
print(json.dumps({"fstag": fstag.__file__, "bundle": str(tagger.folder), "backend": tagger.backend,
                  "modules": sorted(m for m in ("torch", "timm", "pytorch_lightning", "onnxruntime") if m in sys.modules),
                  "input": session.get_inputs()[0].shape, "diffs": [m["onnx_max_abs_diff"] for m in tagger.members],
                  "rows": rows.to_dict(orient="records")}))
"""


@pytest.mark.slow(seconds=40)
def test_the_onnx_model_from_the_server_loads_in_a_fresh_process_elsewhere(served, reference, onnx_on_server, tmp_path):
    """No repository around (cwd elsewhere, no PYTHONPATH) and no torch (its imports fail in that process): the model
    brings fstag's code, runs its networks with onnxruntime, its features with librosa and its crops with numpy, and
    answers what predict.py (PyTorch) answers."""
    from mlflow.tracking import MlflowClient

    assert "registered: tagger-onnx version 1, alias champion" in onnx_on_server["stdout"]
    client = MlflowClient(tracking_uri=onnx_on_server["uri"], registry_uri=onnx_on_server["uri"])
    mv = client.get_model_version_by_alias("tagger-onnx", "champion")
    assert mv.tags["fstag.backend"] == "onnx" and client.get_run(mv.run_id).data.tags["fstag.registered_model"] == "tagger-onnx"
    env = {k: v for k, v in served["project"].env.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = onnx_on_server["uri"]
    clips = [str(served["clips"][f]) for f in HEARD]
    res = subprocess.run([sys.executable, "-c", FRESH, *clips], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    model_root = Path(out["bundle"]).parents[1]
    assert Path(out["fstag"]).is_relative_to(model_root / "code" / "fstag") and not str(out["fstag"]).startswith(str(REPO))
    reqs = {r.split("==")[0] for r in (model_root / "requirements.txt").read_text().split()}
    assert {"onnxruntime", "librosa", "mlflow"} <= reqs and not reqs & {"torch", "torchaudio", "timm", "torchvision"}
    assert out["backend"] == "onnx" and out["modules"] == ["onnxruntime"]
    assert out["input"] == ["batch", 3, 64, "time"] and max(out["diffs"]) <= 1e-4
    assert np.abs(_probs(out["rows"], reference["labels"]) - reference["probs"]).max() < 1e-5
    assert [r["flagged"] for r in out["rows"]] == [False, False, True]


@pytest.mark.slow(seconds=20)
def test_export_packages_runs_without_a_blend(served, reference):
    from mlflow.tracking import MlflowClient

    from fstag.serve.tagger import Tagger

    p = served["project"]
    res = p.run("-m fstag.export", f"runs={RUNS}", f"weights={json.dumps(WEIGHTS)}", "register=tagger-runs",
                "hydra.run.dir=outputs/export/runs")
    folder = p.root / "outputs" / "export" / "runs" / "model"
    assert f"model folder: {folder}" in res.stdout and (folder / "MLmodel").is_file()
    client = MlflowClient(tracking_uri=p.tracking_uri, registry_uri=p.tracking_uri)
    mv = client.get_model_version_by_alias("tagger-runs", "champion")
    run = client.get_run(mv.run_id)
    assert run.info.run_name == "export/tagger-runs" and run.data.tags["fstag.registered_model"] == "tagger-runs"
    assert "fstag.blend_run_id" not in mv.tags and mv.tags["fstag.members"] == "2"
    # the saved folder's bundle, loaded by the runtime alone (no MLflow), tags what predict.py tags
    tagger = Tagger.load(folder / "artifacts" / "bundle")
    rows = tagger.tag([{"path": str(served["clips"][f])} for f in HEARD])
    assert list(rows["fname"]) == list(HEARD)
    assert np.abs(_probs(rows.to_dict(orient="records"), reference["labels"]) - reference["probs"]).max() < 1e-5
    # `mlflow models predict` tags a CSV of paths in batch, from the model folder, in a process of its own
    work = served["tmp"] / "batch"
    work.mkdir()
    (work / "paths.csv").write_text("path\n" + "".join(f"{served['clips'][f]}\n" for f in HEARD))
    env = {k: v for k, v in p.env.items() if k != "PYTHONPATH"}
    res = subprocess.run([str(VENV_BIN / "mlflow"), "models", "predict", "-m", str(folder), "-i", "paths.csv", "-t", "csv",
                          "-o", "tags.json", "--env-manager", "local"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    got = json.loads((work / "tags.json").read_text())["predictions"]
    assert [r["fname"] for r in got] == list(HEARD)
    assert np.abs(_probs(got, reference["labels"]) - reference["probs"]).max() < 1e-5


@pytest.mark.slow(seconds=60)
def test_bench_serve_tiny(swept_project, tmp_path):
    """``python bench/serve.py --tiny`` on swept_project's two jobs: the report's lines and numbers, not its timings."""
    from tests.bench_runner import NUMBER, numbers, run_bench

    jobs = [swept_project.runs_dir / "cnn_small" / "none" / "default" / f"fold_{k}" for k in (0, 1)]
    out = run_bench("serve", tmp_path, "--root", str(tmp_path / "root"), "--run-dir", str(jobs[0]), "--run-dir", str(jobs[1]))
    assert "machine: " in out and "clips: 12 demo test clips" in out
    assert ("| backend | clips/request | requests | p50 ms | p95 ms | requests/s | clips/s | vs predict.py | onnx/torch "
            "| server CPU ms/clip |") in out
    for backend in ("torch", "onnx"):
        for size, count in ((1, 3), (16, 1)):
            p50, p95, rps, cps, vs, ratio, cpu = numbers(
                rf"^\| {backend} \| {size} \| {count} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| "
                rf"{NUMBER} \| {NUMBER} \|$", out)
            assert 0 < p50 <= p95 and rps > 0 and cps == pytest.approx(rps * size, rel=0.02) and vs > 0 and ratio > 0
            assert cpu > 0  # the server's CPU time per clip
    clips, secs, rate = numbers(rf"^predict.py \(the same runs and clips, 5 crops\): {NUMBER} clips in {NUMBER} s: {NUMBER} clips/s", out)
    assert clips == 12 and rate > 0
    assert numbers(rf"^server start-up to the first /ping: torch {NUMBER} s, onnx {NUMBER} s$", out)[0] > 0
    assert json.loads((tmp_path / "root" / "serve.json").read_text())["clips"] == 12


def test_temperature_scaling_is_the_blends():
    """A blend calibrated with blend.calibration=temperature is served with its fitted T: the same numbers."""
    from fstag.ensemble.calibration import apply_temperature, fit_temperature, temperature_of
    from fstag.serve.tagger import temperature_scale

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 6)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = np.where(rng.random(200) < 0.6, probs.argmax(axis=1), rng.integers(0, 6, 200))
    model = fit_temperature(probs, targets)
    assert abs(temperature_of(model) - 1.0) > 0.05  # a temperature that changes something
    np.testing.assert_allclose(temperature_scale(probs, temperature_of(model)), apply_temperature(model, probs), atol=1e-6)


def test_serving_settings_are_checked_by_name():
    from fstag.serve.bundle import BundleError, check_settings

    assert check_settings({})["tta"] == 5 and check_settings({"max_seconds": None})["max_seconds"] is None
    with pytest.raises(BundleError, match=r"serve: unknown key\(s\) \['ttta'\]"):
        check_settings({"ttta": 3})
    with pytest.raises(BundleError, match=r"serve.mode='all': choose one of \('crops', 'windows'\)"):
        check_settings({"mode": "all"})
    with pytest.raises(BundleError, match=r"serve.threshold=1.5"):
        check_settings({"threshold": 1.5})


def test_a_multi_label_answer_lists_the_labels_at_or_above_the_threshold():
    from fstag.serve.tagger import result_table

    probs = np.array([[0.9, 0.2, 0.6], [0.0, 0.0, 0.0]], dtype=np.float32)
    rows = result_table(["x.wav", "quiet.wav"], probs, ["Bark", "Chirp", "Meow"], [None, None], [False, True],
                        multi_label=True, top_k=2, threshold=0.5).to_dict(orient="records")
    assert rows[0]["labels"] == ["Bark", "Meow"] and rows[0]["top_labels"] == ["Bark", "Meow"]
    assert rows[0]["probs"] == pytest.approx({"Bark": 0.9, "Chirp": 0.2, "Meow": 0.6})
    assert rows[1]["labels"] == [] and rows[1]["silent"] and rows[1]["flagged"] and rows[1]["error"].startswith("silent")
