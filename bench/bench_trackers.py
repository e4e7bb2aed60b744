"""Tracker cost: the trainer's median step time with each `report_to` tracker on vs. TensorBoard alone, as ratios
measured in the same rounds.

Config: `config/training/chronos2-test.yaml` shrunk as the tests shrink it (d_model 64, context 128, batch 8:
short steps, so a per-step cost of the trackers shows the most; `--test-config` keeps d_model 256, context 512,
batch 16) on a synthetic random-walk corpus, logging every `--log-steps` (2: five times the test config's rate,
so the trackers get a flush of ~25 scalars every other step), checkpoints pushed past max_steps. Variants, each
a whole run:

- `off`: report_to [tensorboard] (the default)
- `mlflow-file`: + MLflow, a local file store
- `mlflow-server`: + MLflow, an `mlflow server` this script starts on loopback (sqlite store)
- `mlflow-unreachable`: + MLflow at a loopback port where nothing listens, with MLflow's default retries: its
  sending thread sleeps in back-off while training runs
- `wandb-offline`: + W&B, WANDB_MODE=offline (its service process runs beside training)

Rounds interleave the variants (the order rotates each round); a run's figure is its median step time after
`--warmup` steps (host time between optimizer steps, as the monitor measures it); a round's ratio is a variant's
median step time over `off`'s in that round; the printed figure is the median of the rounds' ratios.
Torch runs on `--threads` (default 1): the machine's 2 cores are shared with other jobs.
Usage: python bench/bench_trackers.py [--steps 40] [--rounds 3] [--warmup 5] [--log-steps 2] [--threads 1]
       [--variants off mlflow-file ...] [--test-config]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from tsm.config import load_config
from tsm.train.monitor import TrainingMonitor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_monitor import make_corpus, train_recording  # noqa: E402  (the monitor bench's corpus and run)

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "training" / "chronos2-test.yaml"
TINY = {"context_length": 128, "prediction_length": 32, "min_past": 16, "per_device_train_batch_size": 8,
        "model.d_model": 64, "model.d_kv": 16, "model.d_ff": 128, "model.num_heads": 4}
VARIANTS = ("off", "mlflow-file", "mlflow-server", "mlflow-unreachable", "wandb-offline")


class TimedMonitor(TrainingMonitor):
    """The real monitor, also recording when each step ended."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stamps: list[float] = []

    def on_step(self, step, *args, **kwargs):
        self.stamps.append(time.perf_counter())
        super().on_step(step, *args, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path):
    port = free_port()
    log = open(folder / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")], stdout=log, stderr=subprocess.STDOUT)
    try:
        while server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                time.sleep(0.2)
        if server.poll() is not None:
            raise SystemExit(f"mlflow server exited ({server.returncode}): see {folder / 'mlflow-server.log'}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()
        log.close()


def settings_for(variant: str, tmp: Path, server_uri: str | None) -> dict:
    if variant == "off":
        return {"monitoring.report_to": ["tensorboard"]}
    if variant == "wandb-offline":
        return {"monitoring.report_to": ["tensorboard", "wandb"]}
    uri = {"mlflow-file": (tmp / "mlruns").as_uri(), "mlflow-server": server_uri,
           "mlflow-unreachable": f"http://127.0.0.1:{free_port()}"}[variant]
    # The unreachable server's sender is still backing off when training ends: close waits only this long.
    return {"monitoring.report_to": ["tensorboard", "mlflow"], "monitoring.mlflow_tracking_uri": uri,
            "monitoring.tracker_timeout_s": 2.0 if variant == "mlflow-unreachable" else 600.0}


def median_step_ms(variant: str, corpus: Path, out: Path, args, tmp: Path, server_uri: str | None) -> float:
    cfg = load_config(TEST_CONFIG, {
        "training_data_paths": [str(corpus)], "output_dir": str(out), "max_steps": args.steps,
        "save_steps": args.steps * 10, "log_steps": args.log_steps, **settings_for(variant, tmp, server_uri),
        **({} if args.test_config else TINY),
    })
    monitor = train_recording(cfg, TimedMonitor)
    return float(np.median(np.diff(monitor.stamps[args.warmup:]))) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--log-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--test-config", action="store_true", help="the test config's own model and batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = ["off", *[v for v in args.variants if v != "off"]]
    if importlib.util.find_spec("wandb") is None and "wandb-offline" in variants:
        variants.remove("wandb-offline")
        print("wandb is not installed: wandb-offline left out")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_ALLOW_FILE_STORE="true", WANDB_MODE="offline",
                          WANDB_DIR=str(tmp), WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
                          WANDB_DATA_DIR=str(tmp / "wandb-data"), WANDB_SILENT="true")
        corpus = make_corpus(tmp / "corpus")
        server = mlflow_server(tmp) if "mlflow-server" in variants else contextlib.nullcontext()
        with server as server_uri:
            step_ms: dict[str, list[float]] = {v: [] for v in variants}
            ratios: dict[str, list[float]] = {v: [] for v in variants if v != "off"}
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for variant in order:
                    step_ms[variant].append(median_step_ms(variant, corpus, tmp / f"{variant}-{r}", args, tmp,
                                                           server_uri))
                for variant in ratios:
                    ratios[variant].append(step_ms[variant][-1] / step_ms["off"][-1])
                print(f"round {r + 1}: " + "  ".join(f"{v} {step_ms[v][-1]:.1f} ms" for v in variants), flush=True)
    print(f"\nmedian step time, {args.steps} steps, log every {args.log_steps}, {args.rounds} interleaved rounds:")
    print(f"  {'off (tensorboard only)':<24} {statistics.median(step_ms['off']):8.1f} ms")
    for variant, values in ratios.items():
        print(f"  {variant:<24} {statistics.median(step_ms[variant]):8.1f} ms   step time on/off "
              f"{statistics.median(values):.3f} (rounds: {', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
