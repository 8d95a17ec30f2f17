"""Structured state-space layers (S5-style) and resettable linear-recurrence scans.

Independent of the rest of recall2imagine: depends on jax, flax and numpy only.
"""

from ssm.init import hippo_init, hippo_legs, hippo_legs_normal, hippo_normal_eig
from ssm.s5 import S5Layer, clip_eigenvalues, discretize_bilinear, discretize_zoh
from ssm.scan import scan
from ssm.stack import SSMBlock, SSMStack

__all__ = [
    "scan",
    "S5Layer",
    "SSMBlock",
    "SSMStack",
    "hippo_init",
    "hippo_legs",
    "hippo_legs_normal",
    "hippo_normal_eig",
    "discretize_zoh",
    "discretize_bilinear",
    "clip_eigenvalues",
]
