FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 10001 voicehooks

USER voicehooks
EXPOSE 8000
# Set VOICEHOOKS_DATABASE_URL and VOICEHOOKS_ENCRYPTION_KEYS in production; without the URL an
# embedded PostgreSQL starts in VOICEHOOKS_DATA_DIR (default: the user's data directory), with
# an encryption key generated there.
CMD ["voicehooks", "serve", "--host", "0.0.0.0", "--port", "8000"]
