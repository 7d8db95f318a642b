# Production image: web (gunicorn), worker and beat all run from it; see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=controlplane.settings \
    CONTROLPLANE_DATA_DIR=/var/lib/controlplane

# git and ssh: the worker fetches the exact pushed commit to build it (token or deploy key).
# bubblewrap: the sandbox every build command runs in (with util-linux's prlimit, already there).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates bubblewrap \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --create-home --home-dir /home/controlplane --uid 10001 controlplane \
    && install -d -o controlplane -g controlplane /var/lib/controlplane

WORKDIR /app

# The pinned dependencies first, read from pyproject.toml, so a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself. Editable, so every process imports it from /app, next to its templates
# and static files, whatever its working directory.
COPY . .
RUN pip install --no-deps -e .

# Collected at build time with the production storage (hashed, compressed names and a manifest).
# The keys only satisfy the settings' production checks; nothing is signed or encrypted here.
RUN CONTROLPLANE_ENV=production \
    CONTROLPLANE_DATA_DIR=/tmp/build-data \
    SECRET_KEY=collectstatic-only-not-a-secret \
    ENCRYPTION_KEYS=Y29sbGVjdHN0YXRpYy1vbmx5LW5vdC1hLXNlY3JldCE= \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-data

USER controlplane
EXPOSE 8000

# Threaded workers: a CLI following a deploy holds a request open while it long-polls the log
# (GET .../events/?wait=), which would take a whole process from a sync worker.
CMD ["gunicorn", "controlplane.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--worker-class", "gthread", "--threads", "8", "--access-logfile", "-"]
