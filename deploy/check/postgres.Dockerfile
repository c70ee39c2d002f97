# A stand-in for the official postgres image, from Debian's postgresql package (no image registry is reachable
# where deploy/check/run runs). It honours what deploy/compose.yaml relies on: POSTGRES_PASSWORD, POSTGRES_USER,
# POSTGRES_DB, the data folder /var/lib/postgresql/data, and pg_isready on the PATH.
FROM python:3.11-slim
# No cluster of Debian's own: the entrypoint makes one in the data folder, as the official image does.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown postgres:postgres /var/lib/postgresql/data /run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint /usr/local/bin/postgres-entrypoint
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
