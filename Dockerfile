# arcbeat worker / history exporter / simulator image (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs: the image does not change when tests or docs do.
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY exporters ./exporters
COPY dashboards ./dashboards
COPY deploy ./deploy
COPY bench ./bench
RUN pip install . \
    && useradd --create-home --uid 10001 arcbeat

USER arcbeat
WORKDIR /home/arcbeat
# worker web API + /metrics, history exporter /metrics
EXPOSE 6066 6070
CMD ["arcbeat", "--help"]
