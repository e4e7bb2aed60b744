"""The names of what a training run writes, in one place: the trainer writes them, and the evaluator,
the report, the workflow and the tests read them.

A run folder (`output_dir`, e.g. `results/test/stage1/`) holds the resolved config, the log, the summary,
the model-selection record, TensorBoard events and model folders: `checkpoint-{step}/` (resumable) and
`final-checkpoint/` (weights and config). Every model folder holds a Hugging Face model (config.json,
model.safetensors), the tsm config it was trained with and its training provenance.
"""

from __future__ import annotations

import re
from pathlib import Path

# The run folder
RESOLVED_CONFIG = "resolved_config.yaml"
TRAINING_LOG = "training.log"
TRAINING_SUMMARY = "training-summary.json"  # what the run did, for the report (tsm.train.summary)
MODEL_SELECTION = "model-selection.json"  # scores, the top-K checkpoints and the export decision
BEST_CHECKPOINT_LINK = "best-checkpoint"
TENSORBOARD = "tensorboard"
TRACKER_RUNS = "tracker-runs.json"  # the MLflow / W&B run ids a later leg of the run continues (tsm.train.trackers)
PROFILE = "profile"  # torch.profiler traces and CUDA memory snapshots of profile_steps (tsm.train.profiling)
FINAL_CHECKPOINT = "final-checkpoint"
# final-checkpoint set aside by `tsm launch` when SLURM's warning signal came as the training finished: the
# workflow's job step (signalled too) fails the job and would delete it; the requeued leg puts it back. The
# marker holds the SLURM job id: every node of that job's next leg ends at once.
PARKED_FINAL_CHECKPOINT = ".final-checkpoint-parked"
FINISHED_AT_SIGNAL = ".finished-at-signal"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")

# Inside a model folder
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
CONFIG_COPY = "tsm_config.yaml"
PROVENANCE = "training-provenance.json"
LORA_ADAPTER = "lora-adapter"
# Inside a checkpoint folder, for resuming
TRAINER_STATE = "trainer_state.pt"
SHARDED_STATE = "dcp"

# The data checks' output (tsm data check), in results/{run}/data-checks/
DATA_CHECKS = "data-checks"
DATA_CHECK_REPORT = "report.json"
DATA_CHECK_SUMMARY = "summary.txt"

# The seasonal-naive baseline: its model rows in tsm evaluate's CSVs and its results file benchmark/seasonal-naive.csv
SEASONAL_NAIVE = "seasonal-naive"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def rng_state_name(rank: int) -> str:
    return f"rng_state_{rank}.pt"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """`(step, folder)` of every `checkpoint-{step}` folder in `output_dir`, oldest first."""
    output_dir = Path(output_dir)
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            match = CHECKPOINT_RE.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    return sorted(found)
