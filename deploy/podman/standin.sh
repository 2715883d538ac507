#!/usr/bin/env bash
# Stand-ins for the images this project builds on or runs beside, for hosts that reach no
# container registry (the build machine), built from Debian's own packages:
#
#   python          the pinned Python slim base (Dockerfile ARG PYTHON_IMAGE): Debian bookworm's
#                   Python 3.11 (debootstrap --variant=minbase from the mirror apt already uses,
#                   plus venv, pip and the Python headers), with `python` and
#                   `pip` on PATH as in the official image, imported into podman;
#   nginx           nginxinc/nginx-unprivileged (the pod's proxy): nginx.Containerfile;
#   nginx-exporter  nginx/nginx-prometheus-exporter (the pod's proxy-metrics): nginx-exporter.Containerfile;
#   java            eclipse-temurin (the Jenkins agent's Java at /opt/java/openjdk): java.Containerfile.
#
# The real builds and deploys use the images the Dockerfile and deployment.yaml name; these only
# let the same Dockerfile and manifest run here (deploy/image.sh and deploy/pod.py call this).
# Usage: deploy/podman/standin.sh python|nginx|nginx-exporter|java
# Prints the stand-in's name; builds it only when podman does not have it yet.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
kind=${1:?usage: $0 python|nginx|nginx-exporter|java}
tag=localhost/pet-classifier/$kind-standin:bookworm
python_tag=localhost/pet-classifier/python-standin:bookworm

python_standin() {
  local mirror root
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\/\{0,1\}\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$(mktemp -d /var/tmp/python-standin.XXXXXX)
  # shellcheck disable=SC2064  # expand now: $root is local
  trap "rm -rf '$root' '$root.log'" RETURN
  echo "stand-in: building $python_tag from Debian bookworm ($mirror), about a minute" >&2
  if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python3-dev,ca-certificates \
    bookworm "$root" "$mirror" >"$root.log" 2>&1; then
    tail -n 20 "$root.log" >&2
    return 1
  fi
  ln -sf python3 "$root/usr/bin/python"
  ln -sf pip3 "$root/usr/bin/pip"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # The official image lets pip install outside a virtualenv; Debian marks its Python
  # "externally managed" (PEP 668).
  rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
  tar -C "$root" -c . | podman import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    --message "stand-in for the Python slim image: Debian bookworm, debootstrap minbase" - "$python_tag" >/dev/null
}

if ! podman image exists "$tag"; then
  case "$kind" in
    python) python_standin ;;
    nginx | nginx-exporter | java)
      podman image exists "$python_tag" || python_standin
      echo "stand-in: building $tag from Debian's packages" >&2
      podman build --quiet --format docker --pull=never --build-arg BASE="$python_tag" \
        -f "$here/$kind.Containerfile" -t "$tag" "$here" >/dev/null ;;
    *) echo "usage: $0 python|nginx|nginx-exporter|java" >&2; exit 2 ;;
  esac
fi
echo "$tag"
