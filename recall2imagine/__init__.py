"""recall2imagine: a model-based RL agent with state-space-model memory (R2I) in JAX."""

__version__ = "0.1.0"
