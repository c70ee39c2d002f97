# syntax=docker/dockerfile:1
# Build stage: install cekura-scheduler (with PostgreSQL support) into a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md CHANGELOG.md ./
COPY scheduler ./scheduler
COPY migrations ./migrations
# pip and setuptools are not needed at run time (about 25 MB less).
RUN python -m venv /opt/venv && /opt/venv/bin/pip install ".[postgres]" \
    && /opt/venv/bin/pip uninstall -y pip setuptools

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
# The status page, API and /metrics. The daemon listens on 127.0.0.1:8787 unless told otherwise: to reach it from
# outside the container set SCHEDULER_HTTP_ADDR=0.0.0.0:8787, which requires SCHEDULER_HTTP_TOKEN.
EXPOSE 8787
# `check` asks /healthz from inside the container (127.0.0.1 works whatever SCHEDULER_HTTP_ADDR binds).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["cekura-scheduler", "check"]
# SIGTERM: no new claims, submissions in flight get up to 30 s; give it 45 s (docker stop -t 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["cekura-scheduler"]
CMD ["run"]
