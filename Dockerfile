# GPU image for recall2imagine (JAX with CUDA 12).
#
#   docker build -t r2i .
#   docker run --rm --init --gpus all -v "$PWD/logs:/logs" r2i \
#       --configs popgym --task gym_popgym:popgym-RepeatPreviousEasy-v0 --logdir /logs/popgym
#
# More commands (Apptainer/Singularity, resuming from long-term storage, several GPUs,
# SLURM) are in env/README.md.
#
# The base only needs the NVIDIA driver hook-up: jax[cuda12] installs its own CUDA
# runtime, cuBLAS, cuDNN, NCCL and ptxas as pip wheels (pinned in
# env/requirements-gpu.txt). A "runtime" or "cudnn" base would add a second, older copy
# of those libraries to the loader path, a common cause of version-mismatch errors.
# The host needs an NVIDIA driver >= 525 and the NVIDIA container toolkit.
ARG BASE_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04
FROM ${BASE_IMAGE}

# Ubuntu 24.04's own Python (3.12) for the venv, and the libraries MuJoCo needs to render
# headless through EGL (memory-maze images, dm_control): the glvnd dispatch libraries
# (libEGL/libGL/libGLES/libOpenGL), Mesa as the software fallback when no GPU renderer
# is mounted, and OSMesa for MUJOCO_GL=osmesa on nodes without EGL at all.
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        python3 \
        python3-venv \
        libglvnd0 \
        libegl1 \
        libgl1 \
        libgles2 \
        libopengl0 \
        libglx-mesa0 \
        libegl-mesa0 \
        libgl1-mesa-dri \
        libosmesa6 \
    && rm -rf /var/lib/apt/lists/*

# Let glvnd find NVIDIA's EGL driver; the container toolkit mounts libEGL_nvidia.so.0
# when the "graphics" capability is requested (below). Without it, EGL falls back to Mesa.
RUN mkdir -p /usr/share/glvnd/egl_vendor.d \
    && printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n' \
        > /usr/share/glvnd/egl_vendor.d/10_nvidia.json

# A non-root user. UID 1000 matches the first user of most Linux hosts, so files written
# to a bind-mounted /logs belong to that user; build with --build-arg R2I_UID=$(id -u)
# to match yours. Ubuntu's images ship a user "ubuntu" with UID 1000: it makes way.
ARG R2I_UID=1000
RUN if id ubuntu > /dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --create-home --uid "${R2I_UID}" --user-group --shell /bin/bash r2i \
    && mkdir -p /logs \
    && chown r2i:r2i /logs

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# MuJoCo renders off-screen through EGL (no X server); PyOpenGL must agree.
# compute,utility: CUDA and nvidia-smi; graphics: the toolkit also mounts NVIDIA's EGL library.
ENV MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics

# JAX reserves 75% of GPU memory at start-up by default. The learner is the only large user
# of the GPU here, so it gets 90%, leaving room for cuDNN/cuBLAS workspaces and the EGL
# contexts of rendering environments. Lower it (or pass --jax.prealloc False) when several
# processes share one GPU.
ENV XLA_PYTHON_CLIENT_MEM_FRACTION=0.9

# matplotlib's and Mesa's caches go to /tmp, writable for any `docker run --user` UID.
ENV MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

# Dependencies first, from the requirements file alone: editing the code does not
# invalidate this layer, so a rebuild after a code change skips the large download.
COPY env/requirements-gpu.txt /tmp/requirements-gpu.txt
RUN python3 -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir -r /tmp/requirements-gpu.txt \
    && rm /tmp/requirements-gpu.txt

# Then the code, at a fixed path. The package is also installed (without touching the
# dependencies) so that `python -m recall2imagine.train` and `r2i-train` work anywhere.
WORKDIR /opt/recall2imagine
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && chown r2i:r2i /opt/recall2imagine \
    && python recall2imagine/train.py --configs debug --print_config > /dev/null

# By number, so that runtimes checking "runAsNonRoot" can verify it.
USER ${R2I_UID}

# `docker run IMAGE --configs popgym ...` trains; without arguments it prints the usage.
# SIGTERM (docker stop, SLURM time limit) makes train.py save a checkpoint and exit 0.
ENTRYPOINT ["python", "recall2imagine/train.py"]
CMD ["--help"]
