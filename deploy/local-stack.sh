#!/usr/bin/env bash
# The monitoring stack as local processes on loopback: `make monitor-up` / `make monitor-down`.
# Service :8000 (Gunicorn) behind the pod's nginx on :8080, as Kind publishes it, and nginx's
# exporter on :9113 (reading stub_status on :8081), as in the pod; Prometheus :9090,
# Alertmanager :9093, SMTP sink :1025 (mail kept in .monitor/mail, read with `make mail`),
# MLflow UI :5001. Configs are rendered from deploy/k8s/app/nginx.conf, prometheus/ and
# alertmanager/ (the one source); nothing is hand-copied.
#
# STACK_API=pod: the API, its nginx and the exporter are the real pod (deploy/pod.py, podman),
# already publishing :8000, :8080 and :9113; only the monitoring around it starts here.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.monitor
BIN=.venv/bin

running() {  # name
  [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null
}

start() {  # name, command...
  local name=$1; shift
  if running "$name"; then
    echo "$name already running (pid $(cat "$STATE/$name.pid"))"; return
  fi
  setsid "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

wait_http() {  # name, url
  for _ in $(seq 1 120); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "$1 did not come up: see $STATE/$1.log" >&2
  return 1
}

# name:port of everything up() starts, and the Debian service that may already hold the port
# (apt starts prometheus, prometheus-alertmanager and prometheus-nginx-exporter on install).
PORTS="smtp:1025: service:8000: proxy:8080: proxy:8081: proxy-metrics:9113:prometheus-nginx-exporter
alertmanager:9093:prometheus-alertmanager prometheus:9090:prometheus mlflow:5001:"

listening() {  # port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ports_free() {  # before anything starts: another process on a port would answer for ours
  local entry name port unit hint taken=0
  for entry in $PORTS; do
    IFS=: read -r name port unit <<<"$entry"
    case "${STACK_API:-}:$name" in pod:service | pod:proxy | pod:proxy-metrics) continue ;; esac
    if ! running "$name" && listening "$port"; then
      hint=""
      [ -z "$unit" ] || hint="; is it Debian's $unit service? sudo systemctl disable --now $unit"
      echo "port $port ($name) is taken by another process$hint" >&2
      taken=1
    fi
  done
  return "$taken"
}

start_api() {  # Gunicorn and the pod's nginx in front of it, as processes
  $BIN/python -m tools.render_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:8000 --status 127.0.0.1:8081 \
    --out "$STATE/proxy/nginx.conf"
  if ! running service; then
    # prometheus_client's multiprocess files must not outlive the server: a fresh one counts from 0.
    rm -rf "$STATE/prometheus-multiproc"
  fi
  start service env PORT=8000 MODEL_PACKAGE="${MODEL_PACKAGE:-build/model.onnx}" PROMETHEUS_MULTIPROC_DIR="$PWD/$STATE/prometheus-multiproc" $BIN/gunicorn -c gunicorn.conf.py
  local nginx
  nginx=$($BIN/python -c 'from tools.local_server import nginx_binary; print(nginx_binary() or "")')
  [ -n "$nginx" ] || { echo "nginx is missing: make system-deps installs it" >&2; exit 1; }
  start proxy "$nginx" -p "$PWD/$STATE/proxy/" -c "$PWD/$STATE/proxy/nginx.conf" -e stderr \
    -g "$($BIN/python -m tools.render_proxy --globals)"
}

up() {
  ports_free || exit 1
  mkdir -p "$STATE/mail/new" "$STATE/mail/cur" "$STATE/mail/tmp" "$STATE/prometheus-data" "$STATE/alertmanager-data"
  $BIN/python prometheus/render_local.py --out "$STATE/prometheus.yml" \
    --target pet-classifier=127.0.0.1:8000 --target pet-classifier-proxy=127.0.0.1:9113 \
    --target prometheus=127.0.0.1:9090 \
    --target alertmanager=127.0.0.1:9093 --alertmanager 127.0.0.1:9093 ${FAST:+--interval 5s}
  $BIN/python alertmanager/render_local.py --smtp 127.0.0.1:1025 --out "$STATE/alertmanager.yml" ${FAST:+--fast}
  start smtp $BIN/python -m aiosmtpd -n -l 127.0.0.1:1025 -c aiosmtpd.handlers.Mailbox "$STATE/mail"
  [ "${STACK_API:-}" = pod ] || start_api
  start alertmanager prometheus-alertmanager --config.file="$STATE/alertmanager.yml" \
    --storage.path="$STATE/alertmanager-data" --web.listen-address=127.0.0.1:9093 --cluster.listen-address=
  start prometheus prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus-data" \
    --web.listen-address=127.0.0.1:9090 --web.enable-lifecycle
  start mlflow $BIN/mlflow ui --backend-store-uri "$($BIN/python -m ml.tracking)" --host 127.0.0.1 --port 5001
  wait_http service http://127.0.0.1:8000/ready
  wait_http proxy http://127.0.0.1:8080/ready
  if [ "${STACK_API:-}" != pod ]; then
    # Debian's exporter (0.11) gives up at start if nginx does not answer yet; the pod's (1.x) waits.
    start proxy-metrics prometheus-nginx-exporter --nginx.scrape-uri=http://127.0.0.1:8081/stub_status \
      --web.listen-address=127.0.0.1:9113
  fi
  wait_http proxy-metrics http://127.0.0.1:9113/metrics
  wait_http prometheus http://127.0.0.1:9090/-/ready
  wait_http alertmanager http://127.0.0.1:9093/-/ready
  cat <<EOT
monitoring stack up (logs in $STATE/):
  service       http://127.0.0.1:8080      (through nginx, as in the cluster: landing page, /docs)
                http://127.0.0.1:8000      (Gunicorn itself, as Prometheus scrapes it: /metrics)
                http://127.0.0.1:9113      (nginx's counters: /metrics)
  prometheus    http://127.0.0.1:9090/alerts
  alertmanager  http://127.0.0.1:9093
  smtp sink     127.0.0.1:1025 → $STATE/mail (make mail)
  mlflow        http://127.0.0.1:5001
stop it with: make monitor-down
EOT
}

down() {
  for name in prometheus alertmanager proxy-metrics proxy service smtp mlflow; do
    if [ -f "$STATE/$name.pid" ]; then
      pid=$(cat "$STATE/$name.pid")
      if kill -0 "$pid" 2>/dev/null; then kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"; echo "stopped $name"; fi
      rm -f "$STATE/$name.pid"
    fi
  done
}

status() {
  local names="proxy proxy-metrics service prometheus alertmanager smtp mlflow"
  [ "${STACK_API:-}" != pod ] || names="prometheus alertmanager smtp mlflow"  # the pod runs the rest
  for name in $names; do
    if running "$name"; then
      echo "$name: running (pid $(cat "$STATE/$name.pid"))"
    else
      echo "$name: not running"
    fi
  done
  if curl -fsS http://127.0.0.1:8080/version >"$STATE/version.json" 2>/dev/null; then
    $BIN/python -c 'import json, sys; v = json.load(open(sys.argv[1])); print("model:", v["model_version"])' "$STATE/version.json"
  fi
}

mail() {
  $BIN/python - "$STATE/mail" <<'PY'
import mailbox, sys
box = mailbox.Maildir(sys.argv[1], create=False)
for key, msg in sorted(box.items(), key=lambda kv: kv[1].get_date())[-10:]:
    print(f"{msg['Date']}  {msg['To']}  {msg['Subject']}")
PY
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  mail) mail ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|mail" >&2; exit 2 ;;
esac
