# syntax=docker/dockerfile:1
#
# seqtag HTTP service (and training CLI) images.
#
#   docker build -t seqtag:cpu .                 # default target: cpu (torch CPU build)
#   docker build -t seqtag:gpu --target gpu .    # CUDA build of torch; run with --gpus all
#
# Models: the shipped checkpoints are baked into /app/checkpoints (read-only reference
# copy) and copied to /models, which SEQTAG_MODELS_DIR points at. /models, /dictionaries
# and /runs exist in the image and belong to the non-root user, so a named volume mounted
# there (docker-compose.yml does this) is initialised by Docker from the image content on
# first use and stays writable. `seqtag train ... --export /models/NAME` writes a new model
# there; POST /v1/models/reload makes the running service pick it up.

# ---- build: the seqtag wheel (no torch, no compiler needed) -------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY seqtag ./seqtag
COPY models ./models
COPY training ./training
COPY service ./service
COPY checkpoints ./checkpoints
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime base: what cpu and gpu share (user, directories, settings, port, ---
# ---- health check, command); each target adds its torch build and the app ------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    SEQTAG_MODELS_DIR=/models \
    SEQTAG_DICTIONARIES_DIR=/dictionaries \
    SEQTAG_HOST=0.0.0.0 \
    SEQTAG_PORT=8000
RUN groupadd --system --gid 10001 seqtag \
 && useradd --system --uid 10001 --gid seqtag --create-home --home-dir /home/seqtag --shell /usr/sbin/nologin seqtag \
 && mkdir -p /models /dictionaries /runs \
 && chown seqtag:seqtag /models /dictionaries /runs
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["seqtag", "serve"]

# cpu and gpu differ only in their torch line. The lines after it stand in both: a stage has one parent, so
# sharing them would take a --build-arg for gpu, or copying the app in before torch (rebuilding torch's
# layer whenever a checkpoint changes).

# ---- gpu: CUDA build of torch (PyPI's Linux wheel bundles the CUDA runtime; ---
# ---- the host needs an NVIDIA driver and the NVIDIA Container Toolkit) --------
FROM runtime AS gpu
RUN pip install torch==2.13.0
COPY --from=build /wheels /tmp/wheels
# jieba and jionlp: `seqtag train --lexicon jieba` / `--lexicon jionlp-places` read jieba's dict.txt (MIT) and
# jionlp's place names (Apache-2.0) at training time (the recipes do); jionlp's files are read, never imported
RUN pip install /tmp/wheels/*.whl "jieba>=0.42" && pip install --no-deps "jionlp>=1.5" && rm -rf /tmp/wheels
COPY training/recipes /app/training/recipes
COPY checkpoints /app/checkpoints
RUN cp -a /app/checkpoints/. /models/ && chown -R seqtag:seqtag /models
USER seqtag

# ---- cpu (default target, last stage): CPU build of torch ---------------------
FROM runtime AS cpu
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY --from=build /wheels /tmp/wheels
# jieba and jionlp: `seqtag train --lexicon jieba` / `--lexicon jionlp-places` read jieba's dict.txt (MIT) and
# jionlp's place names (Apache-2.0) at training time (the recipes do); jionlp's files are read, never imported
RUN pip install /tmp/wheels/*.whl "jieba>=0.42" && pip install --no-deps "jionlp>=1.5" && rm -rf /tmp/wheels
COPY training/recipes /app/training/recipes
COPY checkpoints /app/checkpoints
RUN cp -a /app/checkpoints/. /models/ && chown -R seqtag:seqtag /models
USER seqtag
