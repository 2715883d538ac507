#!/usr/bin/env bash
# The Docker Build and Push stages: `make image`, `make push`.
#
#   build  build the Dockerfile with OCI labels; tags ghcr.io/<owner>/pet-classifier:<git sha>
#          (or IMAGE_TAG) and :<model version>; Trivy scan where installed (fails on fixable
#          HIGH or CRITICAL findings). The engine: Docker where it runs, else podman (with
#          deploy/podman/containers.conf), else the local target, said plainly.
#   push   login to ghcr.io with GHCR_USER/GHCR_TOKEN (Jenkins: withCredentials), push both
#          tags. Without an engine or credentials: said plainly.
#   release  the Smoke Tests passed: tag the image :latest (and push it, with credentials),
#          only from main. :latest never names an image that has not run.
#
# CONTAINER_ENGINE=docker|podman|none chooses the engine instead (default: auto).
# PYTHON_IMAGE and TORCH_INDEX_URL override the Dockerfile's build arguments. With podman, a
# base image that cannot be pulled is replaced by a stand-in built from Debian
# (deploy/podman/standin.sh), and where PyTorch's CPU index cannot be reached, torch
# comes from pip's own configuration, which the build reads through read-only bind mounts
# (never copied into a layer). Both are said plainly.
#
# Writes build/image.json (IMAGE_RECORD: image, tags, engine) for the later stages and the summary.
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

RECORD=${IMAGE_RECORD:-build/image.json}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}

engine() {  # docker, podman or none: the first that runs here
  case "${CONTAINER_ENGINE:-auto}" in
    docker | podman | none) echo "$CONTAINER_ENGINE"; return ;;
    auto) ;;
    *) echo "CONTAINER_ENGINE must be docker, podman, none or auto, not '$CONTAINER_ENGINE'" >&2; exit 2 ;;
  esac
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
    echo podman
  else
    echo none
  fi
}

dockerfile_arg() {  # NAME: the default the Dockerfile gives it
  sed -n "s/^ARG $1=//p" Dockerfile | head -n 1
}

base_image() {  # the Python base podman builds on: the pinned one, else a stand-in
  local wanted=${PYTHON_IMAGE:-$(dockerfile_arg PYTHON_IMAGE)}
  if podman image exists "$wanted" || podman pull --quiet "$wanted" >/dev/null 2>&1; then
    echo "$wanted"
    return
  fi
  local standin
  standin=$(deploy/podman/standin.sh python) || { echo "base image: the stand-in could not be built" >&2; return 1; }
  echo "base image: $wanted cannot be pulled here → $standin, a stand-in built from Debian" >&2
  echo "$standin"
}

torch_index() {  # the index torch comes from: TORCH_INDEX_URL, the Dockerfile's, or pip's own
  if [ -n "${TORCH_INDEX_URL+set}" ]; then
    printf '%s' "$TORCH_INDEX_URL"
    return
  fi
  local url; url=$(dockerfile_arg TORCH_INDEX_URL)
  if curl -sSf -m 10 -o /dev/null "$url/torch/" 2>/dev/null; then
    printf '%s' "$url"
  else
    echo "torch: $url cannot be reached here: torch comes from pip's own index (a CUDA build, several GB)" >&2
  fi
}

