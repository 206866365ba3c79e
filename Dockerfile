# volsafe as a container: `docker build -t volsafe .` where a registry is reachable.
# scripts/build-image builds the same image offline (debootstrap + docker import); keep the two alike.
#
#   docker run -d --name volsafe --restart unless-stopped \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /run/volsafe:/run/volsafe \
#     -v /etc/volsafe:/etc/volsafe:ro \
#     volsafe
#
# /run/volsafe, mounted at the same path, lets helpers reach volsafe's FIFOs (the fast data path)
# and shares volume locks with a volsafe on the host. The config is /etc/volsafe/volsafe.toml
# (or $VOLSAFE_CONFIG).
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates tzdata busybox-static restic zstd \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \
    && mkdir -p /etc/volsafe /run/volsafe

COPY pyproject.toml README.md /src/
COPY backup /src/backup
COPY storage_backends /src/storage_backends
RUN python3 -m venv /opt/volsafe \
    && /opt/volsafe/bin/pip install --no-cache-dir --disable-pip-version-check /src \
    && /opt/volsafe/bin/pip uninstall --yes --quiet pip \
    && rm -rf /src \
    && ln -s /opt/volsafe/bin/volsafe /usr/local/bin/volsafe

ENV PATH=/opt/volsafe/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/run/volsafe
LABEL org.opencontainers.image.title=volsafe \
      org.opencontainers.image.description="Back up, restore and migrate Docker volumes" \
      org.opencontainers.image.licenses=MIT
WORKDIR /
ENTRYPOINT ["volsafe"]
CMD ["run"]
