# syntax=docker/dockerfile:1
# Build stage: install cekura-scheduler (with PostgreSQL support) into a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md CHANGELOG.md ./
COPY scheduler ./scheduler
COPY migrations ./migrations
RUN python -m venv /opt/venv && /opt/venv/bin/pip install ".[postgres]"

# Runtime stage: the virtual environment only, run by an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SCHEDULER_CONFIG=/config/jobs.toml \
    SCHEDULER_DATABASE_URL=sqlite:////data/scheduler.db
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin scheduler \
    && mkdir -p /config /data && chown scheduler:scheduler /data
COPY --from=build /opt/venv /opt/venv
USER scheduler
WORKDIR /data
# /config holds jobs.toml (mount the folder, not the file, so edits are seen); /data holds the SQLite database.
VOLUME ["/config", "/data"]
ENTRYPOINT ["cekura-scheduler"]
CMD ["run"]
