# syntax=docker/dockerfile:1
#
# One image for every FedMedCLIP service; the command picks the service:
#
#   fedmedclip aggregator migrate
#   fedmedclip aggregator serve --host 0.0.0.0 --port 8100
#   fedmedclip node serve --host 0.0.0.0 --port 8200
#   fedmedclip node worker
#   fedmedclip inference serve --host 0.0.0.0 --port 8300
#
# Build arguments:
#   TORCH_FLAVOR  which torch wheels to install (default: cpu)
#                   cpu    CPU-only wheels from the PyTorch CPU index (smallest image)
#                   cuda   the default wheels from the Python package index, which bundle
#                          the CUDA runtime (needs an NVIDIA driver on the host at run time)
#                   cuXYZ  wheels for one CUDA release from the PyTorch index, e.g. cu128
#   TORCH_INDEX_URL  overrides the wheel index used for torch/torchvision (a hospital mirror)
#
#   docker build -t fedmedclip:0.1.0 .
#   docker build -t fedmedclip:0.1.0-cuda --build-arg TORCH_FLAVOR=cuda .
#
# The container runs as uid/gid 10001 and writes only to /tmp and /var/lib/fedmedclip, so it
# also runs with a read-only root filesystem (as the Helm charts do).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build

ARG TORCH_FLAVOR=cpu
ARG TORCH_INDEX_URL=
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, in its own layer: it is by far the largest dependency and changes rarely.
# A local version label such as 2.14.1+cpu still satisfies the project's torch==2.14.1 pin,
# so the project install below keeps these wheels.
RUN set -eu; \
    if [ -n "${TORCH_INDEX_URL}" ]; then \
        index="--index-url ${TORCH_INDEX_URL}"; \
    else \
        case "${TORCH_FLAVOR}" in \
            cpu) index="--index-url https://download.pytorch.org/whl/cpu" ;; \
            cuda) index="" ;; \
            cu[0-9]*) index="--index-url https://download.pytorch.org/whl/${TORCH_FLAVOR}" ;; \
            *) echo "TORCH_FLAVOR must be cpu, cuda or cuXYZ (got '${TORCH_FLAVOR}')" >&2; exit 2 ;; \
        esac; \
    fi; \
    pip install ${index} "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

WORKDIR /src
COPY . /src
RUN pip install /src && fedmedclip --help >/dev/null


FROM ${PYTHON_IMAGE} AS runtime

ARG TORCH_FLAVOR=cpu
ARG APP_UID=10001

LABEL org.opencontainers.image.title="fedmedclip" \
      org.opencontainers.image.description="FedMedCLIP: aggregator, hospital node, worker and inference API" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.fedmedclip.torch-flavor="${TORCH_FLAVOR}"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/fedmedclip \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    TORCH_HOME=/tmp/.cache/torch \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    FEDMEDCLIP_AGG_DATA_DIR=/var/lib/fedmedclip/aggregator \
    FEDMEDCLIP_AGG_LOG_JSON=true \
    FEDMEDCLIP_NODE_DATA_DIR=/var/lib/fedmedclip/node \
    FEDMEDCLIP_NODE_MODEL_STORE_DIR=/var/lib/fedmedclip/model-store \
    FEDMEDCLIP_NODE_LOG_JSON=true \
    FEDMEDCLIP_INFERENCE_MODEL_STORE_DIR=/var/lib/fedmedclip/model-store \
    FEDMEDCLIP_INFERENCE_AUDIT_PATH=/var/lib/fedmedclip/inference/audit.jsonl \
    FEDMEDCLIP_INFERENCE_LOG_JSON=true

# The data folders exist in the image, owned by the service user, so that named volumes
# mounted there start out writable by it.
RUN groupadd --system --gid ${APP_UID} fedmedclip \
    && useradd --system --uid ${APP_UID} --gid ${APP_UID} --home-dir /home/fedmedclip \
       --create-home --shell /usr/sbin/nologin fedmedclip \
    && mkdir -p /var/lib/fedmedclip/aggregator /var/lib/fedmedclip/node \
       /var/lib/fedmedclip/model-store /var/lib/fedmedclip/inference /datasets \
    && chown -R ${APP_UID}:${APP_UID} /var/lib/fedmedclip

COPY --from=build /opt/venv /opt/venv

USER ${APP_UID}:${APP_UID}
WORKDIR /var/lib/fedmedclip

EXPOSE 8100 8200 8300

ENTRYPOINT ["fedmedclip"]
CMD ["--help"]
