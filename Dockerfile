# journeyrec service image: builds the wheel (LightFM compiles a C extension, so the builder has gcc),
# then runs as a non-root user from a slim runtime image.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY service ./service
COPY journeyrec ./journeyrec
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 journeyrec
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER journeyrec
WORKDIR /home/journeyrec
# models are mounted or trained into /models; API keys come from the environment (JOURNEYREC_API_KEYS)
ENV JOURNEYREC_MODELS=/models \
    JOURNEYREC_HOST=0.0.0.0 \
    JOURNEYREC_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)" || exit 1
ENTRYPOINT ["journeyrec"]
CMD ["serve"]
