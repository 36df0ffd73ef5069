# The operator image the Helm chart runs: `docker build -t ghcr.io/tritonscale/tritonscale:0.1.0 .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER 65532:65532
ENTRYPOINT ["tritonscale"]
CMD ["run"]
