# syntax=docker/dockerfile:1
#
# recserve images. One file, two final targets:
#
#   docker build --target cpu -t recserve:cpu .
#   docker build --target gpu -t recserve:gpu .
#
# Stages: `wheel` builds the recserve wheel once (pure Python); `cpu-venv` and `gpu-venv`
# install it with its dependencies into /opt/venv on the Python the final image runs;
# `cpu` and `gpu` copy only that venv onto a clean base. Pip, the build backend and the
# source tree stay in the build stages.
#
# The GPU image is based on NVIDIA's CUDA 13 + cuDNN 9 runtime image rather than on
# python:3.11-slim plus the nvidia-*-cu13 pip wheels: onnxruntime-gpu 1.31 is built
# against CUDA 13 and cuDNN 9 and, with the wheels, finds the libraries only if the
# application preloads them or LD_LIBRARY_PATH lists every wheel's lib directory. The
# runtime image puts cudart, cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN on the default
# loader path, sets NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES for the NVIDIA
# container toolkit, and is the combination NVIDIA tests. Its Python is Ubuntu 24.04's
# 3.12, so the GPU venv is built on that same base. The host needs an NVIDIA driver that
# supports CUDA 13 (580 or newer). Without a GPU the image still serves, on the CPU.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
COPY modelrepo ./modelrepo
COPY recserve ./recserve
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-venv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
# pyproject.toml selects onnxruntime-gpu on linux/x86_64. The CPU image swaps it for the
# CPU build of the same version (about 290 MB smaller, same `onnxruntime` module).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/recserve-*.whl \
    && ort_gpu="$(/opt/venv/bin/pip show onnxruntime-gpu 2>/dev/null | sed -n 's/^Version: //p')" \
    && if [ -n "${ort_gpu}" ]; then \
        /opt/venv/bin/pip uninstall --yes onnxruntime-gpu \
        && /opt/venv/bin/pip install "onnxruntime==${ort_gpu}"; \
    fi \
    && /opt/venv/bin/python -c "import onnxruntime, modelrepo, recserve, service, training" \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu-base
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------
FROM gpu-base AS gpu-venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
# The CUDA libraries come from the base image, so onnxruntime-gpu is installed without its
# `cuda`/`cudnn` extras. nvidia-ml-py (gpu-metrics) reads GPU memory and utilisation.
RUN python3 -m venv /opt/venv \
    && wheel="$(echo /wheels/recserve-*.whl)" \
    && /opt/venv/bin/pip install "${wheel}[gpu-metrics]" \
    && /opt/venv/bin/python -c "import onnxruntime, modelrepo, recserve, service, training" \
    && /opt/venv/bin/pip uninstall --yes pip

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="recserve" \
      org.opencontainers.image.description="Inference server for recommendation models (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 recserve \
    && useradd --system --uid 10001 --gid recserve --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin recserve \
    && mkdir /models \
    && chown 10001:10001 /models
COPY --from=cpu-venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECSERVE_HOST=0.0.0.0 \
    RECSERVE_PORT=8000 \
    RECSERVE_MODEL_REPOSITORY=/models \
    RECSERVE_PROVIDER=cpu
VOLUME ["/models"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('RECSERVE_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["recserve"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------
FROM gpu-base AS gpu
LABEL org.opencontainers.image.title="recserve" \
      org.opencontainers.image.description="Inference server for recommendation models (CUDA 13)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 recserve \
    && useradd --system --uid 10001 --gid recserve --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin recserve \
    && mkdir /models \
    && chown 10001:10001 /models
COPY --from=gpu-venv /opt/venv /opt/venv
# `auto` takes the GPU when one is visible and the CPU otherwise; deployments that must not
# fall back set RECSERVE_PROVIDER=cuda.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECSERVE_HOST=0.0.0.0 \
    RECSERVE_PORT=8000 \
    RECSERVE_MODEL_REPOSITORY=/models \
    RECSERVE_PROVIDER=auto
VOLUME ["/models"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('RECSERVE_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["recserve"]
CMD ["serve"]
