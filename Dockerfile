# Build stage: install cekura-scheduler (with PostgreSQL support) into a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Behind a TLS-intercepting proxy, pip must trust the proxy's CA: --build-arg BUILD_CA_CERT="$(cat proxy-ca.pem)"
# (PEM text; a public certificate, used by this stage alone, so nothing of it reaches the runtime image).
ARG BUILD_CA_CERT=""
WORKDIR /src
COPY pyproject.toml README.md CHANGELOG.md ./
COPY scheduler ./scheduler
COPY migrations ./migrations
# pip and setuptools are not needed at run time (about 25 MB less).
RUN if [ -n "$BUILD_CA_CERT" ]; then printf '%s\n' "$BUILD_CA_CERT" > /tmp/build-ca.pem; \
        export PIP_CERT=/tmp/build-ca.pem; fi \
    && python -m venv /opt/venv && /opt/venv/bin/pip install ".[postgres]" \
    && /opt/venv/bin/pip uninstall -y pip setuptools

# Runtime stage: the virtual environment only, run by an unprivileged user (uid and gid 10001).
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SCHEDULER_CONFIG=/config/jobs.toml \
    SCHEDULER_DATABASE_URL=sqlite:////data/scheduler.db
# Not --system: system ids end at 999, and a fixed id above that is what volume permissions are set for.
# --no-log-init: a high uid would otherwise grow /var/log/lastlog and faillog to sparse files of megabytes.
RUN groupadd --gid 10001 scheduler \
    && useradd --uid 10001 --gid scheduler --no-log-init --no-create-home --home-dir /data \
        --shell /usr/sbin/nologin scheduler \
    && mkdir -p /config /data && chown scheduler:scheduler /data
COPY --from=build /opt/venv /opt/venv
USER scheduler
WORKDIR /data
# Mounts (no VOLUME line: it would leave an anonymous volume behind for every replica that does not use /data):
# /config holds jobs.toml (mount the folder, not the file, so edits are seen); /data holds the SQLite database
# (a named volume, e.g. -v scheduler-data:/data; not needed with PostgreSQL).
# The status page, API and /metrics. The daemon listens on 127.0.0.1:8787 unless told otherwise: to reach it from
# outside the container set SCHEDULER_HTTP_ADDR=0.0.0.0:8787, which requires SCHEDULER_HTTP_TOKEN.
EXPOSE 8787
# `check` asks /healthz from inside the container (127.0.0.1 works whatever SCHEDULER_HTTP_ADDR binds).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["cekura-scheduler", "check"]
# SIGTERM: no new claims, submissions in flight get up to 30 s; give it 45 s (docker stop -t 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["cekura-scheduler"]
CMD ["run"]
