"""Synthetic pretraining corpora: KernelSynth, simple structured series, their 1:1 mix, and multivariate
groups with covariates.

- `kernels`: the KernelSynth kernel bank, random kernel expressions, exact kernel matrices, the reference
  Cholesky sampler.
- `kernelsynth`: the fast exact GP sampler and `kernelsynth_series`.
- `simple`: trend / seasonality / noise, random-walk and intermittent-demand series.
- `multivariate`: groups of dependent variates, optionally driven by covariates.
- `corpus`: `generate` / `generate_multivariate` (seeding, worker processes) and writing `datasets` folders.
"""
from __future__ import annotations

from tsm.data.synth.corpus import (
    KINDS,
    generate,
    generate_multivariate,
    series_table,
    timestamp_values,
    write_corpus,
    write_multivariate_corpus,
)
from tsm.data.synth.kernels import (
    KERNEL_BANK,
    Kernel,
    Monomial,
    draw_kernel_expression,
    kernel_matrix,
    sample_expression_cholesky,
)
from tsm.data.synth.kernelsynth import kernelsynth_series, sample_expression
from tsm.data.synth.multivariate import multivariate_item
from tsm.data.synth.simple import simple_series

# Internals that tests/data/test_synth.py and bench/bench_synth.py reach through `tsm.data.synth`: the
# sampler's caches (cleared between benchmark repeats) and the pieces whose exactness the tests check.
# They are the same objects as in the submodules, so clearing a cache here clears the one in use.
from tsm.data.synth.corpus import _single_threaded_blas as _single_threaded_blas  # isort: skip
from tsm.data.synth.kernelsynth import (  # isort: skip
    _cached_circulant_sqrt_eigenvalues as _cached_circulant_sqrt_eigenvalues,
    _circulant_sqrt_eigenvalues as _circulant_sqrt_eigenvalues,
    _interpolation_matrix as _interpolation_matrix,
    _node_factor as _node_factor,
    _product_spectrum as _product_spectrum,
    _smooth_features as _smooth_features,
)

__all__ = [
    "KERNEL_BANK",
    "KINDS",
    "Kernel",
    "Monomial",
    "draw_kernel_expression",
    "generate",
    "generate_multivariate",
    "kernel_matrix",
    "kernelsynth_series",
    "multivariate_item",
    "sample_expression",
    "sample_expression_cholesky",
    "series_table",
    "simple_series",
    "timestamp_values",
    "write_corpus",
    "write_multivariate_corpus",
]
