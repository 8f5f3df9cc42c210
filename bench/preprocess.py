"""Preprocessing benchmark: the seed's way (librosa per file in a process pool) against preprocess.py.

    python bench/preprocess.py [--n-clips 1000] [--seconds 7] [--workers N] [--data-dir DIR]
                               [--device cpu|cuda] [--no-pinned-seed] [--tiny]

Writes ``--n-clips`` clips of about ``--seconds`` s (44.1 kHz 16-bit wav, the demo generator's instrument
recordings; reused when ``--data-dir`` already holds them), then times, each in a fresh process with its
start-up (interpreter, imports, pool creation) included, on the same files:

(a) the seed's way: a ``multiprocessing.Pool`` of one process per core, each file ``librosa.load(sr=None)``
    -> ``effects.trim`` -> ``resample`` -> ``melspectrogram`` -> ``power_to_db`` -> ``delta`` ->
    ``delta(order=2)`` -> ``np.save``; as written (numpy's BLAS free to start its own threads in every
    worker, which oversubscribes the cores) and, unless ``--no-pinned-seed``, with BLAS pinned to one
    thread per worker (the seed at its best);
(b) ``python preprocess.py data=fsdkaggle2018 data.root=<clips>`` into a fresh feature folder.

Prints wall times, clips/s, the ratios and the machine. ``--tiny``: the same runs on 24 clips of 1 s on
CPU, without the pinned seed run (the same command with other environment variables); a smoke test of
half a minute where start-up dominates, so its ratios mean nothing.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIN_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --------------------------------------------------------------------------------------------------
# (a) the seed's way; runs in its own process (``--seed-run``), importing only what the seed imported
# --------------------------------------------------------------------------------------------------


def _seed_one(job: tuple[str, str]) -> None:
    import librosa
    import numpy as np

    path, out_dir = job
    y, sr = librosa.load(path, sr=None)
    y, _ = librosa.effects.trim(y, top_db=60)
    y = librosa.resample(y, orig_sr=sr, target_sr=22050)
    mel = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1764, hop_length=220, n_mels=64)
    logmel = librosa.power_to_db(mel)
    d1 = librosa.feature.delta(logmel, width=9)
    d2 = librosa.feature.delta(logmel, width=9, order=2)
    np.save(os.path.join(out_dir, os.path.basename(path) + ".npy"), np.stack([logmel, d1, d2]))


def seed_run(files_list: str, out_dir: str, workers: int) -> None:
    from multiprocessing import Pool

    files = Path(files_list).read_text().split("\n")
    with Pool(workers) as pool:
        for _ in pool.imap_unordered(_seed_one, [(f, out_dir) for f in files], chunksize=4):
            pass


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


def ensure_clips(data_dir: Path, n_clips: int, seconds: float) -> list[str]:
    """The demo generator's clips (all in the train split but one) of ``seconds`` +- 7 %, reused."""
    marker = data_dir / f".bench-{n_clips}x{seconds:g}s"
    if not marker.is_file():
        from fstag.data.demo import generate_demo_dataset

        if data_dir.exists():
            shutil.rmtree(data_dir)
        generate_demo_dataset(data_dir, n_train=n_clips - 1, n_test=1, n_shifted=0, min_duration=0.93 * seconds,
                              max_duration=1.07 * seconds, median_duration=seconds, max_margin=0.5)
        marker.touch()
    return sorted(glob.glob(str(data_dir / "audio_*" / "*.wav")))


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return elapsed


def machine(device: str) -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    import librosa
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device == "cuda" else ""
    return (f"{model}, {cores} cores{gpu}; python {platform.python_version()}, torch {torch.__version__}, "
            f"librosa {librosa.__version__}")


def max_difference(scratch: Path, files: list[str]) -> float:
    """Largest absolute difference between the seed's .npy and the cache (same config, log-mel in dB)."""
    import numpy as np

    from fstag.data.feature_store import FeatureStore, feature_dir
    from fstag.data.feature_config import FeatureConfig

    directory = feature_dir(scratch / "features", FeatureConfig())
    stores = {split: FeatureStore.open(directory, split) for split in ("train", "test")}
    worst = 0.0
    for f in files:
        store = next(s for s in stores.values() if os.path.basename(f) in s)
        ours = store[store.index_of(os.path.basename(f))].astype(np.float32)
        worst = max(worst, float(np.abs(ours - np.load(scratch / "npy" / (os.path.basename(f) + ".npy"))).max()))
    return worst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-clips", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=7.0)
    ap.add_argument("--workers", type=int, default=None, help="seed pool size and preprocess threads (default: all cores)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where the clips are written (default: a temporary folder)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--no-pinned-seed", action="store_true", help="skip the seed run with BLAS pinned to 1 thread")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: 24 clips of 1 s on CPU, no pinned seed run")
    ap.add_argument("--seed-run", nargs=3, metavar=("FILES", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.seed_run:
        seed_run(a.seed_run[0], a.seed_run[1], int(a.seed_run[2]))
        return
    if a.tiny:  # one clip per label of the demo's 21, plus a test clip and two more; the seed run once
        a.n_clips, a.seconds, a.device, a.no_pinned_seed = 24, 1.0, "cpu", True
        print("TINY RUN (--tiny: a smoke test on tiny inputs; do not quote these numbers)", flush=True)

    sys.path.insert(0, str(REPO))
    workers = a.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    scratch = Path(tempfile.mkdtemp(prefix="fstag-bench-"))
    try:
        data_dir = a.data_dir or scratch / "data"
        files = ensure_clips(data_dir.resolve(), a.n_clips, a.seconds)
        n = len(files)
        (scratch / "files.txt").write_text("\n".join(files))
        seed_cmd = [sys.executable, __file__, "--seed-run", str(scratch / "files.txt"), str(scratch / "npy"), str(workers)]
        runs: dict[str, float] = {}
        print(f"{n} clips of ~{a.seconds:g} s in {data_dir}; {workers} workers", flush=True)

        (scratch / "npy").mkdir()
        runs["seed (librosa per file, Pool, as written)"] = timed(seed_cmd)
        if not a.no_pinned_seed:
            shutil.rmtree(scratch / "npy")
            (scratch / "npy").mkdir()
            runs["seed, BLAS pinned to 1 thread per worker"] = timed(seed_cmd, PIN_ENV)
        ours = [sys.executable, str(REPO / "preprocess.py"), "data=fsdkaggle2018", f"data.root={data_dir.resolve()}",
                f"data.features_dir={scratch / 'features'}", f"preprocess.device={a.device}",
                f"preprocess.num_workers={workers}", "preprocess.progress=false"]
        runs["preprocess.py"] = timed(ours, {"FSTAG_ROOT": str(scratch)})

        print(f"machine: {machine(a.device)}")
        print(f"  max |seed - preprocess.py| over 5 clips (float16 cache): {max_difference(scratch, files[:5]):.3f}")
        for name, seconds in runs.items():
            print(f"  {name:44s} {seconds:7.2f} s  {n / seconds:7.1f} clips/s")
        for name, seconds in list(runs.items())[:-1]:
            print(f"  speed-up of preprocess.py over {name}: {seconds / runs['preprocess.py']:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
