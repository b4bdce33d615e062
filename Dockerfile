# syntax=docker/dockerfile:1
# Fortress in one container: the proxy and the admin (`fortress run`), state on the /data volume.
#   docker build -t fortress .
#   docker run -d -p 8080:8080 -p 127.0.0.1:8081:8081 -v fortress-data:/data \
#     -e FORTRESS_BACKEND_URL=http://ollama-host:11434 fortress
# compose.yaml adds an Ollama service; the README's "Docker" section has the details.
# No secret is baked in: the admin password comes from the environment (or is generated at the
# first start) and every key lives in the volume.

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fortress ./fortress
COPY admin ./admin
RUN python -m venv /opt/fortress \
    && /opt/fortress/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/fortress/bin/pip install --no-cache-dir .

FROM python:3.12-slim-bookworm
ENV PATH=/opt/fortress/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FORTRESS_HOME=/data \
    FORTRESS_CONFIG=/data/config.toml
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin fortress \
    && install -d -m 0700 -o fortress -g fortress /data
COPY --from=build /opt/fortress /opt/fortress
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/fortress-entrypoint
COPY --chmod=0644 docker/healthcheck.py /usr/local/lib/fortress-healthcheck.py
USER fortress
WORKDIR /data
VOLUME ["/data"]
# the proxy, then the admin (publish the admin on 127.0.0.1 only, see compose.yaml)
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/fortress-healthcheck.py"]
# SIGTERM reaches `fortress run`, which drains both processes ([proxy] drain_timeout_s)
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fortress-entrypoint"]
CMD ["run"]
