# syntax=docker/dockerfile:1
#
# The flagsched image: one image for every role, picked by the command.
#
#   docker build -t flagsched:0.1.0 .
#   docker run --rm -e FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS=... -e FLAGSCHED_DATABASE_URL=... \
#       flagsched:0.1.0 worker            # the default command
#   ... flagsched:0.1.0 producer          # the dispatcher
#   ... flagsched:0.1.0 notifier          # notifications (FLAGSCHED_NOTIFY_CONFIG)
#   ... flagsched:0.1.0 db migrate        # one-shot setup (idempotent)
#   ... flagsched:0.1.0 topics create     # one-shot setup (idempotent)
#
# The image runs against an external Kafka and PostgreSQL: set both
# FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS and FLAGSCHED_DATABASE_URL. The local dev stack
# (`flagsched dev`, the devtools/ part: Java, Maven, Kafka jars) is not in the image.
# See docs/deployment.md.

# Both stages must use the same interpreter: the virtual environment built in the
# first stage links to /usr/local/bin/python3.11 of this image.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a wheel of this project, installed with its runtime dependencies ----------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheels are built from (see .dockerignore): the product parts, each a
# distribution of its own (README, "Parts"), and the root meta-package with the CLI.
# The developer tooling (devtools/: the local stack and the demo) is not in the image.
COPY pyproject.toml README.md ./
COPY cli ./cli
COPY schemas ./schemas
COPY runtime ./runtime
COPY producer ./producer
COPY consumer ./consumer
COPY admin ./admin
COPY notifier ./notifier

# The venv gets no pip or setuptools of its own (nothing to patch in the final image);
# the build stage's pip installs into it. The project's runtime dependencies all have
# binary wheels for CPython 3.11 on Linux, so no compiler is needed. Runtime
# dependencies only: the `dev` extra is not installed.
RUN python -m venv --without-pip /opt/venv \
 && pip wheel --no-deps --wheel-dir /tmp/wheels ./schemas ./runtime ./producer ./consumer ./admin ./notifier . \
 && pip --python /opt/venv/bin/python install /tmp/wheels/*.whl \
 && /opt/venv/bin/flagsched --help > /dev/null

# --- runtime -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="flagsched" \
      org.opencontainers.image.description="Scheduled feature-flag changes applied on time, exactly once" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 flagsched \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/flagsched --create-home \
        --shell /usr/sbin/nologin flagsched

# Root-owned and read-only for the service user; the bytecode was compiled at install
# time, so nothing needs to be written there (readOnlyRootFilesystem works).
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /home/flagsched

# The conventional metrics ports (set FLAGSCHED_METRICS_PORT and
# FLAGSCHED_METRICS_ADDR=0.0.0.0 to serve /metrics): worker 9400, dispatcher 9401,
# notifier 9402, cleanup 9403.
EXPOSE 9400 9401 9402 9403

# Exec form: flagsched is PID 1 and receives SIGTERM itself. It handles it (finish the
# batch in hand, commit, leave the group), so no init process is needed.
ENTRYPOINT ["flagsched"]
CMD ["worker"]
