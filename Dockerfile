# CardSense serving image: Paddle Inference behind gunicorn + Flask (see docs/SERVING.md).
#
#   docker build -t cardsense-serve .                       # needs models/default in the build context
#   docker run --gpus all -p 8000:8000 cardsense-serve      # GPU when visible, else CPU (CARDSENSE_DEVICE=auto)
#   docker run -p 8000:8000 -v /srv/models/v7:/models/v7:ro -e CARDSENSE_MODEL_DIR=/models/v7 cardsense-serve
#
# The base is Paddle's GPU image (CUDA + cuDNN + the GPU build of Paddle 3.x, which also runs on CPU).
# PyPI's paddlepaddle-gpu stops at 2.6 and cannot load 3.x models, so the GPU build comes from the base.
# Override with --build-arg BASE_IMAGE=... to follow a newer Paddle release.
ARG BASE_IMAGE=paddlepaddle/paddle:3.3.1-gpu-cuda12.6-cudnn9.5
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CARDSENSE_MODEL_DIR=/app/models/default \
    CARDSENSE_EXTRA_MODEL_DIRS=/app/models/series,/app/models/dual \
    CARDSENSE_DEVICE=auto \
    CARDSENSE_PORT=8000 \
    CARDSENSE_TRT_CACHE_DIR=/home/cardsense/.cache/trt

WORKDIR /app

# Dependencies before code, so a code change does not reinstall them. The CPU wheel pinned in
# requirements-serve.txt is left out: the base image already holds the GPU build of Paddle.
COPY requirements-serve.txt /tmp/requirements-serve.txt
RUN grep -v -E '^paddlepaddle([=<>~ ]|$)' /tmp/requirements-serve.txt > /tmp/requirements-image.txt \
    && python3 -m pip install --no-cache-dir -r /tmp/requirements-image.txt \
    && python3 -c "import paddle, sys; print('paddle', paddle.__version__, 'CUDA build:', paddle.is_compiled_with_cuda()); sys.exit(0 if paddle.__version__.startswith('3.') else 'Paddle 3.x is needed to load PIR (.json) models')" \
    && groupadd --gid 10001 cardsense \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin cardsense \
    && mkdir -p /home/cardsense/.cache/trt \
    && chown -R cardsense /home/cardsense/.cache

# Only what the service runs: no training code, tests or data.
COPY shared/ /app/shared/
COPY serving/ /app/serving/
# The shipped models (image default, series for CSVs, dual for PNG + CSV pairs); mount another folder
# and point CARDSENSE_MODEL_DIR (and CARDSENSE_EXTRA_MODEL_DIRS, or "none") at it to serve a different one.
COPY models/default/ /app/models/default/
COPY models/series/ /app/models/series/
COPY models/dual/ /app/models/dual/

# Non-root (numeric, so Kubernetes' runAsNonRoot can verify it).
USER 10001:10001
EXPOSE 8000

# /readyz answers 200 once a worker has loaded the model and warmed up every batch shape.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-m", "serving.healthcheck"]

ENTRYPOINT ["python3", "-m", "gunicorn", "-c", "serving/gunicorn.conf.py"]
CMD ["serving.app:create_app()"]
