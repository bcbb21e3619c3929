# bids_harmonize BIDS App image.
#
#   online:   docker build -t bids_harmonize .                      (torch from PyPI, CUDA bundled)
#             docker build --build-arg TORCH_VARIANT=cpu -t bids_harmonize:cpu .
#   offline:  podman build --network none --build-context wheels=WHEELHOUSE ...
#             (workflows/container/build.sh does this; wheelhouse.sh fills WHEELHOUSE)
#
# Needs BuildKit's built-in Dockerfile frontend (Docker >= 23: RUN --mount, --build-context)
# or podman/buildah >= 4.2/1.27; no '# syntax=' line, which would pull a frontend image.
#
# Stages: wheels (empty unless a 'wheels' build context replaces it), build (the project's
# wheel), runtime (the default target), test (runtime + the 'test' extra and tests/, for CI).

# Python 3.11.13 on Debian bookworm, pinned by its multi-platform manifest digest.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# An empty wheelhouse: online builds install from the indexes. A build context named 'wheels'
# (--build-context wheels=DIR) takes this stage's place; when it holds wheels, every pip call
# below uses only them (--no-index), so the build works with --network none.
FROM scratch AS wheels

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bids_harmonize ./bids_harmonize
# The build requirements (pyproject's [build-system]) come from the wheelhouse when it has any.
RUN --mount=type=bind,from=wheels,target=/wheels \
    if ls /wheels/*.whl >/dev/null 2>&1; then \
      export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; \
    fi \
    && python3 -m pip wheel --no-deps --wheel-dir /dist /src \
    && ls -l /dist

FROM ${BASE_IMAGE} AS runtime
ARG TORCH_VARIANT=cuda
ARG TORCH_VERSION=2.13.0
# The package version (build.sh reads it from bids_harmonize/__about__.py); checked below.
ARG VERSION=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv
# Dependencies, from pyproject.toml (so that this layer is rebuilt when they change and only
# then): torch first, from its variant's index or the wheelhouse, then the rest. The import
# check refuses a torch of the wrong variant (a CPU wheel in a 'cuda' image or the other way).
# WHEELHOUSE_ID (build.sh: a hash of the wheelhouse's file list) makes a changed wheelhouse
# rebuild this layer: podman/buildah reuse a cached RUN --mount layer whatever was mounted.
ARG WHEELHOUSE_ID=""
COPY pyproject.toml /tmp/build/pyproject.toml
RUN --mount=type=bind,from=wheels,target=/wheels \
    if ls /wheels/*.whl >/dev/null 2>&1; then \
      export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; \
      local_label=""; \
    elif [ "${TORCH_VARIANT}" = cpu ]; then \
      export PIP_INDEX_URL=https://download.pytorch.org/whl/cpu; \
      local_label="+cpu"; \
    else \
      local_label=""; \
    fi \
    && pip install "torch==${TORCH_VERSION}${local_label}" \
    && unset PIP_INDEX_URL \
    && python -c "import tomllib; \
print(*tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" \
      > /tmp/build/requirements.txt \
    && pip install --requirement /tmp/build/requirements.txt \
    && rm -rf /tmp/build \
    && python -c "import sys, torch; cuda = torch.version.cuda is not None; \
sys.exit(0 if cuda == ('${TORCH_VARIANT}' == 'cuda') else \
f'torch {torch.__version__} does not match TORCH_VARIANT=${TORCH_VARIANT}')"

# The project itself (COPY is content-addressed: a new wheel always reaches the image), then
# pip check (every requirement of the wheel is met by the layer above) and the version check.
COPY --from=build /dist /tmp/dist
RUN pip install --no-deps /tmp/dist/bids_harmonize-*.whl \
    && rm -rf /tmp/dist \
    && pip check \
    && python -c "import bids_harmonize, sys; v = bids_harmonize.__version__; \
sys.exit(0 if '${VERSION}' in ('', v) else f'VERSION build arg ${VERSION} != package version {v}')"

# Templates: baked in, read-only at run time; nothing is downloaded when the app runs.
# TEMPLATEFLOW_FETCH: templates to fetch from TemplateFlow's server at build time, besides the
# MNI152NLin2009aSym that is always built offline from nilearn's files (space-separated,
# e.g. "MNI152NLin2009cAsym", the app's default output space; needs network).
ARG TEMPLATEFLOW_FETCH=""
ENV TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0
# (Fetch first: TemplateFlow lays its skeleton only into a home that does not exist yet.)
RUN for tpl in ${TEMPLATEFLOW_FETCH}; do \
      python -c "import sys, templateflow.api as tf; name = sys.argv[1]; \
tf.get(name, resolution=2, desc=None, suffix='T1w'); \
tf.get(name, resolution=2, desc='brain', suffix='mask'); \
tf.get(name, resolution=2, suffix='probseg')" "${tpl}" || exit 1; \
    done \
    && bids_harmonize-templates /opt/templateflow \
    && python -c "import sys; from bids_harmonize.templates import get_template; \
[print(get_template(t).t1w) for t in ['MNI152NLin2009aSym', *sys.argv[1:]]]" ${TEMPLATEFLOW_FETCH} \
    && chmod -R a+rX /opt/templateflow

# A non-root user; every cache and config goes to /tmp so that the image runs with a
# read-only root file system, a tmpfs /tmp and only the output folders writable, and under
# Apptainer as whatever user calls it.
RUN groupadd --gid 1000 bids \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin bids
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_DATA_HOME=/tmp/.local/share \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    MPLBACKEND=Agg \
    NUMBA_CACHE_DIR=/tmp/.cache/numba \
    TORCH_HOME=/tmp/.cache/torch \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    DENO_DIR=/tmp/.cache/deno \
    NIPYPE_NO_ET=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids_harmonize"]
CMD ["--help"]

# Last, so that a new date or commit does not invalidate the layers above.
ARG BASE_IMAGE
ARG REVISION=""
ARG CREATED=""
ARG SOURCE="https://github.com/bids-harmonize/bids_harmonize"
# The image's own name, recorded in dataset_description.json's GeneratedBy.Container.
ARG IMAGE_TAG="bids_harmonize:${VERSION}"
ENV BIDS_HARMONIZE_IMAGE=${IMAGE_TAG}
LABEL org.opencontainers.image.title="bids_harmonize" \
      org.opencontainers.image.description="BIDS App harmonizing PET-MR brain PET towards PET-CT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.github.bids-harmonize.torch-variant="${TORCH_VARIANT}"

# CI: the runtime plus pytest and the repository's tests, run against the installed package.
FROM runtime AS test
USER 0
ARG WHEELHOUSE_ID=""
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=bind,from=wheels,target=/wheels \
    if ls /wheels/*.whl >/dev/null 2>&1; then \
      export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; \
    fi \
    && python -c "import tomllib; \
print(*tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['optional-dependencies']['test'], sep=chr(10))" \
      > /tmp/test-requirements.txt \
    && pip install --requirement /tmp/test-requirements.txt \
    && rm /tmp/test-requirements.txt \
    && pip check
# The build context (see .dockerignore): tests/ and the files they check. PYTHONSAFEPATH keeps
# /src off sys.path, so the tests import the installed package, not /src/bids_harmonize.
COPY . /src
ENV PYTHONSAFEPATH=1
WORKDIR /src
RUN python -c "import bids_harmonize, sys; f = bids_harmonize.__file__; \
sys.exit(0 if f.startswith('/opt/venv/') else f'the tests would import {f}')"
USER 1000:1000
ENTRYPOINT ["pytest"]
CMD ["-q", "-p", "no:cacheprovider", "tests"]
