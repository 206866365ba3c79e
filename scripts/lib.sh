# Shared set-up steps for scripts/test and scripts/install. Idempotent: each step checks first.

log() { printf 'volsafe-setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_system_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    # The helper image holds /bin/busybox without its libraries, so it must be the static build.
    { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
    command -v zstd >/dev/null 2>&1 || missing+=(zstd)
    # restic: targets written as restic:REPOSITORY (backup.restic) run Debian's restic.
    command -v restic >/dev/null 2>&1 || missing+=(restic)
    if [ "${1:-}" = "--with-test-tools" ]; then
        # The migrate tests reach a second dockerd through an sshd on 127.0.0.1.
        { [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null 2>&1; } || missing+=(openssh-server)
        # The reference age CLI: tests decrypt archives by hand with it.
        command -v age >/dev/null 2>&1 || missing+=(age)
        # docs/compose.yml is tested with Compose; Debian's docker.io has no compose plugin, so v1.
        { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; } || missing+=(docker-compose)
        # docs/volsafe.service is checked with systemd-analyze verify.
        command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} from Debian"
        # Wait for a dpkg lock held by another apt run instead of failing at once.
        as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
    fi
}

docker_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure_docker_daemon() {
    if docker_answers; then
        return
    fi
    log "starting dockerd in the background (log: /tmp/volsafe-dockerd.log)"
    # No bridge or iptables: helpers run with network "none", and sandboxes often lack netfilter.
    as_root sh -c 'nohup dockerd --iptables=false --bridge=none >/tmp/volsafe-dockerd.log 2>&1 &'
    for _ in $(seq 1 120); do
        docker_answers && return
        sleep 0.5
    done
    log "dockerd did not come up; last lines of its log:"
    tail -n 20 /tmp/volsafe-dockerd.log >&2 || true
    exit 1
}

ensure_helper_image() {
    # An image from before GNU tar went in (no io.volsafe.gnu-tar label) is rebuilt: with it,
    # local backups take the FIFO path, which is what the tests must exercise.
    local tag="$1"
    if [ -n "$(docker image inspect --format '{{ index .Config.Labels "io.volsafe.gnu-tar" }}' "$tag" 2>/dev/null)" ]; then
        return
    fi
    log "building helper image $tag from /bin/busybox and GNU tar with docker import"
    volsafe helper-image build --tag "$tag" >/dev/null
}
