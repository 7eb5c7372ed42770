# The orders_app worker image: the same code as the embedded mode, configured by ORDERS_*.
# The dashboard's chart library, as `make vendor` fetches it (pinned; see the Makefile).
FROM node:20-slim AS vendor
WORKDIR /v
RUN npm pack --silent uplot@1.6.32 && tar -xzf uplot-1.6.32.tgz && mkdir out \
    && cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css out/ \
    && cp package/LICENSE out/uPlot.LICENSE

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orders_app ./orders_app
COPY agents ./agents
COPY tables ./tables
COPY web ./web
COPY --from=vendor /v/out ./web/static/vendor
RUN pip install . && useradd --create-home --uid 10001 orders && mkdir -p /data && chown orders /data
USER orders
ENV ORDERS_DATA_DIR=/data ORDERS_WEB_HOST=0.0.0.0 ORDERS_WEB_PORT=6066
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --retries=6 CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:6066/health', timeout=2).status == 200 else 1)"
CMD ["orders-app", "worker"]
