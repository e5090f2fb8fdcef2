# voicehooks: one image for every service (serve, api, worker, migrate, bootstrap).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VOICEHOOKS_DATA_DIR=/var/lib/voicehooks

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# The versions come from pyproject.toml; the embedded PostgreSQL ships inside its wheel.
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 voicehooks \
    && useradd --system --uid 10001 --gid 10001 --create-home voicehooks \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/voicehooks

# Set VOICEHOOKS_DATABASE_URL and VOICEHOOKS_ENCRYPTION_KEYS in production; without the URL,
# `serve` runs an embedded PostgreSQL here, with an encryption key generated here: keep it.
VOLUME ["/var/lib/voicehooks"]
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

CMD ["voicehooks", "serve", "--host", "0.0.0.0", "--port", "8000"]
