# arcbeat worker / history exporter / simulator image (docs/containers.md, docker-compose.yml).
#
#   docker build -t arcbeat:dev .
#   podman build --format docker -t arcbeat:dev \
#     --build-arg BASE=localhost/arcbeat-python-base:bookworm .
# (podman's default OCI format has no HEALTHCHECK: --format docker keeps it)
#
# BASE is any Debian-based image with Python 3.11 or 3.12 and its venv module: the official
# python:3.11-slim by default, or Debian's own python3 (deploy/podman/build-base.sh builds one
# from Debian packages for hosts that cannot pull images). arcbeat goes into a virtualenv,
# /opt/arcbeat, so that both work: Debian's python3 refuses `pip install` outside one (PEP 668).
ARG BASE=python:3.11-slim

# Only what the package needs: pyproject.toml, README.md and the folders of pyproject.toml's
# [tool.setuptools] package-dir (the one list of them), plus requirements.txt, the project's
# dependencies as pyproject.toml declares them. They are gathered in a first stage, so the
# image does not change when tests or docs do, and the dependencies' layer only when they do.
FROM ${BASE} AS source
WORKDIR /context
COPY . .
RUN python3 -c 'import shutil, tomllib; project = tomllib.load(open("pyproject.toml", "rb")); folders = project["tool"]["setuptools"]["package-dir"].values(); [shutil.copytree(f, "/src/" + f) for f in folders]; [shutil.copy(f, "/src/" + f) for f in ("pyproject.toml", "README.md")]; open("/src/requirements.txt", "w").write("".join(d + "\n" for d in project["build-system"]["requires"] + project["project"]["dependencies"]))'

FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/arcbeat/bin:$PATH

# Dependencies (and the build backend) first: code changes rebuild only the small layers below.
# Behind a TLS-intercepting proxy, give pip its CA bundle as the build secret "pip-ca":
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt .
COPY --from=source /src/requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m venv /opt/arcbeat \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

WORKDIR /src
COPY --from=source /src ./
RUN pip install --no-deps --no-build-isolation . \
    && cd / && rm -rf /src \
    && groupadd --gid 10001 arcbeat \
    && useradd --create-home --uid 10001 --gid 10001 arcbeat

# Non-root. The worker keeps its data_dir (state/worker) under the home folder; its state is
# rebuilt from Kafka, so nothing there needs to outlive the container.
USER 10001:10001
WORKDIR /home/arcbeat
# worker web API + /metrics (ARCBEAT_WEB_PORT + --id), history exporter /metrics
EXPOSE 6066 6070
# A worker is healthy when /readyz answers 200; the history exporter when /healthz does; any
# other command (topics, simulate) when it runs. curl is not in slim images: Python probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "arcbeat.deploy.healthcheck"]
CMD ["arcbeat", "--help"]
