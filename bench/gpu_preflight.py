"""Preflight of the GPU check (issue 26): before any corpus or compile, import everything bench/gpu_check.py
imports, print the versions, and try on this machine the two things that broke or could break a first GPU run:
a compiled training step after the TF32 setting (pytorch#166387), and the backward of attention with fully
masked rows (group attention has them at every padded patch; cuDNN attention gives NaN there).
Exit status 1 with one line per problem, naming what to do.

  python bench/gpu_preflight.py            # bench/gpu_check.sh runs it first
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Distributions the check imports (the image brings torch and accelerate; bench/gpu_requirements.txt the rest),
# then the tsm modules on its path, which import them in turn.
PACKAGES = {"torch": "torch", "accelerate": "accelerate", "transformers": "transformers", "chronos": "chronos",
            "pydantic": "pydantic", "pydantic_core": "pydantic_core", "pyarrow": "pyarrow", "datasets": "datasets",
            "pandas": "pandas", "numpy": "numpy", "yaml": "yaml", "tensorboard": "tensorboard", "peft": "peft",
            "safetensors": "safetensors", "einops": "einops", "psutil": "psutil", "xxhash": "xxhash"}
TSM_MODULES = ["tsm.config", "tsm.model", "tsm.data.synth.corpus", "tsm.train.loop", "tsm.train.monitor",
               "torch.utils.tensorboard", "tensorboard.backend.event_processing.event_accumulator"]


def check_imports() -> list[str]:
    problems = []
    for module, name in PACKAGES.items():
        try:
            imported = importlib.import_module(module)
            print(f"  {name} {getattr(imported, '__version__', '?')}")
        except Exception as exc:  # an ImportError, or a wheel built for another Python
            problems.append(f"import {module}: {type(exc).__name__}: {exc}")
    for module in TSM_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            problems.append(f"import {module}: {type(exc).__name__}: {exc}")
    return problems


def check_compiled_step(device: str) -> list[str]:
    """A compiled forward and backward of a small model, after the training loop's own TF32 setting, with
    matmul autotuning on and inductor's caches off (a cached graph skips it): the path in which inductor 2.10/2.11
    reads the legacy precision getter."""
    import torch
    import torch._inductor.config as inductor_config

    from tsm.train.loop import enable_tf32

    enable_tf32()
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 1)).to(device)
    step = torch.compile(lambda x: model(x).sum().backward())
    started = time.perf_counter()
    try:
        with inductor_config.patch(max_autotune=True, force_disable_caches=True):
            step(torch.randn(64, 64, device=device))
    except Exception as exc:
        return [f"compiled step after the TF32 setting: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"]
    finally:
        torch._dynamo.reset()  # the check's graph count starts from zero
    print(f"  compiled step after TF32: ok ({time.perf_counter() - started:.0f} s)")
    return []


def check_masked_attention(device: str) -> list[str]:
    """Forward and backward of the test model, in bf16 where the GPU has it, on a batch whose padded patches
    are fully masked rows of group attention (each row alone in its group): no NaN loss or gradient."""
    import torch

    from tsm.config import ModelArchConfig
    from tsm.model import build_model, choose_attention_backends

    if device == "cuda":
        choose_attention_backends()
    torch.manual_seed(0)
    model = build_model(ModelArchConfig(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                        dropout_rate=0.0), 256).to(device)
    context = torch.randn(4, 256).cumsum(-1)
    context[:2, :200] = float("nan")  # left padding: fully masked group-attention rows there
    batch = {"context": context.to(device), "future_target": torch.randn(4, 64, device=device),
             "num_output_patches": 4, "group_ids": torch.arange(4, device=device)}
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
        loss = model(**batch).loss
    loss.backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if not torch.isfinite(loss) or bad:
        return [f"attention with fully masked rows: loss {loss.item():.4g}, non-finite gradients in {bad[:3]}"]
    print(f"  attention backward with fully masked rows: finite (loss {loss.item():.4f})")
    return []


def main() -> int:
    print(f"preflight: Python {sys.version.split()[0]} at {sys.executable}")
    problems = check_imports()
    if not problems:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"  device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
        problems += check_compiled_step(device) + check_masked_attention(device)
    for problem in problems:
        print(f"PREFLIGHT FAILED: {problem}", file=sys.stderr)
    if problems:
        print("A missing package: run bench/fetch_gpu_wheels.sh where PyPI is reachable and carry bench/wheels "
              "(README, 'First GPU run').", file=sys.stderr)
        return 1
    print("preflight: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
