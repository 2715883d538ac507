#!/usr/bin/env bash
# The agent's entrypoint: authorise the controller's key for the `jenkins` user, let that user
# reach the host's Docker engine when its socket is mounted, and run sshd in the foreground.
#   JENKINS_AGENT_SSH_PUBKEY  the public half of the controller's `agent-ssh-key` credential
#   AGENT_SSH_PORT            sshd's port (default 2222: the agent shares the host's network)
set -euo pipefail
key=${JENKINS_AGENT_SSH_PUBKEY:-}
if ! grep -qE '^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+' <<<"$key"; then
  echo "agent-sshd: JENKINS_AGENT_SSH_PUBKEY must hold the controller's SSH public key (ssh-ed25519 AAAA...)" >&2
  exit 2
fi
home=/home/jenkins  # may be a fresh volume: the build's workspaces and the MLflow registry
install -d -o jenkins -g jenkins -m 0700 "$home/.ssh"
install -d -o jenkins -g jenkins "$home/agent" "$home/mlflow"
printf '%s\n' "$key" > "$home/.ssh/authorized_keys"
chown jenkins:jenkins "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
if [ -S /var/run/docker.sock ]; then
  gid=$(stat -c %g /var/run/docker.sock)
  getent group "$gid" >/dev/null || groupadd --gid "$gid" docker-host
  usermod -aG "$(getent group "$gid" | cut -d: -f1)" jenkins
fi
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e -p "${AGENT_SSH_PORT:-2222}"
