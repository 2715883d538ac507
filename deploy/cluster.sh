#!/usr/bin/env bash
# Deploy, Smoke Tests and the day-two targets, against the Kind cluster `mlops`; where Docker or
# Kind is absent but podman built the image, the pod target (deploy/pod.py: the pod deploy/k8s
# renders, run by podman, with the monitoring stack as processes on loopback); else the local
# target (deploy/local-stack.sh: the service under Gunicorn and nginx, and the monitoring stack,
# as processes on loopback).
#
#   deploy        kind: create the cluster if absent, kind load the image, create the Secrets,
#                 apply deploy/k8s (kustomize) and wait for the rollout.  podman: run the pod
#                 from the rendered manifest and wait for its probes.  local: restart the stack.
#   smoke         tools/smoke.py against the service. Passed: the release is proven, so
#                 @champion moves to @candidate and the image is tagged :latest. Failed: the
#                 candidate is rejected (@champion and :latest stay), the cluster's Deployment
#                 is rolled back (kubectl rollout undo) and diagnostics kept in build/diagnostics.
#                 Passed, it ends with the post-deployment report (tools/report.py, build/report/).
#   rollback      make rollback: the previous champion back in the registry and the cluster.
#   render IMAGE first|again   what deploy applies (the first deploy also sets the replica count)
#   status | logs | port-forward | alerts | down
#
# DEPLOY_TARGET=kind|podman|local|auto (auto: kind where a Docker engine, kind and kubectl all
# work; else podman where `make image` built the image with podman; else local).
# GRAFANA_URL: where the dashboard links in alert emails point (default http://127.0.0.1:3000,
# alertmanager/templates/grafana.tmpl).
# Secrets come from the environment (Jenkins withCredentials): SMTP_PASSWORD (required in the
# cluster; the pod and local targets mail to a loopback sink), and optionally
# FEEDBACK_SECRET (32 characters or more) and GRAFANA_ADMIN_PASSWORD (generated once and kept in
# the cluster if unset).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
CLUSTER=mlops
NS=mlops
PY=.venv/bin/python
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}

target() {
  case "${DEPLOY_TARGET:-auto}" in
    kind | podman | local) echo "$DEPLOY_TARGET" ;;
    auto)
      if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
        && command -v kind >/dev/null 2>&1 && command -v kubectl >/dev/null 2>&1; then
        echo kind
      elif [ -f build/image.json ] && [ "$(image_field target)" = podman ]; then
        echo podman
      else
        echo local
      fi ;;
    *) echo "DEPLOY_TARGET must be kind, podman, local or auto, not '$DEPLOY_TARGET'" >&2; exit 2 ;;
  esac
}

record() {  # target, url
  printf '{"target": "%s", "url": "%s"}\n' "$1" "$2" > build/deploy.json.tmp
  mv build/deploy.json.tmp build/deploy.json
}

image_field() {  # field: what the Docker Build stage recorded (a list: space-separated)
  [ -f build/image.json ] || { echo "build/image.json is missing: run \`make image\` first" >&2; exit 1; }
  $PY -c 'import json, sys; v = json.load(open("build/image.json"))[sys.argv[1]]
print(" ".join(v) if isinstance(v, list) else v)' "$1"
}

image() { image_field image; }

secret_once() {  # name, key, value-or-empty: create with a random value only when absent
  local name=$1 key=$2 value=$3
  if [ -n "$value" ]; then
    kubectl -n $NS create secret generic "$name" --from-literal="$key=$value" --dry-run=client -o yaml \
      | kubectl apply -f - >/dev/null
  elif ! kubectl -n $NS get secret "$name" >/dev/null 2>&1; then
    kubectl -n $NS create secret generic "$name" --from-literal="$key=$(openssl rand -hex 32)" >/dev/null
  fi
}

deploy_kind() {
  local img; img=$(image)
  if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind create cluster --config kind-config.yaml --wait 120s
  fi
  kubectl config use-context "kind-$CLUSTER" >/dev/null
  # Every tag of the build: rollback finds an earlier release by its model version's tag.
  local tags; tags=$(image_field tags)
  # shellcheck disable=SC2086  # one argument per tag
  kind load docker-image $tags --name "$CLUSTER"
  kubectl apply -f deploy/k8s/namespace.yaml
  kubectl -n $NS create secret generic alertmanager-smtp --from-literal=smtp-password="$SMTP_PASSWORD" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  secret_once pet-classifier-secrets feedback-secret "${FEEDBACK_SECRET:-}"
  secret_once grafana-admin admin-password "${GRAFANA_ADMIN_PASSWORD:-}"
  local first=again
  kubectl -n $NS get deployment pet-classifier >/dev/null 2>&1 || first=first
  render "$img" "$first" > build/k8s-rendered.yaml
  kubectl apply --server-side --force-conflicts -f build/k8s-rendered.yaml
  kubectl -n $NS rollout status deployment/pet-classifier --timeout=300s
  record kind "http://127.0.0.1:8080"
  echo "deployed $img to kind-$CLUSTER: http://127.0.0.1:8080 (or make port-forward)"
}

