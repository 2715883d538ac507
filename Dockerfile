# syntax=docker/dockerfile:1
# Minimal image for now: the model code and the release model, PyTorch from the CPU wheels.
# The delivery issue turns this into the multi-stage serving image.
FROM python:3.11-slim-bookworm
WORKDIR /srv
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY ml/ ml/
COPY models/ models/
RUN useradd --create-home --uid 10001 app
USER app
CMD ["python", "-m", "ml.evaluate", "--help"]
