"""Forecast-quality ablation of the default DAG: each recipe change against the default, same budget.

    python bench/quality_ablation.py [--seeds 0 1] [--variants default no-short-context ...] [--cores 2]

Every (variant, seed) runs the default DAG (`snakemake --profile profiles/local`, config/config.yaml)
with the variant's changes merged on top and its own run name, up to the benchmark CSVs (no report),
under results/ablation-<variant>-s<seed>/. The seed moves both the synthetic corpus and the training
seeds. It prints aggregate relative WQL and MASE (geometric mean over lite-offline's datasets of model /
seasonal naive) of stage 1 and stage 2 per run, their mean over seeds per variant, and each variant's
mean as a ratio to the default's (> 1: the change helped, i.e. removing it hurt). Runs already complete
are read back, not rerun. On 2 cores one run takes about 7-8 minutes.
"""

from __future__ import annotations

import argparse
import copy
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"

def merge(base: dict, changes: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Each variant takes one change of the default recipe back to round one's (or all of them): config/config.yaml
# with these keys replaced (nested dicts merged key by key, as Snakemake merges config files). "null" is a
# string here because stage overrides reach the trainer as `--set KEY=VALUE` text.
NO_SHORT_CONTEXT = {"stage1": {"overrides": {"short_context_share": 0.0}},
                    "stage2": {"overrides": {"short_context_share": 0.0}}}
NO_TSMIXUP = {"data": {"tsmixup": None}}
DROPOUT = {"stage1": {"overrides": {"model.dropout_rate": 0.1}}}  # stage 2 inherits the model's dropout
ROUND_ONE_STAGE2 = {"stage2": {"overrides": {"learning_rate": 3.0e-4, "warmup_ratio": 0.0, "eval_steps": "null"}}}
VARIANTS: dict[str, dict] = {
    "default": {},
    "no-short-context": NO_SHORT_CONTEXT,
    "no-tsmixup": NO_TSMIXUP,
    "dropout-0.1": DROPOUT,
    "round-one-stage2": ROUND_ONE_STAGE2,
    "round-one": functools.reduce(merge, (NO_SHORT_CONTEXT, NO_TSMIXUP, DROPOUT, ROUND_ONE_STAGE2)),
}
def run_config(variant: str, seed: int) -> dict:
    config = merge(yaml.safe_load(DEFAULT_CONFIG.read_text()), VARIANTS[variant])
    config["run"] = f"ablation-{variant}-s{seed}"
    config["data"]["synth"]["seed"] = seed
    if config["data"].get("tsmixup"):
        config["data"]["tsmixup"]["seed"] = seed
    for stage in ("stage1", "stage2"):
        config[stage]["overrides"] = {**(config[stage].get("overrides") or {}), "seed": 42 + seed}
    return config


def aggregate(results: Path, model: str) -> dict[str, float]:
    scores = pd.read_csv(results / "benchmark" / f"{model}.csv").set_index("dataset")
    naive = pd.read_csv(results / "benchmark" / "seasonal-naive.csv").set_index("dataset")
    return {metric: float(np.exp(np.log(scores[metric] / naive.loc[scores.index, metric]).mean()))
            for metric in ("WQL", "MASE")}


def run(variant: str, seed: int, cores: int) -> dict[str, float]:
    config = run_config(variant, seed)
    results = REPO / "results" / config["run"]
    results.mkdir(parents=True, exist_ok=True)
    config_file = results / "ablation-config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [f"results/{config['run']}/benchmark/{m}.csv" for m in ("stage1", "stage2", "seasonal-naive")]
    # The full config as the only --configfile would still be merged over config.yaml's; that is what we want.
    # Targets before --configfile, which takes every word after it.
    command = ["snakemake", *targets, "--profile", "profiles/local", "--cores", str(cores),
               "--configfile", str(config_file)]
    with open(results / "ablation.log", "w") as log:
        if subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"{variant} seed {seed} failed: see {results / 'ablation.log'}")
    return {f"{stage} {metric}": value for stage in ("stage1", "stage2")
            for metric, value in aggregate(results, stage).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            scores = run(variant, seed, args.cores)
            rows.append({"variant": variant, "seed": seed, **scores})
            print(f"{variant:>18} seed {seed}: " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    table = pd.DataFrame(rows)
    means = table.drop(columns="seed").groupby("variant", sort=False).mean()
    print("\nmean over seeds " + ", ".join(map(str, args.seeds)) + " (aggregate relative to seasonal naive):")
    print(means.round(3).to_string())
    if "default" in means.index:
        print("\nvariant / default (> 1: the default's change helps):")
        print((means / means.loc["default"]).round(3).to_string())


if __name__ == "__main__":
    main()
