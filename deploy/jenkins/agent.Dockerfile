# syntax=docker/dockerfile:1.7
# The Jenkins build agent: every build of the pet-classifier job runs here, never on the
# controller (casc.yaml gives the controller 0 executors). It holds every binary the stages and
# their tests drive, so that under CI=true no test skips in Jenkins either:
#   - the Debian packages `make system-deps` installs (tests/deploy/test_jenkinsfile.py keeps the list
#     equal to the Makefile's APT_PACKAGES), on the same Python base as the serving image;
#   - Java 21 for the agent process (Jenkins 2.555 and later require it on agents) and for
#     npm-groovy-lint; Node.js and npm for the pinned npm tools;
#   - the docker CLI (the host's engine through its socket), kind, kubectl and Trivy.
# The controller reaches it over SSH (the SSH Build Agents plugin): agent-sshd.sh authorises
# JENKINS_AGENT_SSH_PUBKEY for the `jenkins` user. compose.yaml runs both.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG JAVA_IMAGE=eclipse-temurin:21.0.9_10-jre
ARG DOCKER_CLI_IMAGE=docker:27.3.1-cli
ARG TRIVY_IMAGE=aquasec/trivy:0.57.1

FROM ${JAVA_IMAGE} AS java
FROM ${DOCKER_CLI_IMAGE} AS docker-cli
FROM ${TRIVY_IMAGE} AS trivy

FROM ${PYTHON_IMAGE} AS tools
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The first line is the Makefile's APT_PACKAGES; the second what an SSH agent and the stages
# need besides (sshd, make, git, curl, Node.js for the npm tools).
# Debian package versions move with the pinned base image's point releases.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        chromium chromium-driver wrk prometheus prometheus-alertmanager nginx prometheus-nginx-exporter podman runc netavark aardvark-dns iptables catatonit debootstrap lomiri-wallpapers \
        openssh-server make git curl ca-certificates nodejs npm \
    && rm -rf /var/lib/apt/lists/*

# The agent without the tools fetched from other images and the internet (the tests build this
# stage where no registry answers: tests/deploy/test_jenkins_agent.py).
FROM tools AS agent-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=java /opt/java/openjdk /opt/java/openjdk
COPY agent-sshd.sh /usr/local/bin/agent-sshd
# An SSH session starts with a login PATH, not the image's ENV: /etc/environment (read by sshd's
# PAM session) gives the build Java and /usr/sbin (nginx).
RUN useradd --create-home --shell /bin/bash --uid 1000 jenkins \
    && mkdir -p /home/jenkins/agent /home/jenkins/.ssh /run/sshd \
    && chown -R jenkins:jenkins /home/jenkins \
    && chmod 0700 /home/jenkins/.ssh \
    && echo "PATH=/opt/java/openjdk/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" > /etc/environment \
    && echo "JAVA_HOME=/opt/java/openjdk" >> /etc/environment \
    && sed -i -e 's/^#\?PasswordAuthentication .*/PasswordAuthentication no/' \
        -e 's/^#\?PermitRootLogin .*/PermitRootLogin no/' /etc/ssh/sshd_config
ENV JAVA_HOME=/opt/java/openjdk PATH=/opt/java/openjdk/bin:$PATH
# 2222: the agent shares the host's network (the Kind API listens on 127.0.0.1) beside its sshd.
EXPOSE 2222
ENTRYPOINT ["/usr/local/bin/agent-sshd"]

FROM agent-base
ARG KIND_VERSION=v0.25.0
ARG KUBECTL_VERSION=v1.31.4
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=trivy /usr/local/bin/trivy /usr/local/bin/trivy
# kind and kubectl, each checked against its published sha256.
RUN curl -fsSLo /usr/local/bin/kind "https://kind.sigs.k8s.io/dl/${KIND_VERSION}/kind-linux-amd64" \
    && curl -fsSL "https://github.com/kubernetes-sigs/kind/releases/download/${KIND_VERSION}/kind-linux-amd64.sha256sum" \
        | awk '{print $1 "  /usr/local/bin/kind"}' | sha256sum --check \
    && curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl" \
    && echo "$(curl -fsSL "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl.sha256")  /usr/local/bin/kubectl" \
        | sha256sum --check \
    && chmod 0755 /usr/local/bin/kind /usr/local/bin/kubectl