pip_mounts() {  # -v options: this host's pip configuration, read-only, for the build's RUN steps
  local path
  # pip's configuration files; a user's own is read as root's, who runs the build's pip.
  python3 -m pip config debug 2>/dev/null | sed -n 's/^  \(.*\), exists: True$/\1/p' | while read -r path; do
    case "$path" in
      "$HOME"/*) printf -- '-v\n%s:/root/%s:ro\n' "$path" "${path#"$HOME"/}" ;;
      *) printf -- '-v\n%s:%s:ro\n' "$path" "$path" ;;
    esac
  done
  {
    printf '%s\n' "${PIP_CERT:-}"
    tr ' ' '\n' <<<"${PIP_FIND_LINKS:-}"
    # What those files name: the CA bundle, find-links folders, file:// indexes (with their
    # files beside them).
    python3 -m pip config list 2>/dev/null | grep -oE "(file://)?/[^' ]+" | sed -e 's|^file://||' -e 's|/simple/*$||'
  } | sort -u | while read -r path; do
    if [ -n "$path" ] && [ -e "$path" ]; then printf -- '-v\n%s:%s:ro\n' "$path" "$path"; fi
  done
}

record() {  # target, tags...
  local target=$1; shift
  local tags; tags=$(printf '"%s",' "$@"); tags="[${tags%,}]"
  printf '{"image": "%s", "tags": %s, "model_version": "%s", "commit": "%s", "target": "%s"}\n' \
    "$REPO:$TAG" "$tags" "$MODEL_VERSION" "$COMMIT" "$target" > "$RECORD.tmp"
  mv "$RECORD.tmp" "$RECORD"
}

build() {
  local engine; engine=$(engine)
  local args=(--build-arg GIT_COMMIT="$COMMIT" --build-arg VERSION="$VERSION" --build-arg MODEL_VERSION="$MODEL_VERSION"
    --build-arg SOURCE_URL="https://github.com/$OWNER/pet-classifier" -t "$REPO:$TAG" -t "$REPO:$MODEL_VERSION")
  local start=$SECONDS
  case "$engine" in
    none)
      echo "Docker Build: no container engine here (Docker or podman) → LOCAL TARGET: no image is built;"
      echo "the service runs from this checkout under the image's own command (gunicorn -c gunicorn.conf.py)."
      record local "$REPO:$TAG" "$REPO:$MODEL_VERSION"
      return 0 ;;
    docker)
      [ -z "${PYTHON_IMAGE:-}" ] || args+=(--build-arg PYTHON_IMAGE="$PYTHON_IMAGE")
      [ -z "${TORCH_INDEX_URL+set}" ] || args+=(--build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL")
      docker build --pull "${args[@]}" . ;;
    podman)
      local base index mounts
      base=$(base_image) || exit 1
      index=$(torch_index)
      mapfile -t mounts < <(pip_mounts)
      # --format docker: the OCI format silently drops HEALTHCHECK.
      podman build --format docker --pull=never "${mounts[@]}" \
        --build-arg PYTHON_IMAGE="$base" --build-arg TORCH_INDEX_URL="$index" "${args[@]}" . ;;
  esac
  if command -v trivy >/dev/null 2>&1; then
    trivy image --exit-code 1 --severity HIGH,CRITICAL --ignore-unfixed --no-progress "$REPO:$TAG"
  else
    echo "warning: trivy is not installed: the image was not scanned (deploy/jenkins/agent.Dockerfile installs it)"
  fi
  record "$engine" "$REPO:$TAG" "$REPO:$MODEL_VERSION"
  echo "built $REPO:$TAG and $REPO:$MODEL_VERSION with $engine in $((SECONDS - start)) s"
}

push() {
  local engine; engine=$(engine)
  if [ "$engine" = none ]; then
    echo "Push: no container engine here → LOCAL TARGET: nothing to push."
    return 0
  fi
  if [ -z "${GHCR_USER:-}" ] || [ -z "${GHCR_TOKEN:-}" ]; then
    if [ -n "${JENKINS_URL:-}" ]; then
      echo "Push: GHCR_USER/GHCR_TOKEN are not set (Jenkins credential 'ghcr-credentials')" >&2
      return 1
    fi
    echo "Push: no GHCR_USER/GHCR_TOKEN → not pushing; the image stays local (the deploy uses it)."
    return 0
  fi
  local tags=("$REPO:$TAG" "$REPO:$MODEL_VERSION")
  push_to_ghcr "$engine" "${tags[@]}"
  echo "pushed ${tags[*]} (:latest moves only once the smoke tests pass)"
}

push_to_ghcr() {  # engine, tags...: logged in with GHCR_USER/GHCR_TOKEN only while pushing
  local engine=$1; shift
  printf '%s' "$GHCR_TOKEN" | "$engine" login ghcr.io --username "$GHCR_USER" --password-stdin
  for t in "$@"; do "$engine" push "$t"; done
  "$engine" logout ghcr.io >/dev/null
}

release() {  # after the smoke tests passed
  local engine; engine=$(engine)
  if [ "$BRANCH" != main ]; then
    echo "Release: branch $BRANCH → :latest stays where it is (it follows main only)"
    return 0
  fi
  if [ "$engine" = none ]; then
    echo "Release: no container engine here → no image to tag :latest"
    return 0
  fi
  "$engine" tag "$REPO:$TAG" "$REPO:latest"
  if [ -z "${GHCR_USER:-}" ] || [ -z "${GHCR_TOKEN:-}" ]; then
    echo "Release: tagged $REPO:latest here; no GHCR_USER/GHCR_TOKEN, so not pushed"
    return 0
  fi
  push_to_ghcr "$engine" "$REPO:latest"
  echo "released $REPO:latest = $REPO:$TAG"
}

case "${1:-}" in
  build) build ;;
  push) push ;;
  release) release ;;
  *) echo "usage: $0 build|push|release" >&2; exit 2 ;;
esac
