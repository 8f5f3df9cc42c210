"""Several training jobs at once on one device: what ``launcher.jobs_per_gpu=K`` buys (docs/clusters.md).

    python bench/jobs_per_gpu.py [--jobs 1,2,4,8] [--arch resnext101_32x4d] [--batch 128] [--steps 40] [--tiny]

For each K it starts K processes at once, each running the model-only training step of
bench/train_throughput.py's limit (fstag's network: forward + backward + SGD on random tensors on the
device, bf16 and channels_last on a GPU) for ``--warmup`` steps, then waits until all K are warm and times ``--steps`` steps. It prints
each K's samples/s per process and together, and the speed-up over one process: the figure behind
``launcher.jobs_per_gpu=auto`` (fstag.runs.launchers.AUTO_JOBS_PER_GPU); without K=1 in ``--jobs`` the
speed-up is against one process of the first K. ``--tiny``: CPU, cnn_small, batch 8, K = 2, 3 steps (a
smoke test; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import TINY_NOTE, machine  # noqa: E402


def steps_per_s(arch: str, batch: int, steps: int, warmup: int, device, on_warm) -> float:
    """Model-only samples/s, as bench/train_throughput.py's limit (fstag's network, SGD, bf16 and
    channels_last on a GPU), without Lightning or Hydra: a worker starts in seconds."""
    import torch

    from fstag.models.backbones import build_model

    gpu = device.type == "cuda"
    model = build_model({"name": arch, "pretrained": False, "in_chans": 3, "input_norm": "bn"}, num_classes=41).to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.009, momentum=0.9)
    x = torch.randn(batch, 3, 64, 150, device=device)
    y = torch.randint(0, 41, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            if gpu:
                torch.cuda.synchronize()
            on_warm()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            xin = model.normalize(x)
            loss = torch.nn.functional.cross_entropy(model.classify(xin.contiguous(memory_format=torch.channels_last) if gpu else xin), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if gpu:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def worker(barrier: Path, k: int, arch: str, batch: int, steps: int, warmup: int, device: str) -> None:
    """One process of a K: warm up, announce it, wait for the K-1 others, time; prints ``RATE <samples/s>``."""
    import os

    import torch

    def wait_for_all() -> None:
        (barrier / f"ready-{os.getpid()}").touch()
        deadline = time.time() + 600
        while len(list(barrier.glob("ready-*"))) < k:
            if time.time() > deadline:
                raise SystemExit(f"only {len(list(barrier.glob('ready-*')))} of {k} processes got warm in 10 min")
            time.sleep(0.01)

    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"RATE {steps_per_s(arch, batch, steps, warmup, torch.device(device), wait_for_all):.3f}", flush=True)


def run_k(k: int, a: argparse.Namespace) -> list[float]:
    """Samples/s of each of ``k`` processes running at once."""
    with tempfile.TemporaryDirectory(prefix="fstag-jobs-") as tmp:
        cmd = [sys.executable, __file__, "--worker", tmp, str(k), "--arch", a.arch, "--batch", str(a.batch),
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--device", a.device]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(k)]
        outs = [p.communicate(timeout=1800) for p in procs]
    rates = []
    for p, (out, err) in zip(procs, outs):
        line = next((x for x in out.splitlines() if x.startswith("RATE ")), None)
        if p.returncode != 0 or line is None:
            raise SystemExit(f"a process of K={k} failed ({p.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
        rates.append(float(line.split()[1]))
    return rates


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default="1,2,4,8", help="the Ks: processes at once")
    ap.add_argument("--arch", default="resnext101_32x4d")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default=None, help="cuda (default where there is one) or cpu")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: CPU, cnn_small, batch 8, K = 2, 3 steps")
    ap.add_argument("--worker", nargs=2, metavar=("BARRIER", "K"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.device is None and not a.tiny:
        import torch

        a.device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    if a.worker:
        worker(Path(a.worker[0]), int(a.worker[1]), a.arch, a.batch, a.steps, a.warmup, a.device)
        return
    if a.tiny:
        a.device, a.arch, a.batch, a.steps, a.warmup, a.jobs = "cpu", "cnn_small", 8, 3, 1, "2"
        print(TINY_NOTE)
    ks = [int(k) for k in a.jobs.split(",")]
    if not ks or min(ks) < 1:
        ap.error(f"--jobs={a.jobs}: positive numbers of processes, e.g. 1,2,4,8")
    print(f"machine: {machine(a.device)}")
    print(f"{a.arch}, batch {a.batch}, model-only training steps, {a.steps} timed after {a.warmup} warm-up, per process")
    print(f"{'K':>3} {'per job/s':>10} {'together/s':>11} {'speed-up':>9}")
    one = None
    for k in ks:
        rates = run_k(k, a)
        together = sum(rates)
        one = one or (together if k == 1 else rates[0])  # no K=1 run: against one process of the first K
        print(f"{k:>3} {together / k:>10.1f} {together:>11.1f} {together / one:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
