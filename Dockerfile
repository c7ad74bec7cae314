# greenwindow images, two targets of one file:
#   docker build --target api .                                   the API (`greenwindow serve`),
#                                                                 no PyTorch
#   docker build --target worker --build-arg TORCH_VARIANT=cu124 .  GPU workers
#                                                                 (`greenwindow worker`)
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GREENWINDOW_DATA_DIR=/var/lib/greenwindow

RUN useradd --system --create-home --home-dir /home/greenwindow greenwindow \
    && mkdir -p "${GREENWINDOW_DATA_DIR}" \
    && chown greenwindow "${GREENWINDOW_DATA_DIR}"

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY scheduler ./scheduler
COPY worker ./worker
COPY migrations ./migrations


FROM base AS worker
# cpu, or a CUDA build such as cu124: picks the PyTorch wheel index.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# torch first and on its own index: a plain `pip install torch` would pull the multi-GB
# CUDA build whatever the variant. The worker extra then finds it satisfied.
RUN pip install "torch==${TORCH_VERSION}" \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
RUN pip install ".[worker]"
USER greenwindow
WORKDIR /var/lib/greenwindow
VOLUME ["/var/lib/greenwindow"]
ENTRYPOINT ["greenwindow"]
CMD ["worker", "--server", "http://api:8000"]


# The API last, so a plain `docker build .` gives the light image.
FROM base AS api
RUN pip install .
USER greenwindow
# Relative defaults (.greenwindow/...) then land in the writable data volume, not in /app.
WORKDIR /var/lib/greenwindow
VOLUME ["/var/lib/greenwindow"]
EXPOSE 8000
# serve applies migrations before it starts listening.
ENTRYPOINT ["greenwindow"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
