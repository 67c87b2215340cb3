# cartstream on the official Python image; docker-compose.yml runs it beside
# the official Kafka and PostgreSQL images.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cartstream cartstream
COPY handlers handlers
COPY consumer consumer
COPY projections projections
COPY schemas schemas
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["cartstream"]
CMD ["run"]
