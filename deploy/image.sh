#!/usr/bin/env bash
# The Docker Build and Push stages: `make image`, `make push`.
#
#   build  docker build with OCI labels; tags ghcr.io/<owner>/pet-classifier:<git sha> (or
#          IMAGE_TAG) and :<model version>; Trivy scan where installed (fails on fixable HIGH or
#          CRITICAL findings). Without a Docker engine: the local target, said plainly.
#   push   docker login ghcr.io with GHCR_USER/GHCR_TOKEN (Jenkins: withCredentials), push both
#          tags, and :latest only from main. Without an engine or credentials: said plainly.
#
# Writes build/image.json (image, tags, target) for the later stages and the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build

OWNER=$(printf '%s' "${GHCR_OWNER:-pet-classifier}" | tr '[:upper:]' '[:lower:]')
REPO="ghcr.io/$OWNER/pet-classifier"
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
TAG=${IMAGE_TAG:-${COMMIT:0:12}}
MODEL_VERSION=$(.venv/bin/python -c 'import json; print(json.load(open("models/model.json"))["version"])')
VERSION=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# Jenkins gives BRANCH_NAME (multibranch) or GIT_BRANCH (origin/main); a laptop has git.
BRANCH=${BRANCH_NAME:-${GIT_BRANCH:-$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)}}
BRANCH=${BRANCH#origin/}

engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

record() {  # target, tags...
  local target=$1; shift
  local tags; tags=$(printf '"%s",' "$@"); tags="[${tags%,}]"
  printf '{"image": "%s", "tags": %s, "model_version": "%s", "commit": "%s", "target": "%s"}\n' \
    "$REPO:$TAG" "$tags" "$MODEL_VERSION" "$COMMIT" "$target" > build/image.json.tmp
  mv build/image.json.tmp build/image.json
}

build() {
  if ! engine; then
    echo "Docker Build: no Docker engine here → LOCAL TARGET: no image is built; the service runs"
    echo "from this checkout under the image's own command (gunicorn -c gunicorn.conf.py)."
    record local "$REPO:$TAG" "$REPO:$MODEL_VERSION"
    return 0
  fi
  docker build --pull \
    --build-arg GIT_COMMIT="$COMMIT" --build-arg VERSION="$VERSION" --build-arg MODEL_VERSION="$MODEL_VERSION" \
    --build-arg SOURCE_URL="https://github.com/$OWNER/pet-classifier" \
    -t "$REPO:$TAG" -t "$REPO:$MODEL_VERSION" .
  if command -v trivy >/dev/null 2>&1; then
    trivy image --exit-code 1 --severity HIGH,CRITICAL --ignore-unfixed --no-progress "$REPO:$TAG"
  else
    echo "warning: trivy is not installed: the image was not scanned (deploy/jenkins/Dockerfile installs it)"
  fi
  record docker "$REPO:$TAG" "$REPO:$MODEL_VERSION"
  echo "built $REPO:$TAG and $REPO:$MODEL_VERSION"
}

push() {
  if ! engine; then
    echo "Push: no Docker engine here → LOCAL TARGET: nothing to push."
    return 0
  fi
  if [ -z "${GHCR_USER:-}" ] || [ -z "${GHCR_TOKEN:-}" ]; then
    if [ -n "${JENKINS_URL:-}" ]; then
      echo "Push: GHCR_USER/GHCR_TOKEN are not set (Jenkins credential 'ghcr-credentials')" >&2
      return 1
    fi
    echo "Push: no GHCR_USER/GHCR_TOKEN → not pushing; the image stays local (kind load uses it)."
    return 0
  fi
  printf '%s' "$GHCR_TOKEN" | docker login ghcr.io --username "$GHCR_USER" --password-stdin
  local tags=("$REPO:$TAG" "$REPO:$MODEL_VERSION")
  if [ "$BRANCH" = main ]; then
    docker tag "$REPO:$TAG" "$REPO:latest"
    tags+=("$REPO:latest")
  fi
  for t in "${tags[@]}"; do docker push "$t"; done
  docker logout ghcr.io >/dev/null
  echo "pushed ${tags[*]}"
}

case "${1:-}" in
  build) build ;;
  push) push ;;
  *) echo "usage: $0 build|push" >&2; exit 2 ;;
esac
