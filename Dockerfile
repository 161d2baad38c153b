# arcbeat worker / history exporter / simulator image (see docker-compose.yml).

# Only what the package needs: pyproject.toml, README.md and the folders of pyproject.toml's
# [tool.setuptools] package-dir (the one list of them). They are gathered in a first stage, so
# the image does not change when tests or docs do.
FROM python:3.11-slim AS source
WORKDIR /context
COPY . .
RUN python -c 'import shutil, tomllib; folders = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"].values(); [shutil.copytree(f, "/src/" + f) for f in folders]; [shutil.copy(f, "/src/" + f) for f in ("pyproject.toml", "README.md")]'

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY --from=source /src ./
RUN pip install . \
    && useradd --create-home --uid 10001 arcbeat

USER arcbeat
WORKDIR /home/arcbeat
# worker web API + /metrics, history exporter /metrics
EXPOSE 6066 6070
CMD ["arcbeat", "--help"]
