"""Suite-wide setup: CPU JAX with a persistent compilation cache (compiles dominate small tests)."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
# LLVM's optimisation passes are most of XLA's CPU compile time and buy nothing for the
# suite's tiny models (about 40% less CPU time). Without XLA's newer CPU fusion emitters the
# debug agent's train step compiles in 36-52% less time (S5 4.7 s against 8.0, GRU 4.7
# against 7.3, HCAM 6.4 against 13.5) and runs 27-38% slower (S5 13 ms against 10),
# which the suite's short runs more than win back (benchmarks/results/
# train_step_debug_xla_opt0{,_nofusion}.json). At training widths the emitters win (the
# `cpu visualmatch` step at T = 128: 92 ms against 124, train_step_visualmatch_xla_*.json),
# so training and the benchmarks keep XLA's defaults. train.py subprocesses inherit both flags.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                 "--xla_backend_optimization_level=0",
                                                 "--xla_cpu_use_fusion_emitters=false"]))

import jax  # noqa: E402

_CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_collection_modifyitems(items):
    """Slow tests at the head of each worker's share (the Makefile runs two workers with
    --dist worksteal, which first splits the list in two halves): each worker starts with half
    of them and the quick tests fill in around them, instead of one long test left at the end."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    quick = [item for item in items if not item.get_closest_marker("slow")]
    half = len(quick) // 2
    items[:] = slow[0::2] + quick[:half] + slow[1::2] + quick[half:]
