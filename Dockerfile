# Readmission risk: the Streamlit dashboard (default, port 8501) or the scoring API (`readmit api`).
#
#   docker build -t readmit .
#   docker run --rm -p 8501:8501 readmit                                        # dashboard
#   docker run --rm -p 8000:8000 -e READMIT_API_KEY="$(openssl rand -hex 32)" \
#       readmit readmit api --host 0.0.0.0 --port 8000 --workers 2              # API
#
# Also the Hugging Face Space image (scripts/build_space.py copies this file into the Space).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # one torch / BLAS thread per process: scale with processes (API --workers), not threads
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    READMIT_TORCH_THREADS=1 \
    SPARK_LOCAL_IP=127.0.0.1 \
    HF_HUB_OFFLINE=1 \
    PYTHONPATH=/home/readmit/app \
    HOME=/home/readmit

# Java 17 for the Spark ETL (`readmit etl`, the demo build).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

# Hugging Face Spaces run containers as uid 1000.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin readmit

WORKDIR /home/readmit/app

# torch first and on its own, from the PyTorch CPU index: a plain `pip install torch` pulls the
# multi-GB CUDA build. Then the pinned runtime requirements under the same constraints as the tested
# venv (constraints.txt pins every transitive package, torch included), so the image cannot drift.
COPY requirements.txt constraints.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -r requirements.txt -c constraints.txt

# Application code, the shipped model (models/champion) and the Streamlit settings.
COPY --chown=readmit:readmit app.py ./
COPY --chown=readmit:readmit .streamlit ./.streamlit
COPY --chown=readmit:readmit core ./core
COPY --chown=readmit:readmit etl ./etl
COPY --chown=readmit:readmit models ./models
COPY --chown=readmit:readmit serving ./serving
COPY --chown=readmit:readmit api ./api
COPY --chown=readmit:readmit cli ./cli
COPY --chown=readmit:readmit ui ./ui
COPY --chown=readmit:readmit pages ./pages

# `readmit` on PATH without installing the project into site-packages (paths stay under the app folder).
RUN printf '#!/bin/sh\nexec python -m cli.main "$@"\n' > /usr/local/bin/readmit \
 && chmod 755 /usr/local/bin/readmit \
 && mkdir -p /home/readmit/app/data && chown readmit:readmit /home/readmit/app/data

USER readmit

# Diagnosis titles (ICD-9-CM and ICD-10-CM) read once from their packages into the user's cache, so no
# request or first page view waits for it.
RUN python -c "from core import icd; icd.titles(9); icd.titles(10)"

EXPOSE 8501 8000

# Healthy when the dashboard (8501) or the API (8000) answers its health endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u\nfor url in ('http://127.0.0.1:8501/_stcore/health', 'http://127.0.0.1:8000/health'):\n    try:\n        u.urlopen(url, timeout=3).read(); sys.exit(0)\n    except Exception:\n        pass\nsys.exit(1)"]

CMD ["readmit", "app", "--port", "8501", "--address", "0.0.0.0"]
