"""A tracking server that goes away: training goes on, nothing is lost, and what a job could not send is sent
later. Against a real `mlflow server` on 127.0.0.1, stopped (SIGKILL) for longer than MLflow's retry budget
(MLFLOW_HTTP_REQUEST_* set small) while a real train.py job trains, then restarted on the same port and store."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.tracking_outage import FAST_RETRIES, Server  # one retry, no backoff, short timeouts
from tests.conftest import TINY_TRAIN

EXPERIMENT = "fstag-outage"
EPOCH_METRICS = ("train_loss", "val_loss", "val_acc1", "val_map3")


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server", start_timeout=180)
    srv.start()
    yield srv
    srv.stop()


def _journal_epochs(job_dir: Path) -> list[int]:
    """The timestamps (ms) of the epochs' validation metrics in the job's journal, in order."""
    path = job_dir / "mlflow_journal.jsonl"
    stamps = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return stamps
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        stamps += [m[2] for m in e.get("metrics", []) if e.get("op") == "log_batch" and m[0] == "val_loss"]
    return stamps


def _wait_for(what: str, cond, job=None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if job is not None and job.done():
            res = job.result()
            raise AssertionError(f"the job ended before {what}:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _job_dir(project, exp: str) -> Path | None:
    found = sorted((project.root / "multirun" / exp / "cnn_small" / "none").glob("*/fold_0"))
    return found[0] if found else None


def _real_run_id(job_dir: Path | None) -> str | None:
    if job_dir is None or not (job_dir / "mlflow_run_id").is_file():
        return None
    rid = (job_dir / "mlflow_run_id").read_text().strip()
    return rid if rid and not rid.startswith("local-") else None


def _steps_exactly_once(client: MlflowClient, run_id: str, epochs: int) -> dict[str, list]:
    histories = {k: client.get_metric_history(run_id, k) for k in EPOCH_METRICS}
    for key, points in histories.items():
        steps = [p.step for p in points]
        assert len(steps) == len(set(steps)) == epochs, f"{key}: steps {sorted(steps)} for {epochs} epochs"
    return histories


def _assert_finished_with_artifacts(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"run.json", "oof.npz", "test.npz", "config.yaml", "checkpoints", "reports"} <= {
        a.path for a in client.list_artifacts(run_id)}
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    assert {"best_val_map3", "oof_map3", "epochs_trained"} <= set(run.data.metrics)
    assert run.data.params["optimizer.lr"] == "0.02"


@pytest.mark.slow(seconds=70)
def test_training_goes_on_while_the_server_is_away_and_the_backlog_arrives_once(demo_project, server):
    env = {"MLFLOW_TRACKING_URI": server.uri, **FAST_RETRIES}
    exp = "outage"
    args = ["fold=0", *TINY_TRAIN, f"exp={exp}", f"mlflow.experiment={EXPERIMENT}", "trainer.max_epochs=24",
            "callbacks.early_stopping.patience=100", "mlflow.end_wait_s=120"]
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(demo_project.run, "train.py", *args, env=env)
        # the run exists on the server and two epochs are journaled: then the server goes away ...
        _wait_for("two epochs", lambda: _real_run_id(_job_dir(demo_project, exp)) and
                  len(_journal_epochs(_job_dir(demo_project, exp))) >= 2, job)
        job_dir = _job_dir(demo_project, exp)
        server.stop()
        down_ms, before = int(time.time() * 1000), len(_journal_epochs(job_dir))
        # ... for longer than MLflow's retries (a few seconds here), while three more epochs train ...
        _wait_for("three epochs while the server is away", lambda: len(_journal_epochs(job_dir)) >= before + 3, job)
        server.start()  # ... and comes back on the same port with the same store
        up_ms = int(time.time() * 1000)
        res = job.result()
    assert res.returncode == 0
    log_text = res.stdout + res.stderr
    assert "does not answer" in log_text and "answers again: sending the backlog" in log_text

    info = json.loads((job_dir / "run.json").read_text())
    run_id = (job_dir / "mlflow_run_id").read_text().strip()
    assert info["complete"] and info["mlflow_synced"] is True and info["mlflow_run_id"] == run_id
    assert not (job_dir / "mlflow_journal.jsonl").exists()  # everything sent: the journal is gone, and its pointer
    assert not [p for p in (demo_project.root / ".mlflow_pending").glob("*.json") if str(job_dir) in p.read_text()]
    client = MlflowClient(server.uri)
    _assert_finished_with_artifacts(client, run_id)
    epochs = int(info["epochs_trained"])
    assert epochs == 24
    history = _steps_exactly_once(client, run_id, epochs)

    # the epochs went on at their pace while the server was away: at least three ended in the outage, and the
    # gaps between epochs inside it are not longer than those outside it (a generous factor: a shared machine)
    stamps = sorted(p.timestamp for p in history["val_loss"])
    inside = [t for t in stamps if down_ms < t < up_ms]
    assert len(inside) >= 3
    gaps_in = [b - a for a, b in zip(stamps, stamps[1:]) if down_ms < b < up_ms]
    gaps_out = [b - a for a, b in zip(stamps, stamps[1:]) if not down_ms < b < up_ms]
    assert statistics.median(gaps_in) <= 5 * statistics.median(gaps_out), (gaps_in, gaps_out)


@pytest.mark.slow(seconds=80)
def test_a_job_that_ends_while_the_server_is_away_is_complete_on_disk_and_sync_sends_it_later(demo_project, server,
                                                                                              tmp_path):
    env = {"MLFLOW_TRACKING_URI": server.uri, **FAST_RETRIES}
    exp = "outage_sync"
    common = [f"exp={exp}", f"mlflow.experiment={EXPERIMENT}", "mlflow.end_wait_s=2"]
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(demo_project.run, "train.py", "fold=0", *TINY_TRAIN, *common, "trainer.max_epochs=5", env=env)
        _wait_for("the run on the server", lambda: _real_run_id(_job_dir(demo_project, exp)), job)
        server.stop()  # for good, as far as the job can tell
        res = job.result()
    assert res.returncode == 0, res.stderr[-4000:]
    job_dir = _job_dir(demo_project, exp)
    run_id = _real_run_id(job_dir)
    info = json.loads((job_dir / "run.json").read_text())
    # complete on disk (predictions, checkpoints, run.json), marked unsynced, its backlog journaled and registered
    assert info["complete"] and info["mlflow_synced"] is False and info["mlflow_run_id"] == run_id
    assert all((job_dir / f).is_file() for f in ("oof.npz", "test.npz", "checkpoints/best.ckpt"))
    assert (job_dir / "mlflow_journal.jsonl").is_file()
    assert "not synced: python -m fstag.runs sync" in res.stdout + res.stderr
    member = f"'{job_dir}'"

    # the listing, predictions and a blend work from the disk records while the server is away
    listed = demo_project.run("-m fstag.runs", *common, "--as", "json", env=env).stdout
    (row,) = json.loads(listed)
    assert row["complete"] == "yes" and row["mlflow_run_id"] == run_id
    demo_project.run("predict.py", *common, f"runs=[{member}]", "tta=2", f"output_dir={tmp_path / 'pred'}", env=env)
    assert (tmp_path / "pred" / "top3.csv").is_file()
    submission = tmp_path / "outage.csv"
    out = demo_project.run("blend.py", *common, "blend.name=outage", f"blend.members=[{member}]",
                           f"blend.submission={submission}", env=env)
    assert submission.is_file() and f"submission: {submission}" in out.stdout
    (blend_dir,) = (demo_project.root / "outputs" / "blend" / "outage").glob("*")
    blend_id = json.loads((blend_dir / "blend.json").read_text())["mlflow_run_id"]
    assert blend_id.startswith("local-") and (blend_dir / "mlflow_journal.jsonl").is_file()  # the run comes later

    # sync (every journal the project's index names) while the server is still away: it says so, keeps everything
    away = demo_project.run("-m fstag.runs", "sync", env=env, check=False)
    assert away.returncode == 1
    for folder in (job_dir, blend_dir):
        assert f"not synced (store away) {folder}: the tracking server {server.uri} does not answer" in away.stderr
        assert (folder / "mlflow_journal.jsonl").is_file()

    server.start()  # (these two folders only: the session's project may hold other tests' journals)
    synced = demo_project.run("-m fstag.runs", "sync", str(job_dir), str(blend_dir), env=env)
    assert f"synced {job_dir}" in synced.stdout and f"synced {blend_dir}" in synced.stdout
    client = MlflowClient(server.uri)
    _assert_finished_with_artifacts(client, run_id)
    history = _steps_exactly_once(client, run_id, 5)
    info = json.loads((job_dir / "run.json").read_text())
    assert info["mlflow_synced"] is True and info["mlflow_run_id"] == run_id
    assert not (job_dir / "mlflow_journal.jsonl").exists()
    # the blend's run was created now, into the experiment, and its placeholder replaced in blend.json
    blend_id = json.loads((blend_dir / "blend.json").read_text())["mlflow_run_id"]
    blend_run = client.get_run(blend_id)
    assert blend_run.info.run_name == "blend/outage" and blend_run.info.status == "FINISHED"
    assert {"outage.csv", "config.yaml", "probs.npz"} <= {a.path for a in client.list_artifacts(blend_id)}
    assert "oof_map3" in blend_run.data.metrics and json.loads(blend_run.data.params["members"])
    assert not (blend_dir / "mlflow_journal.jsonl").exists() and not (blend_dir / ".mlflow_spool").exists()

    # a second sync has nothing to send and changes nothing
    again = demo_project.run("-m fstag.runs", "sync", str(job_dir), str(blend_dir), env=env)
    assert "nothing to sync" in again.stdout
    pointers = [json.loads(p.read_text())["journal"] for p in (demo_project.root / ".mlflow_pending").glob("*.json")]
    assert not [p for p in pointers if p.startswith((str(job_dir), str(blend_dir)))]  # nor in the project's index
    assert {k: len(v) for k, v in history.items()} == {k: len(client.get_metric_history(run_id, k)) for k in history}
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    names = [r.info.run_name for r in client.search_runs([exp_id], filter_string=f"tags.`fstag.exp` = '{exp}'")]
    assert len(names) == 1  # one run for the job, whatever was sent twice


@pytest.mark.slow(seconds=60)
def test_a_sweep_launched_while_the_server_is_away_runs_its_jobs_and_sync_sends_them_later(demo_project, server):
    """``train.py -m`` (Hydra's basic launcher) while the tracking server does not answer: the launch goes on
    without a parent run in MLflow, under a placeholder that names its local records only; its jobs end complete
    and unsynced, ``sweep:<name>`` finds them; once the server is back, ``sync`` sends their runs, parentless."""
    exp = "outage_sweep"
    common = [f"exp={exp}", f"mlflow.experiment={EXPERIMENT}", f"mlflow.tracking_uri={server.uri}"]
    # no retry, short timeouts: a call that reached the server would fail fast (none should: each asks first)
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    server.stop()
    res = demo_project.run("train.py", "-m", *TINY_TRAIN, "trainer.max_epochs=2", "fold=0,1", "sweep_name=offline",
                           *common, "mlflow.end_wait_s=2", env=env)
    log_text = res.stdout + res.stderr
    assert (f"MLflow store {server.uri} does not answer: the launch goes on without a parent run in MLflow"
            in log_text), log_text[-4000:]
    assert "python -m fstag.runs sync" in log_text and "Traceback" not in log_text

    # the launch's local records, under a placeholder parent id: ended FINISHED, with the sweep's summary
    sweeps = demo_project.root / "multirun" / exp / ".sweeps"
    (launch_file,) = sweeps.glob("*.json")
    launch = json.loads(launch_file.read_text())
    parent = launch["mlflow_parent_run_id"]
    assert parent.startswith("local-") and len(parent) == len("local-") + 32
    assert set(parent[len("local-"):]) <= set("0123456789abcdef")
    assert launch["name"] == "offline" and launch["status"] == "FINISHED" and "parent_end" not in launch
    assert (sweeps / parent / "summary.csv").is_file()
    records = [json.loads(p.read_text()) for p in sorted((sweeps / parent / "jobs").glob("*.json"))]
    assert [r["status"] for r in records] == ["COMPLETED", "COMPLETED"]
    job_dirs = sorted(Path(r["job_dir"]) for r in records)
    assert [d.name for d in job_dirs] == ["fold_0", "fold_1"]
    for d in job_dirs:  # complete on disk, unsynced, each under a placeholder run id of its own
        info = json.loads((d / "run.json").read_text())
        assert info["complete"] and info["mlflow_synced"] is False
        assert info["mlflow_run_id"].startswith("local-") and info["mlflow_run_id"] != parent
        assert (d / "mlflow_journal.jsonl").is_file()

    # the sweep's selector lists both jobs from their folders while the server is still away
    listed = demo_project.run("-m fstag.runs", "sweep:offline", *common, "--as", "json", env=env).stdout
    rows = json.loads(listed)
    assert sorted(Path(r["path"]) for r in rows) == job_dirs
    assert all(r["complete"] == "yes" and parent in r["sweeps"] for r in rows)

    server.start()
    synced = demo_project.run("-m fstag.runs", "sync", str(demo_project.root / "multirun" / exp), env=env)
    client = MlflowClient(server.uri)
    for d in job_dirs:
        assert f"synced {d}" in synced.stdout, synced.stdout
        run_id = _real_run_id(d)
        assert run_id and json.loads((d / "run.json").read_text())["mlflow_synced"] is True
        _assert_finished_with_artifacts(client, run_id)
        _steps_exactly_once(client, run_id, 2)
        assert "mlflow.parentRunId" not in client.get_run(run_id).data.tags  # no parent the store lacks
        assert not (d / "mlflow_journal.jsonl").exists()


def _launch_parent(project, exp: str) -> str | None:
    """The MLflow parent run id of the launch of ``exp``, once its start has written its record."""
    for f in (project.root / "multirun" / exp / ".sweeps").glob("*.json"):
        rid = json.loads(f.read_text()).get("mlflow_parent_run_id")
        if rid and not rid.startswith("local-"):
            return rid
    return None


@pytest.mark.slow(seconds=60)
def test_a_sweep_whose_server_goes_away_before_its_end_ends_and_its_parent_run_is_ended_later(demo_project, server):
    """The server answers at the launch's start (its parent run is created) and is away from its first job to its
    end: the launch ends without waiting on the store, exit status 0, its summary on disk; the parent's end waits
    in the launch record until the next launch in the same exp finds the server again."""
    exp = "outage_sweep_end"
    common = [f"exp={exp}", f"mlflow.experiment={EXPERIMENT}", f"mlflow.tracking_uri={server.uri}"]
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    sweep = ["train.py", "-m", *TINY_TRAIN, "fold=0,1", "sweep_name=away", *common, "mlflow.end_wait_s=2"]
    with ThreadPoolExecutor(1) as pool:
        launch = pool.submit(demo_project.run, *sweep, env=env)
        _wait_for("the launch's parent run", lambda: _launch_parent(demo_project, exp), launch)
        server.stop()  # before the launch's jobs have trained: away until after its end
        res = launch.result()
    parent = _launch_parent(demo_project, exp)
    log_text = res.stdout + res.stderr
    assert f"MLflow store {server.uri} does not answer: the sweep's parent run {parent} is not ended" in log_text
    assert "Traceback" not in log_text
    sweeps = demo_project.root / "multirun" / exp / ".sweeps"
    (launch_file,) = sweeps.glob("*.json")
    record = json.loads(launch_file.read_text())
    assert record["status"] == "FINISHED" and record["parent_end"] == {"status": "FINISHED", "cause": None}
    assert (sweeps / parent / "summary.csv").is_file()
    jobs = [json.loads(p.read_text()) for p in sorted((sweeps / parent / "jobs").glob("*.json"))]
    assert [j["status"] for j in jobs] == ["COMPLETED", "COMPLETED"]

    server.start()
    client = MlflowClient(server.uri)
    assert client.get_run(parent).info.status == "RUNNING"
    demo_project.run("-m fstag.runs", "sync", str(demo_project.root / "multirun" / exp), env=env)
    for job in jobs:  # the jobs' runs, sent by sync, are the parent's children
        run = client.get_run(_real_run_id(Path(job["job_dir"])))
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    # the same command again: its jobs are complete; its start ends the earlier launch's parent run
    again = demo_project.run(*sweep, env=env)
    assert f"the sweep's parent run {parent} (launch {launch_file.name}) ended FINISHED" in again.stdout + again.stderr
    assert client.get_run(parent).info.status == "FINISHED"
    assert "parent_end" not in json.loads(launch_file.read_text())


def test_a_journal_whose_acknowledgements_were_lost_is_sent_again_without_duplicates(tmp_path):
    """A sender killed after the store took its entries but before it wrote their acknowledgements: the resend
    finds the run it created (by its journal id) and the store keeps each metric point once."""
    from mlflow.entities import Metric

    from fstag.runs.journal import JOURNAL, RunJournal, sync_journal

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / "job"
    journal = RunJournal.open(folder, uri, expect=None, pending_root=tmp_path / "pending", start=False)
    journal.open_run(EXPERIMENT, str(tmp_path / "artifacts"), "job/a", {"fstag.exp": "unit"}, {"lr": 0.1})
    client = journal.client()
    for step in range(3):
        client.log_batch(journal.current_id, metrics=[Metric("val_loss", 1.0 / (step + 1), 1000 + step, step)])
    (folder / "note.txt").write_text("artifact")
    client.log_artifact(journal.current_id, str(folder / "note.txt"))
    client.set_terminated(journal.current_id, "FINISHED")
    journal.close()
    path = folder / JOURNAL
    kept = path.read_text()
    assert json.loads(kept.splitlines()[0])["local_id"].startswith("local-")
    first = sync_journal(path, tmp_path / "pending")
    assert first.status == "synced" and first.sent == 6 and not path.exists()
    # the same journal again, as if no acknowledgement had been written, with a torn last line
    path.write_text(kept + '{"seq": 99, "op": "log_ba')
    second = sync_journal(path, tmp_path / "pending")
    assert second.status == "synced" and second.run_id == first.run_id
    store = MlflowClient(uri)
    assert [m.step for m in store.get_metric_history(first.run_id, "val_loss")] == [0, 1, 2]
    exp = store.get_experiment_by_name(EXPERIMENT)
    assert len(store.search_runs([exp.experiment_id])) == 1
    run = store.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert [a.path for a in store.list_artifacts(first.run_id)] == ["note.txt"]


@pytest.mark.slow(seconds=60)
def test_the_outage_bench_runs_in_its_tiny_mode(tmp_path):
    """bench/tracking_outage.py --tiny (its ``gone`` job and the sync), as a user runs it: its figures mean
    nothing, its checks (every epoch once, the run FINISHED after the sync) do."""
    from tests.bench_runner import NUMBER, numbers, run_bench

    out = run_bench("tracking_outage", tmp_path, "--fast-retries")
    assert "machine: " in out and "tiny preset, 6 epochs; outage after 2 epochs" in out
    outage, gap, sync = numbers(rf"^\| gone \| 6 \| yes \| FINISHED \| {NUMBER} \| {NUMBER} \|.* \| {NUMBER} \| False \|$", out)
    assert outage > 0 and gap > 0 and sync > 0
