"""Sequence cores of the world model: the deterministic state h_t from u_t and the past.

`ssm_type` picks one; each core owns its options here, next to the code that builds it:
- `mimo` (R2I): a stack of S5 layers (`ssm.SSMStack`); the posterior is q(z_t | e_t), so a
  whole training sequence goes through one parallel (or sequential) scan call. Its SSM
  states, flattened, are the "hidden" features.
- `gru` (DreamerV3): a LayerNorm GRU whose state is h_t; the posterior q(z_t | h_t, e_t)
  needs h_t first, so training steps through time. "hidden" features mean h_t.
- `hcam` (hierarchical chunk attention, `recall2imagine.hcam`): a short-range causal path
  plus a top-k read over completed chunks of the past; posterior q(z_t | e_t) like mimo and
  one parallel call over (B, T) in training. "hidden" features mean h_t.

Every core offers `initial_state(batch_shape)` and `step(u, reset, state) -> (y, state)`;
parallel cores also a sequence call `core(u (T, B, H), reset (T, B), state, deterministic)`
returning y and either every step's state or (traced cores) a trace from which
`core.state_at(trace, t, b)` builds the state after any step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

import ssm
from ssm.s5 import DISCRETIZE
from ssm.scan import MODES as SCAN_MODES
from recall2imagine.config import ANY, Alias, ConfigError, between, non_negative, one_of, positive
from recall2imagine.gru import GRUCore
from recall2imagine.hcam import HCAMCore


@dataclasses.dataclass(frozen=True)
class CoreKind:
    """How the world model uses a core.

    parallel: the posterior ignores h_t and training runs one sequence call.
    state_is_deter: y_t is h_t itself (no output projection).
    hidden: state -> (..., F) float32 "hidden" features; None: "hidden" means h_t.
    traced: the sequence call returns a trace instead of every step's state (its per-step
      state is too large to keep for every step: a memory of past chunks).
    """

    parallel: bool
    state_is_deter: bool
    hidden: Callable | None
    traced: bool = False


def ssm_hidden(core):
    """SSM states (tuple of (..., P) complex) -> (..., n_layers * 2P) [real, imag] float32."""
    return jnp.concatenate([jnp.concatenate([s.real, s.imag], -1) for s in core], -1)


KINDS = {
    "mimo": CoreKind(parallel=True, state_is_deter=False, hidden=ssm_hidden),
    "gru": CoreKind(parallel=False, state_is_deter=True, hidden=None),
    "hcam": CoreKind(parallel=True, state_is_deter=False, hidden=None, traced=True),
}

OPTIONS = {
    "ssm_type": one_of(*KINDS),
    "ssm.n_layers": positive,
    "ssm.prenorm": ANY,
    "ssm.mlp": ANY,
    "ssm.glu": ANY,
    "ssm.dropout": between(0.0, 1.0, high_open=True),
    "ssm.scan": one_of(*SCAN_MODES),
    "ssm_cell.n_blocks": positive,
    "ssm_cell.conj_sym": ANY,
    "ssm_cell.discretization": one_of(*DISCRETIZE),
    "ssm_cell.clip_eigs": ANY,
    "ssm_cell.dt_min": positive,
    "ssm_cell.dt_max": positive,
    "hcam.n_layers": positive,
    "hcam.chunk": positive,
    "hcam.top_k": non_negative,  # 0: attend to every readable chunk (plain chunked attention)
    "hcam.heads": positive,
    "hcam.width": positive,
    "hcam.max_chunks": positive,
    "hcam.across_episodes": ANY,
    "hcam.time_encoding": ANY,
    "hcam.local_positions": ANY,
}
# R2I writes `ssm.parallel: True` (parallel scan) or False (sequential scan).
ALIASES = {"ssm.parallel": Alias("ssm.scan", {"true": "parallel", "false": "sequential"})}


def check_options(config) -> None:
    if config["rssm.hidden"] % config["ssm_cell.n_blocks"]:
        raise ConfigError(f"rssm.hidden ({config['rssm.hidden']}) must be divisible by ssm_cell.n_blocks "
                          f"({config['ssm_cell.n_blocks']}).")
    if config["hcam.width"] % config["hcam.heads"]:
        raise ConfigError(f"hcam.width ({config['hcam.width']}) must be divisible by hcam.heads "
                          f"({config['hcam.heads']}).")
    if config["ssm_cell.dt_min"] > config["ssm_cell.dt_max"]:
        raise ConfigError(f"ssm_cell.dt_min ({config['ssm_cell.dt_min']}) must not exceed ssm_cell.dt_max "
                          f"({config['ssm_cell.dt_max']}).")


def build_core(options, units: int, deter: int, hidden: int, initial: str, norm: str, dtype):
    """The core module named by options.ssm_type (options: this module's OPTIONS slice).

    units: width of the core input u_t; deter: width of h_t; hidden: SSM state size;
    initial: "learned" | "zeros" start state (mimo, gru)."""
    if options.ssm_type == "mimo":
        s, cell = options.ssm, options.ssm_cell
        gating = "glu" if s.glu else ("mlp" if s.mlp else "none")
        return ssm.SSMStack(
            n_layers=s.n_layers, state_size=hidden, n_blocks=cell.n_blocks,
            discretization=cell.discretization, dt_min=cell.dt_min, dt_max=cell.dt_max,
            conj_sym=cell.conj_sym, clip_eigs=cell.clip_eigs, gating=gating,
            prenorm=s.prenorm, dropout=s.dropout, initial=initial, scan_mode=s.scan)
    if options.ssm_type == "hcam":
        h = options.hcam
        return HCAMCore(features=units, n_layers=h.n_layers, chunk=h.chunk, top_k=h.top_k,
                        heads=h.heads, width=h.width, max_chunks=h.max_chunks,
                        across_episodes=h.across_episodes, time_encoding=h.time_encoding,
                        local_positions=h.local_positions,
                        dtype=dtype)
    return GRUCore(deter=deter, norm=norm, initial=initial, dtype=dtype)
