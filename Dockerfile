# reactor: the Scrum4Me job reactor as a container daemon (NAS or VM).
#
# One stage on purpose: every dependency ships as a binary wheel (asyncpg included), so a
# builder stage with a compiler would only add complexity without making the image smaller.
FROM python:3.12-slim-bookworm

# git: GitPython shells out to the git binary for clones, worktrees, branches and pushes.
# tini: PID 1 that forwards SIGTERM to the reactor and reaps the agent processes it spawns.
# ca-certificates: TLS to Neon and to git remotes over HTTPS.
# Versions are whatever bookworm's security-patched archive holds at build time; fake pins
# would break the build as soon as Debian ships a point release, so DL3008 is waived here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid 1000 so bind mounts and named volumes get predictable ownership on a NAS.
# The directories that become volumes are created (and chowned) here, before VOLUME below:
# Docker seeds a new named volume from the image's directory, ownership included, so the
# non-root agent can write to it on the very first boot.
RUN groupadd --gid 1000 agent \
    && useradd --uid 1000 --gid agent --create-home --shell /bin/bash agent \
    && install -d -o agent -g agent \
        /home/agent/.scrum4me-agent-worktrees \
        /home/agent/Projects \
        /var/log/reactor

# Only what the package build needs; .dockerignore keeps the rest of the context out too.
# Installed as root into the system site-packages, so the agent user cannot modify the code
# it runs. The source copy is tiny; the wheel's files land in site-packages.
WORKDIR /opt/reactor-src
COPY pyproject.toml README.md ./
COPY reactor/ reactor/
COPY handlers/ handlers/
COPY sql/ sql/
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore .

# REACTOR_HTTP_HOST: the reactor binds 127.0.0.1 by default, unreachable through a published
# port; inside a container it must listen on every interface.
# REACTOR_LOG_DIR / SCRUM4ME_AGENT_WORKTREE_DIR: point at the volumes declared below.
# PYTHONUNBUFFERED: JSON log lines reach `docker compose logs` as they are written.
ENV REACTOR_HTTP_HOST=0.0.0.0 \
    REACTOR_LOG_DIR=/var/log/reactor \
    SCRUM4ME_AGENT_WORKTREE_DIR=/home/agent/.scrum4me-agent-worktrees \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Worktrees and the ~/Projects clones they are cut from must survive a container restart
# (a running story keeps its branch and worktree); per-job agent logs are kept for the operator.
VOLUME ["/home/agent/.scrum4me-agent-worktrees", "/home/agent/Projects", "/var/log/reactor"]

# /health, /metrics and /mcp (REACTOR_HEALTH_PORT, default 8080).
EXPOSE 8080

# No curl in the image: the probe uses Python's stdlib. urlopen raises on a 503 (unhealthy or
# token expired) and on a refused connection, both of which exit non-zero. The port follows
# REACTOR_HEALTH_PORT so changing it does not silently break the probe. The start period
# covers `reactor migrate` and the first database connection.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('REACTOR_HEALTH_PORT') or '8080'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4).status == 200 else 1)"]

# The agent user created above, by number: a runtime can then verify "not root" without reading
# the image's /etc/passwd (Kubernetes runAsNonRoot refuses a named USER for that reason).
USER 1000:1000
WORKDIR /home/agent

# tini as PID 1: a Python process as PID 1 would not get default signal handling, and agent
# subprocesses orphaned by a crash would never be reaped.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["reactor", "run"]
