# One image for the three services; docker-compose.yml picks the service by command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY caj ./caj
COPY services ./services
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 caj
USER caj

# Overridden per service in docker-compose.yml.
CMD ["sh", "-c", "caj db upgrade --service catalog && exec uvicorn --factory catalog_service.main:app --host 0.0.0.0 --port 8001"]
