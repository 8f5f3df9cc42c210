"""Preprocessing benchmark: the seed's way (librosa per file in a process pool) against preprocess.py.

    python bench/preprocess.py [--n-clips 1000 | --n-clips 500,2000 [--full 18873]] [--seconds 7] [--workers N]
                               [--data-dir DIR] [--device cpu|cuda] [--no-as-written] [--no-pinned-seed] [--tiny]

Writes ``--n-clips`` clips of about ``--seconds`` s (44.1 kHz 16-bit wav, the demo generator's instrument
recordings; reused when ``--data-dir`` already holds them), then times, each in a fresh process with its
start-up (interpreter, imports, pool creation) included, on the same files:

(a) the seed's way: a ``multiprocessing.Pool`` of one process per core, each file ``librosa.load(sr=None)``
    -> ``effects.trim`` -> ``resample`` -> ``melspectrogram`` -> ``power_to_db`` -> ``delta`` ->
    ``delta(order=2)`` -> ``np.save``; as written (numpy's BLAS free to start its own threads in every
    worker, which oversubscribes the cores) and, unless ``--no-pinned-seed``, with BLAS pinned to one
    thread per worker (the seed at its best);
(b) ``python preprocess.py data=fsdkaggle2018 data.root=<clips>`` into a fresh feature folder.

Prints wall times, clips/s, the ratios and the machine. With several counts (``--n-clips 500,2000``: the
first 500 of the 2000 clips in a data root of their own), each method runs at each count, and a line through
its times separates its start-up from its steady rate and extrapolates to ``--full`` clips (FSDKaggle2018's
18,873 train + test clips; at 1,000 clips start-up weighs much). ``--tiny``: the same runs at 12 and 24 clips
of 1 s on CPU (the seed at 24 only), without the pinned seed run (the same command with other environment variables); a smoke
test where start-up dominates, so its ratios mean nothing.
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


def subset_root(data_dir: Path, files: list[str], n: int, root: Path) -> Path:
    """A data root of the first ``n`` clips of ``data_dir`` (its audio folders linked, its CSVs cut to them)."""
    import pandas as pd

    keep = {os.path.basename(f) for f in files[:n]}
    root.mkdir(parents=True, exist_ok=True)
    for name, csv in (("audio_train", "train.csv"), ("audio_test", "sample_submission.csv")):
        (root / name).symlink_to(data_dir / name)
        table = pd.read_csv(data_dir / csv)
        table[table["fname"].isin(keep)].to_csv(root / csv, index=False)
    return root


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """``(start-up s, clips/s)`` of the least-squares line seconds = start-up + clips / rate."""
    import numpy as np

    n, t = np.array([p[0] for p in points], dtype=float), np.array([p[1] for p in points], dtype=float)
    slope, intercept = np.polyfit(n, t, 1)
    return float(intercept), float(1.0 / slope) if slope > 0 else float("inf")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-clips", default="1000", help="clips per run; several (500,2000): each method at each count, "
                    "and a line through them (start-up + clips/s) extrapolated to --full")
    ap.add_argument("--full", type=int, default=18873, help="the count to extrapolate to (FSDKaggle2018's train + test clips)")
    ap.add_argument("--no-as-written", action="store_true", help="skip the seed run as written (BLAS free: slow)")
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
        a.n_clips, a.seconds, a.device, a.no_pinned_seed = "12,24", 1.0, "cpu", True
        print("TINY RUN (--tiny: a smoke test on tiny inputs; do not quote these numbers)", flush=True)

    sys.path.insert(0, str(REPO))
    counts = sorted({int(c) for c in str(a.n_clips).split(",")})
    workers = a.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    scratch = Path(tempfile.mkdtemp(prefix="fstag-bench-"))
    try:
        data_dir = (a.data_dir or scratch / "data").resolve()
        all_files = ensure_clips(data_dir, counts[-1], a.seconds)
        print(f"{len(all_files)} clips of ~{a.seconds:g} s in {data_dir}; {workers} workers; runs of {', '.join(map(str, counts))} clips",
              flush=True)
        methods = ([] if a.no_as_written else ["seed (librosa per file, Pool, as written)"]) + \
            ([] if a.no_pinned_seed else ["seed, BLAS pinned to 1 thread per worker"]) + ["preprocess.py"]
        times: dict[str, list[tuple[int, float]]] = {m: [] for m in methods}
        worst = float("nan")
        for n in counts:
            files = all_files[:n]
            root = data_dir if n == len(all_files) else subset_root(data_dir, all_files, n, scratch / f"subset_{n}")
            out = scratch / f"run_{n}"
            (out / "npy").mkdir(parents=True)
            (out / "files.txt").write_text("\n".join(files))
            seed_cmd = [sys.executable, __file__, "--seed-run", str(out / "files.txt"), str(out / "npy"), str(workers)]
            for name in methods:
                if a.tiny and name.startswith("seed") and n != counts[-1]:
                    continue  # --tiny: the seed at the larger count only (a line through preprocess.py's counts)
                if name.startswith("seed"):
                    shutil.rmtree(out / "npy")
                    (out / "npy").mkdir()
                    seconds = timed(seed_cmd, PIN_ENV if "pinned" in name else None)
                else:
                    seconds = timed([sys.executable, str(REPO / "preprocess.py"), "data=fsdkaggle2018", f"data.root={root}",
                                     f"data.features_dir={out / 'features'}", f"preprocess.device={a.device}",
                                     f"preprocess.num_workers={workers}", "preprocess.progress=false"], {"FSTAG_ROOT": str(out)})
                times[name].append((n, seconds))
            if any((out / "npy").iterdir()):  # the seed ran at this count
                worst = max_difference(out, files[:5])

        print(f"machine: {machine(a.device)}")
        if worst == worst:  # a seed ran
            print(f"  max |seed - preprocess.py| over 5 clips (float16 cache): {worst:.3f}")
        for name, points in times.items():
            for n, seconds in points:
                print(f"  {name:44s} {n:6d} clips {seconds:7.2f} s  {n / seconds:7.1f} clips/s")
        ours = times["preprocess.py"]
        for name, points in list(times.items())[:-1]:
            print(f"  speed-up of preprocess.py over {name}: {points[-1][1] / ours[-1][1]:.2f}x at {counts[-1]} clips")
        if len(counts) > 1:  # start-up and steady rate from the counts, and what that makes the full data set
            print(f"  a line through the {len(counts)} counts, extrapolated to {a.full} clips:")
            full = {}
            for name, points in times.items():
                if len(points) < 2:
                    continue
                startup, rate = fit_line(points)
                full[name] = startup + a.full / rate
                print(f"  {name:44s} start-up {startup:6.2f} s, {rate:7.1f} clips/s -> {full[name]:7.1f} s")
                if rate == float("inf"):
                    print(f"  ({name}: the larger count was not slower; use counts further apart)")
            for name in [m for m in full if m != "preprocess.py"]:
                ratio = full[name] / full["preprocess.py"] if full["preprocess.py"] > 0 else float("nan")
                print(f"  speed-up of preprocess.py over {name}: {ratio:.2f}x at {a.full} clips (extrapolated)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
