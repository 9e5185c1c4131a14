# The medintake worker image: one image for every job kind (`python -m jobs <kind> ...`),
# as the job definitions in job_definitions/ run it on AWS Batch.
# BASE_IMAGE is only for a builder that cannot pull python:3.11-slim-bookworm (an air-gapped
# machine with a local stand-in, see docs/worker-image.md); releases use the default.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# RDS_BUNDLE=optional lets a builder without internet access make the image without AWS's RDS CA
# bundle: its database connections are then encrypted but the server is not verified.
ARG RDS_BUNDLE=required

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_THREAD_LIMIT=1

# System packages come from the same list .ci/setup installs, so CI proves this step.
COPY .ci/system-packages.txt /tmp/system-packages.txt
RUN apt-get update \
    && sed -e 's/#.*//' /tmp/system-packages.txt | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/system-packages.txt \
    && for l in eng osd deu fra spa ita por nld chi_sim chi_tra jpn kor; do \
           tesseract --list-langs | grep -qx "$l" || exit 1; done

WORKDIR /opt/medintake
COPY setup.cfg pyproject.toml README.md cli.py ./
COPY pipeline ./pipeline
COPY jobs ./jobs
COPY compute ./compute
COPY job_definitions ./job_definitions
RUN pip install --no-cache-dir "./[aws]" \
    && rm -rf build ./*.egg-info \
    && useradd --create-home --uid 10001 --user-group medintake \
    && python -m jobs.entities.icd10 /opt/medintake/cache \
    && { python -m compute.rds_bundle /opt/medintake/certs || [ "$RDS_BUNDLE" = optional ]; }

# Built indexes (ICD-10-CM) made once here, read by every job (a build per job costs ~3.5 s CPU).
ENV MEDINTAKE_CACHE_DIR=/opt/medintake/cache

USER 10001:10001
WORKDIR /home/medintake
CMD ["python", "-m", "jobs", "--help"]
