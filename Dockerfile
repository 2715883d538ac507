# syntax=docker/dockerfile:1
# Serving image, for now single-stage: the service, the model code it imports and the release
# model, PyTorch from the CPU wheels. The delivery issue makes it multi-stage and slim.
FROM python:3.11-slim-bookworm
WORKDIR /srv
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY gunicorn.conf.py ./
COPY app/ app/
COPY ml/ ml/
COPY models/ models/
RUN useradd --create-home --uid 10001 app
USER app
ENV HOST=0.0.0.0 PORT=8000 MODEL_DIR=/srv/models
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
# The exact command the end-to-end service tests start (app/local_server.py).
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