render() {  # image, first|again: deploy/k8s with this build's image, as the cluster gets it
  local img=$1 when=$2 overlay=build/k8s-overlay
  rm -rf "$overlay" && mkdir -p "$overlay"
  cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../deploy/k8s
images:
  - name: ghcr.io/pet-classifier/pet-classifier
    newName: ${img%:*}
    newTag: ${img##*:}
EOF
  if [ -n "${GRAFANA_URL:-}" ]; then  # where the alert emails' dashboard links point
    cat >>"$overlay/kustomization.yaml" <<EOF
configMapGenerator:
  - name: alertmanager-templates
    namespace: $NS
    behavior: merge
    literals:
      - grafana.tmpl={{ define "pet.grafana_url" }}${GRAFANA_URL%/}{{ end }}
EOF
  fi
  # The HPA owns the replica count: the manifest has none, so a deploy never resets a
  # scaled-out Deployment. Only the first deploy starts the HPA's minimum at once.
  if [ "$when" = first ]; then
    local least
    least=$(kubectl kustomize deploy/k8s/app | $PY -c 'import sys, yaml
print(next(d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "HorizontalPodAutoscaler")["spec"]["minReplicas"])')
    cat >>"$overlay/kustomization.yaml" <<EOF
patches:
  - target: {kind: Deployment, name: pet-classifier}
    patch: |-
      - op: add
        path: /spec/replicas
        value: $least
EOF
  fi
  kubectl kustomize "$overlay"
}

deploy_local() {
  echo "Deploy: no Kind cluster here (Docker engine or kind missing) → LOCAL TARGET: the service under"
  echo "Gunicorn behind the pod's nginx, plus Prometheus, Alertmanager and an SMTP sink, as processes on loopback."
  make export-model  # what the image's export stage writes; a no-op when build/model.onnx is current
  deploy/local-stack.sh down >/dev/null
  deploy/local-stack.sh up
  record local "http://127.0.0.1:8080"  # through nginx, as Kind publishes the API
}

deploy_podman() {
  local img; img=$(image)
  echo "Deploy: no Kind cluster here (Docker engine or kind missing) → POD TARGET: the pod deploy/k8s renders"
  echo "(API $img, nginx, exporter), run by podman from the rendered manifest, with Prometheus,"
  echo "Alertmanager, an SMTP sink and MLflow as processes on loopback."
  deploy/local-stack.sh down >/dev/null
  $PY deploy/pod.py down
  $PY deploy/pod.py up --image "$img"
  STACK_API=pod deploy/local-stack.sh up
  record podman "http://127.0.0.1:8080"  # through the pod's nginx, as Kind publishes the API
}

diagnostics() {
  local dir=build/diagnostics
  rm -rf "$dir" && mkdir -p "$dir"
  keep() {  # file, command...: a failing kubectl is written down, not fatal, while we collect
    local file=$1; shift
    "$@" >"$dir/$file" 2>&1 || echo "(exit $?: $*)" >>"$dir/$file"
  }
  keep events.txt kubectl -n $NS get events --sort-by=.lastTimestamp
  keep deployment.txt kubectl -n $NS describe deployment/pet-classifier
  keep pods.txt kubectl -n $NS get pods -o wide
  for pod in $(kubectl -n $NS get pods -l app.kubernetes.io/name=pet-classifier -o name 2>/dev/null); do
    keep "${pod#pod/}.log" kubectl -n $NS logs "$pod" --all-containers --tail=500
  done
  echo "diagnostics kept in $dir/"
}

smoke() {
  if smoke_checks; then
    $PY -m ml.registry release
    deploy/image.sh release
    # The post-deployment report (build/report/, archived by Jenkins), from the Prometheus every
    # target publishes on :9090. The release stands either way; a report that cannot be written
    # fails the stage, since a release nobody can watch is not done.
    $PY -m tools.report --window "${REPORT_WINDOW:-1h}" --prometheus "${PROM:-http://127.0.0.1:9090}"
    return
  fi
  $PY -m ml.registry reject
  return 1
}

smoke_checks() {  # tools/smoke.py against the target; true when every check passed
  case "$(target)" in
    local)
      $PY -m tools.smoke --url http://127.0.0.1:8080
      return ;;
    podman)
      if ! $PY -m tools.smoke --url http://127.0.0.1:8080; then
        mkdir -p build/diagnostics
        for c in api proxy proxy-metrics; do
          podman logs "pet-classifier-$c" >"build/diagnostics/$c.log" 2>&1 || echo "(podman logs exited $?)" >>"build/diagnostics/$c.log"
        done
        echo "smoke tests failed against the pod: its logs are in build/diagnostics/" >&2
        return 1
      fi
      return ;;
  esac
  local port; port=$($PY -c 'from tools.local_server import free_port; print(free_port())')
  kubectl -n $NS port-forward svc/pet-classifier "$port:80" >build/port-forward.log 2>&1 &
  local pf=$!
  trap 'kill $pf 2>/dev/null' RETURN
  if ! $PY -m tools.smoke --url "http://127.0.0.1:$port" --wait 60; then
    diagnostics
    echo "smoke tests failed: rolling pet-classifier back" >&2
    kubectl -n $NS rollout undo deployment/pet-classifier
    kubectl -n $NS rollout status deployment/pet-classifier --timeout=300s
    return 1
  fi
}

