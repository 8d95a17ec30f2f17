"""BSuite (Osband et al. 2020) environments and bsuite's score for the memory experiments.

Any bsuite id works (``memory_len/3``, ``discounting_chain/0``, ...): its dm_env
is built with bsuite's sweep settings and adapted to gymnasium. Observations are
bsuite's (1, d) float32 arrays flattened into ``vector`` (memory_len:
[1 - t/L, query, context], discounting_chain: [context, t/100]).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence

import numpy as np

from env_wrappers.dm_env_adapter import DmEnvAdapter

# bsuite's scoring constants (bsuite/experiments/*/analysis.py and sweep.py).
_MEMORY_LEN_EPISODES = 10_000
_MEMORY_LEN_REGRET_THRESHOLD = 0.75  # regret / (random's regret) below this passes
_DISCOUNTING_CHAIN_EPISODES = 1_000
_DISCOUNTING_CHAIN_BEST = 1.1


def make(bsuite_id: str, seed: int | None = None, **overrides) -> DmEnvAdapter:
    """Builds a bsuite id; ``overrides`` replace its sweep settings (``memory_length=200``).

    ``seed`` goes to experiments whose loader takes one. With seed None a fresh
    random seed is drawn, so that copies differ (bsuite's own default seed is the
    same for every copy).
    """
    from bsuite import bsuite as bsuite_loader
    from bsuite import sweep

    if bsuite_id not in sweep.SETTINGS:
        close = difflib.get_close_matches(bsuite_id, sweep.SWEEP, n=5, cutoff=0.6)
        experiments = sorted(bsuite_loader.EXPERIMENT_NAME_TO_ENVIRONMENT)
        raise ValueError(f"unknown bsuite id {bsuite_id!r} (close matches: {close or 'none'}); ids are "
                         f"<experiment>/<index> with experiment in {experiments}")
    experiment = bsuite_id.split("/")[0]
    loader = bsuite_loader.EXPERIMENT_NAME_TO_ENVIRONMENT[experiment]
    parameters = inspect.signature(loader).parameters
    unknown = set(overrides) - set(parameters)
    if unknown:
        raise ValueError(f"bsuite {experiment} takes no {sorted(unknown)}; its settings are {sorted(parameters)}")
    takes_seed = "seed" in parameters

    def build(build_seed):
        settings = {**sweep.SETTINGS[bsuite_id], **overrides}
        if takes_seed:
            settings["seed"] = int(np.random.SeedSequence().entropy % 2**31) if build_seed is None else build_seed
        return loader(**settings)
    return DmEnvAdapter(build, seed)


def score(returns_by_id: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """bsuite's score per experiment from the episode returns of each id, in order.

    memory_len: a length passes when the fraction of correct (+1) episodes among
    the first min(episodes run, 10,000) exceeds 62.5% (bsuite: regret ratio
    2 (1 - accuracy) < 0.75); the score is the fraction of the lengths present
    that pass. discounting_chain: with n = min(longest run, 1,000), the mean
    per-episode return over the first n episodes of every run that reached n,
    scored clip(1 - 10 (1.1 - mean), 0, 1). Returns {experiment: score}.
    """
    runs: dict[str, list[np.ndarray]] = {}
    for bsuite_id, returns in returns_by_id.items():
        experiment = bsuite_id.split("/")[0]
        if experiment not in _SCORES:
            raise ValueError(f"no score for bsuite id {bsuite_id!r}; scored experiments: {sorted(_SCORES)}")
        returns = np.asarray(returns, np.float64).reshape(-1)
        if returns.size == 0:
            raise ValueError(f"bsuite id {bsuite_id!r} has no episode returns")
        runs.setdefault(experiment, []).append(returns)
    return {experiment: _SCORES[experiment](returns) for experiment, returns in runs.items()}


def _memory_len_score(runs: list[np.ndarray]) -> float:
    passed = []
    for returns in runs:
        returns = returns[:_MEMORY_LEN_EPISODES]
        regret_ratio = 2.0 * np.mean(returns <= 0)
        passed.append(regret_ratio < _MEMORY_LEN_REGRET_THRESHOLD)
    return float(np.mean(passed))


def _discounting_chain_score(runs: list[np.ndarray]) -> float:
    episodes = min(max(len(returns) for returns in runs), _DISCOUNTING_CHAIN_EPISODES)
    means = [returns[:episodes].mean() for returns in runs if len(returns) >= episodes]
    return float(np.clip(1.0 - 10.0 * (_DISCOUNTING_CHAIN_BEST - np.mean(means)), 0.0, 1.0))


_SCORES = {"memory_len": _memory_len_score, "discounting_chain": _discounting_chain_score}
