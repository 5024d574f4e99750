#!/usr/bin/env bash
# Builds the containers target's local images from Debian packages, with no image registry:
#   1. base:     debootstrap (minbase, bookworm) -> `docker import`
#   2. postgres: the base + postgresql-15, postgresql-15-wal2json, iproute2 (tc netem), nftables (packet drops
#                where the kernel has no netem) and socat (the netem link's relays), installed by apt-get
#                in a container on host networking, then `docker commit`, with an entrypoint that makes a
#                throwaway cluster on 127.0.0.1 and runs PostgreSQL in the foreground.
# Cached: an image whose tag exists with this recipe's hash (label org.zora.recipe) is not built again;
# --force rebuilds. The apt mirror is the host's own (from its apt sources), so the script names none.
# Usage: build-images.sh [--force] [BASE_TAG POSTGRES_TAG]   (defaults below; harness/containers/images.toml
# holds the same names). Exit: 0 built or cached; 5 no Docker daemon answers; 6 an image cannot be built.
set -euo pipefail
FORCE=0
if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
BASE_TAG="${1:-zora/debian-base:bookworm}"
PG_TAG="${2:-zora/postgres-wal2json:15}"
SUITE=bookworm
HERE="$(cd "$(dirname "$0")" && pwd)"
# What each image is built from: bump BASE_RECIPE when the base step changes; the Postgres layer's recipe
# follows its own step and the entrypoint file, so editing either rebuilds only that layer.
BASE_RECIPE="debootstrap-minbase-$SUITE-1"
PG_RECIPE="$(cat "$HERE/pg-entrypoint.sh" <(sed -n '/^# -- postgres layer/,$p' "$0") | sha256sum | cut -c1-16)"
LABEL=org.zora.recipe
die() { echo "build-images: $2" >&2; exit "$1"; }

docker info >/dev/null 2>&1 || die 5 "no Docker daemon answers (start one: bash .ci/dockerd)"

cached() {  # the image $1 exists and was built by recipe $2
  [ "$FORCE" = 0 ] && [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$2" ]
}

mirror() {  # the host's Debian mirror (deb822 or one-line sources)
  local m
  m="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
  [ -n "$m" ] || m="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
  [ -n "$m" ] || die 6 "no Debian mirror in /etc/apt/sources.list*: cannot debootstrap the base image"
  echo "$m"
}

t0=$(date +%s)
if cached "$BASE_TAG" "$BASE_RECIPE"; then
  echo "build-images: $BASE_TAG cached"
else
  command -v debootstrap >/dev/null || die 6 "debootstrap is not installed (apt-get install debootstrap): cannot build $BASE_TAG"
  root="$(mktemp -d /tmp/zora-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "build-images: debootstrap $SUITE into $root"
  debootstrap --variant=minbase "$SUITE" "$root" "$(mirror)" >"$root.log" 2>&1 \
    || { tail -n 5 "$root.log" >&2; rm -f "$root.log"; die 6 "debootstrap failed: cannot build $BASE_TAG"; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import --change "LABEL $LABEL=$BASE_RECIPE" --change 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null \
    || die 6 "docker import failed: cannot build $BASE_TAG"
  rm -rf "$root"; trap - EXIT
  echo "build-images: $BASE_TAG imported ($(( $(date +%s) - t0 )) s)"
fi

# -- postgres layer
t1=$(date +%s)
if cached "$PG_TAG" "$PG_RECIPE"; then
  echo "build-images: $PG_TAG cached"
else
  name="zora-build-$$"
  cid=""
  # a build container left by a build that was killed (its pid, in its name, is gone): removed first
  for left in $(docker ps -a --format '{{.Names}}' | grep -E '^zora-build-[0-9]+$' || true); do
    [ -d "/proc/${left#zora-build-}" ] || { docker rm -f "$left" >/dev/null 2>&1 && echo "build-images: removed $left (its build is gone)"; }
  done
  cleanup() { [ -n "$cid" ] && docker rm -f "$cid" >/dev/null 2>&1 || true; }
  trap cleanup EXIT
  # the host's apt sources, so the container uses the same mirror
  cid="$(docker create --name "$name" --network host "$BASE_TAG" sleep infinity)"
  docker start "$cid" >/dev/null
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -f "$f" ] && docker cp "$f" "$cid:$f"
  done
  docker cp "$HERE/pg-entrypoint.sh" "$cid:/usr/local/bin/zora-pg-entrypoint"
  echo "build-images: apt-get install postgresql-15 postgresql-15-wal2json iproute2 socat nftables in $name"
  docker exec -e DEBIAN_FRONTEND=noninteractive "$cid" sh -c '
    apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-15-wal2json iproute2 socat nftables >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && chmod 755 /usr/local/bin/zora-pg-entrypoint \
    && pg_dropcluster --stop 15 main' >/tmp/zora-build-$$.log 2>&1 \
    || { tail -n 5 /tmp/zora-build-$$.log >&2; rm -f /tmp/zora-build-$$.log; die 6 "apt-get in the build container failed: cannot build $PG_TAG"; }
  rm -f /tmp/zora-build-$$.log
  docker stop -t 1 "$cid" >/dev/null
  docker commit --change "LABEL $LABEL=$PG_RECIPE" --change 'ENTRYPOINT ["/usr/local/bin/zora-pg-entrypoint"]' \
    --change 'CMD []' --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$cid" "$PG_TAG" >/dev/null || die 6 "docker commit failed: cannot build $PG_TAG"
  echo "build-images: $PG_TAG committed ($(( $(date +%s) - t1 )) s)"
fi
# the images these replaced (untagged now, ours by their label) would pile up at half a gigabyte each
docker image prune -f --filter "label=$LABEL" >/dev/null 2>&1 || true
echo "build-images: done in $(( $(date +%s) - t0 )) s"
