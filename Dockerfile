# The falapp-operator image: `docker build -t REGISTRY/falapp-operator:0.1.0 .`
# Slim Python base pinned by tag (add @sha256:... to pin by digest), the package in a venv, non-root.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# bytecode is compiled here: the operator runs with a read-only root filesystem
RUN python -m venv /opt/falapp \
 && /opt/falapp/bin/pip install --no-cache-dir . \
 && /opt/falapp/bin/python -m compileall -q /opt/falapp

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="falapp-operator" \
      org.opencontainers.image.description="Places FalApp replicas on GPU machine types in order of preference, with per-replica fallback" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/falapp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/falapp /opt/falapp
RUN groupadd --system --gid 65532 falapp \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin falapp
USER 65532:65532
# metrics (FALAPP_METRICS_PORT) and kopf's liveness endpoint (--liveness)
EXPOSE 8080 8081
ENTRYPOINT ["falapp-operator", "run"]
