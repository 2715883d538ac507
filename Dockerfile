# syntax=docker/dockerfile:1.7
# The serving image: Gunicorn + Flask + the release model as an ONNX graph, run by ONNX Runtime;
# no PyTorch. Three stages: `deps` installs the pinned serving requirements into a virtualenv;
# `export` adds PyTorch to a copy of it and exports the release model to the ONNX graph the
# service runs, checked against eager PyTorch; `runtime` takes the first stage's virtualenv,
# the graph, the model card, the service and the model code it imports, and runs as a non-root
# user. Build: `make image` (tags, labels and the Trivy scan come from there).

# Pinned to an exact patch release; add @sha256:<digest> once your registry mirror resolves it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# Where torch and torchvision come from for the export: PyTorch's CPU wheels. Empty: pip's own
# configuration (deploy/image.sh, on a host that cannot reach this index; there torch is a CUDA
# build, which the export stage holds and the image does not).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements-serve.txt requirements-model.txt requirements.lock /tmp/
# The serving set, every package it pulls in at requirements.lock's version.
RUN pip install -r /tmp/requirements-serve.txt -c /tmp/requirements.lock \
    && pip check \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM deps AS export
ARG TORCH_INDEX_URL
# torch and torchvision at the versions requirements-model.txt pins, from TORCH_INDEX_URL; then
# the model's set, every package it pulls in (torch's own included) at requirements.lock's version.
RUN grep -E '^torch(vision)?==' /tmp/requirements-model.txt > /tmp/torch.txt \
    && pip install --no-deps ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r /tmp/torch.txt \
    && pip install -r /tmp/requirements-model.txt -c /tmp/requirements.lock \
    && pip check
WORKDIR /srv
# The model code the export imports.
COPY ml/__init__.py ml/artifact.py ml/card.py ml/config.py ml/export.py ml/fileio.py ml/graph.py ml/images.py ml/models.py ml/not_a_pet.py ml/
COPY models/ models/
RUN python -m ml.export --model models --out build/model.onnx

FROM ${PYTHON_IMAGE} AS runtime
ARG GIT_COMMIT=unknown
ARG VERSION=0.1.0
ARG MODEL_VERSION=unknown
ARG SOURCE_URL=https://github.com/pet-classifier/pet-classifier
LABEL org.opencontainers.image.title="pet-classifier" \
      org.opencontainers.image.description="Cat or dog, from a shelter photo: Flask + Gunicorn API" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      io.pet-classifier.model-version="${MODEL_VERSION}"
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
WORKDIR /srv
COPY gunicorn.conf.py ./
COPY app/ app/
# Only the model code the service imports (tests/deploy/test_dockerfile.py keeps this list honest).
COPY ml/__init__.py ml/card.py ml/config.py ml/graph.py ml/images.py ml/
# The card: what the graph is checked against and what /version reports. No weights: the graph has them.
COPY models/model.json models/
COPY --from=export /srv/build/model.onnx build/model.onnx
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=/srv/models \
    MODEL_PACKAGE=/srv/build/model.onnx \
    SERVICE_VERSION=${VERSION}
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# The exact command the end-to-end service tests start (tools/local_server.py).
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
