"""Suite-wide setup: CPU JAX with a persistent compilation cache (compiles dominate small tests)."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
# LLVM's optimisation passes are most of XLA's CPU compile time and buy nothing for the
# suite's tiny models (about 40% less CPU time); train.py subprocesses inherit the flag.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                 "--xla_backend_optimization_level=0"]))

import jax  # noqa: E402

_CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_collection_modifyitems(items):
    """Slow tests first: with several workers the quick ones then fill in around them
    instead of leaving one worker alone with a long test at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
