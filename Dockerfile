# One image for every part of the organizations platform: the four nameko services, the gateway
# and the one-shot helpers (topology declaration, key generation). The process is chosen by the
# compose `command:`, e.g.
#   nameko run --config services/org/config.yml services.org.service
#   gunicorn -c gateway/gunicorn.conf.py "gateway.app:create_app()"
#   python -m common.topology
#   python -m services.membership.keys generate /keys/jwt-private.pem /keys/jwt-private.pub.pem
# Configuration comes from environment variables only (the ${VAR:default} placeholders of
# services/*/config.yml and gateway/config.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first so code changes do not invalidate this layer. Every pinned requirement ships
# manylinux wheels for CPython 3.11, so no compiler is needed. Only the runtime section of
# requirements.txt is installed: everything from its "# Tests" line on (pytest, pyflakes, the API
# fuzzer and its generators, the OpenAPI validator, the console's browser driver and accessibility
# checker) stays out of the runtime image.
COPY requirements.txt /tmp/requirements.txt
RUN sed '/^# Tests/,$d' /tmp/requirements.txt > /tmp/requirements.runtime.txt \
    && pip install --no-cache-dir -r /tmp/requirements.runtime.txt \
    && rm -f /tmp/requirements.txt /tmp/requirements.runtime.txt

# Unprivileged runtime user with a fixed uid/gid (10001) so volumes and orchestrators
# (runAsNonRoot, user: "10001") can rely on it.
# /keys/private and /keys/public belong to that user: a fresh named volume mounted there inherits
# the ownership, so the one-shot `keygen` container can write the key pair without running as root.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app \
    && mkdir -p /keys/private /keys/public \
    && chown 10001:10001 /keys /keys/private /keys/public \
    && chmod 0750 /keys /keys/private /keys/public

# Only what runs. The code stays owned by root, so the app user cannot modify it; it is made
# world-readable whatever the umask of the checkout was, and compiled once here (the containers
# run with a read-only root file system).
COPY common/ /app/common/
COPY services/ /app/services/
COPY gateway/ /app/gateway/
RUN python -m compileall -q /app/common /app/services /app/gateway \
    && chmod -R a+rX,go-w /app

USER 10001:10001

# Compose (or the orchestrator) defines a healthcheck per process; the image cannot know which.
HEALTHCHECK NONE

# No default process: every container states which part it runs.
CMD ["python", "-c", "import sys; sys.exit('orgplatform image: give a command, e.g.\\n  nameko run --config services/<name>/config.yml services.<name>.service\\n  gunicorn -c gateway/gunicorn.conf.py \"gateway.app:create_app()\"\\n  python -m common.topology\\n  python -m services.membership.keys generate PRIVATE_PEM PUBLIC_PEM')"]