rollback() {  # the previous champion back: the registry's alias, then what serves it
  local answer version img
  answer=$($PY -m ml.registry rollback)
  echo "$answer"
  version=$(sed -n 's/^model_version //p' <<<"$answer")
  img="$(image_field image | sed 's/:[^:]*$//'):$version"
  case "$(target)" in
    kind)
      kubectl -n $NS set image deployment/pet-classifier "api=$img"
      kubectl -n $NS rollout status deployment/pet-classifier --timeout=300s ;;
    podman)
      $PY deploy/pod.py down
      $PY deploy/pod.py up --image "$img" ;;
    local)
      echo "local target: the stack serves models/ from this checkout; check out the release of $version to serve it" ;;
  esac
  echo "rolled back to $img"
}

status() {
  case "$(target)" in
    local) deploy/local-stack.sh status; return ;;
    podman) $PY deploy/pod.py status; STACK_API=pod deploy/local-stack.sh status; return ;;
  esac
  kubectl -n $NS get pods -o wide
  kubectl -n $NS get hpa pet-classifier
  kubectl -n $NS get deployment pet-classifier \
    -o jsonpath='{"image: "}{.spec.template.spec.containers[0].image}{"\n"}'
  kubectl -n $NS exec deploy/pet-classifier -c api -- python -c \
    'import json, urllib.request; print("model:", json.load(urllib.request.urlopen("http://127.0.0.1:8000/version"))["model_version"])'
}

logs() {
  if [ "$(target)" = local ]; then
    tail -n 100 -f .monitor/service.log
  elif [ "$(target)" = podman ]; then
    podman logs --follow --tail 100 pet-classifier-api
  else
    kubectl -n $NS logs -f -l app.kubernetes.io/name=pet-classifier --all-containers --max-log-requests 10 --prefix
  fi
}

port_forward() {
  if [ "$(target)" != kind ]; then
    echo "local target: everything already listens on loopback (API :8080 through nginx, :8000 direct; Prometheus :9090, Alertmanager :9093)"
    return
  fi
  echo "API http://127.0.0.1:8000  Prometheus :9091  Grafana :3001  Alertmanager :9094  (Ctrl-C stops)"
  kubectl -n $NS port-forward svc/pet-classifier 8000:80 &
  kubectl -n $NS port-forward svc/prometheus 9091:9090 &
  kubectl -n $NS port-forward svc/grafana 3001:3000 &
  kubectl -n $NS port-forward svc/alertmanager 9094:9093 &
  trap 'kill $(jobs -p) 2>/dev/null' INT TERM EXIT
  wait
}

alerts() {
  # Kind publishes Alertmanager on the host at :9093 (kind-config.yaml), as the local stack does.
  amtool alert query --alertmanager.url=http://127.0.0.1:9093 --output=extended
}

down() {
  if [ "$(target)" = podman ]; then
    $PY deploy/pod.py down
    deploy/local-stack.sh down
    return
  fi
  if command -v kind >/dev/null 2>&1 && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind delete cluster --name "$CLUSTER"
  else
    echo "no Kind cluster '$CLUSTER' to delete"
  fi
}

check_smtp_password() {  # before anything changes: no on-call email is worse than a failed deploy
  local password=${SMTP_PASSWORD:-}
  if [ -z "${password// /}" ] || [ "$password" = unset ]; then
    echo "SMTP_PASSWORD is not set (Jenkins credential 'smtp-password'): alert emails could not be sent, so nothing was deployed" >&2
    exit 1
  fi
}

check_feedback_secret() {  # before anything changes: pods would only crash-loop on a short one
  FEEDBACK_SECRET="${FEEDBACK_SECRET:-}" $PY -c 'import os, sys
from app.settings import MIN_SECRET_CHARS
secret = os.environ["FEEDBACK_SECRET"]
if secret and len(secret) < MIN_SECRET_CHARS:
    sys.exit(f"FEEDBACK_SECRET has {len(secret)} characters; the API refuses fewer than {MIN_SECRET_CHARS}")'
}

case "${1:-}" in
  deploy)
    check_feedback_secret
    case "$(target)" in kind) check_smtp_password; deploy_kind ;; podman) deploy_podman ;; *) deploy_local ;; esac ;;
  smoke) smoke ;;
  rollback) rollback ;;
  status) status ;;
  logs) logs ;;
  port-forward) port_forward ;;
  alerts) alerts ;;
  down) down ;;
  target) target ;;
  render) render "${2:?usage: $0 render IMAGE first|again}" "${3:?usage: $0 render IMAGE first|again}" ;;
  *) echo "usage: $0 deploy|smoke|rollback|status|logs|port-forward|alerts|down|target|render" >&2; exit 2 ;;
esac
