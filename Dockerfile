# The orders_app worker image: the same code as the embedded mode, configured by ORDERS_*.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orders_app ./orders_app
COPY agents ./agents
COPY tables ./tables
COPY web ./web
RUN pip install . && useradd --create-home --uid 10001 orders && mkdir -p /data && chown orders /data
USER orders
ENV ORDERS_DATA_DIR=/data ORDERS_WEB_HOST=0.0.0.0 ORDERS_WEB_PORT=6066
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --retries=6 CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:6066/health', timeout=2).status == 200 else 1)"
CMD ["orders-app", "worker"]
