# greenwindow: one image for the API (`greenwindow serve`) and the GPU workers
# (`greenwindow worker`). CPU torch by default; GPU workers build with
#   docker build --build-arg TORCH_VARIANT=cu124 .
FROM python:3.11-slim

# cpu, or a CUDA build such as cu124: picks the PyTorch wheel index.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GREENWINDOW_DATA_DIR=/var/lib/greenwindow

# torch first and on its own index: a plain `pip install torch` would pull the
# multi-GB CUDA build even for the API. This layer is cached across code changes.
RUN pip install "torch==${TORCH_VERSION}" \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY scheduler ./scheduler
COPY worker ./worker
COPY migrations ./migrations
# torch is already satisfied, so this installs the project and its other dependencies only.
RUN pip install . \
    && useradd --system --create-home --home-dir /home/greenwindow greenwindow \
    && mkdir -p "${GREENWINDOW_DATA_DIR}" \
    && chown greenwindow "${GREENWINDOW_DATA_DIR}"

USER greenwindow
# Relative defaults (.greenwindow/...) then land in the writable data volume, not in /app.
WORKDIR /var/lib/greenwindow
VOLUME ["/var/lib/greenwindow"]
EXPOSE 8000

# serve applies migrations before it starts listening.
ENTRYPOINT ["greenwindow"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
