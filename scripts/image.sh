#!/usr/bin/env bash
# Builds the operator's OCI image from the Dockerfile as it is, on a machine with neither a Docker engine nor a
# registry, and unpacks it for a runtime (cached: with nothing changed, a second run prints the folder and exits).
#
#   1. buildah and debootstrap from Debian's packages, when missing.
#   2. The base: Debian's own Python of the Dockerfile's minor version (debootstrap, minbase), imported into
#      buildah's storage as localhost/djangoops-python:<minor>-<suite>-<base key>; built once per machine.
#   3. `buildah bud` of the Dockerfile with --build-arg PYTHON_IMAGE=<that base>, tagged
#      localhost/django-migration-operator:<key> and :oci.
#   4. The export: ${XDG_CACHE_HOME:-~/.cache}/django-migration-operator/images/django-migration-operator/<key>/
#      with rootfs/ (the flattened root filesystem) and config.json (the image config's `config` object), and
#      `current`, a symlink to it.
#
# The key is a sha256 over what goes into the image: the Dockerfile, .dockerignore, uv.lock, pyproject.toml,
# README.md, the files of operator/ that the build context takes (all but __pycache__ and *.pyc, as
# .dockerignore says) and this script. `bash scripts/image.sh --key` prints it and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'image: %s\n' "$*" >&2; }

NAME=django-migration-operator
IMAGE=localhost/$NAME
IMAGES_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/django-migration-operator/images
OUT=$IMAGES_DIR/$NAME

image_key() {
  {
    sha256sum Dockerfile .dockerignore uv.lock pyproject.toml README.md scripts/image.sh
    # The build context's files, not git's: an untracked module is in the image too.
    find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

point_current() {  # atomically: a new symlink renamed over the old one
  ln -sfn "$1" "$OUT/current.tmp"
  mv -T "$OUT/current.tmp" "$OUT/current"
}

key=$(image_key)
if [ "${1:-}" = --key ]; then
  echo "$key"
  exit 0
fi
dest=$OUT/$key
cached() {
  [ -f "$dest/config.json" ] && [ -d "$dest/rootfs" ] || return 1
  [ "$(readlink "$OUT/current" 2>/dev/null)" = "$key" ] || point_current "$key"
  say "cached: $dest"
  echo "$dest"
}
cached && exit 0

mkdir -p "$OUT"
# One build at a time: a second `make image` waits for the first, then finds its result.
exec 9>"$IMAGES_DIR/.lock"
flock 9
cached && exit 0

now() { printf '%s' "$EPOCHREALTIME"; }
took() { LC_ALL=C awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }'; }
start=$(now)

# 1. Tools. buildah alone, without its Recommends: its storage is the overlay driver, native (root on ext4 here,
# "Native Overlay Diff: true" in `buildah info`), so fuse-overlayfs is not needed (STORAGE_DRIVER=vfs is the
# fallback where overlay cannot mount); the RUN steps use chroot isolation, so no OCI runtime (runc, crun) either.
need_packages=()
command -v buildah >/dev/null || need_packages+=(buildah)
command -v debootstrap >/dev/null || need_packages+=(debootstrap)
command -v python3 >/dev/null || need_packages+=(python3)  # reads the image config (JSON) for config.json
if [ ${#need_packages[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_log=$(mktemp)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_packages[@]}"; } >"$apt_log" 2>&1
  then
    cat "$apt_log" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

# Working state of this run, removed on any exit: the debootstrap root, logs, buildah's working containers.
work=$(mktemp -d "$IMAGES_DIR/.work.XXXXXX")
containers=()
cleanup() {
  local c
  for c in "${containers[@]}"; do
    buildah umount "$c" >/dev/null 2>&1 || true
    buildah rm "$c" >/dev/null 2>&1 || true
  done
  # debootstrap mounts /proc and /sys inside its root while it runs: never remove through a mount.
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$work" "$OUT/$key.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP  # so that the EXIT trap runs on these too
# Containers of a run that was killed (the lock says no other run is going on): named djangoops-image-*.
for c in $(buildah containers --format '{{.ContainerName}}' | grep '^djangoops-image-' || true); do
  buildah rm "$c" >/dev/null
done

# 2. The base. The Dockerfile's default base tells the Python minor version and the Debian suite
# (python:3.11.14-slim-bookworm: 3.11, bookworm); Debian's python3.11 stands in for the official image's.
read -r PY SUITE < <(sed -n 's/^ARG PYTHON_IMAGE=python:\([0-9]*\.[0-9]*\)\.[0-9]*-slim-\([a-z]*\)$/\1 \2/p' Dockerfile) \
  || true
if [ -z "${PY:-}" ] || [ -z "${SUITE:-}" ]; then
  say "the Dockerfile's ARG PYTHON_IMAGE is not python:X.Y.Z-slim-SUITE: cannot tell which Python to install"
  exit 1
fi
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The Dockerfile calls `python` and `pip` (python-is-python3, python3-pip) and groupadd/useradd (passwd);
# ca-certificates for pip's and uv's HTTPS.
BASE_PACKAGES=("python$PY" python3-pip python-is-python3 passwd ca-certificates)
# uv's own configuration in the base: the system's trust store (see the build below) instead of the roots
# compiled into uv. The runtime stage has no uv: the file is inert there.
UV_CONFIG='system-certs = true'

build_base() {  # $1: an empty folder, made into the base's root filesystem
  local root=$1
  if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
      "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    say "debootstrap failed"
    exit 1
  fi
  local version
  version=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$version" != "$PY" ]; then
    say "$SUITE's python3 is $version, the Dockerfile's is $PY: no such base from $SUITE"
    exit 1
  fi
  chroot "$root" sh -c 'command -v python && command -v pip && command -v groupadd && command -v useradd' >/dev/null
  # PEP 668: Debian marks its Python as externally managed, so the Dockerfile's `pip install` would refuse.
  # The official python image has no such marker either (its Python is built into /usr/local).
  rm -f "$root/usr/lib/python$PY/EXTERNALLY-MANAGED"
  mkdir -p "$root/etc/uv"
  printf '%s\n' "$UV_CONFIG" >"$root/etc/uv/uv.toml"
  # Small, as Debian's slim images are: no apt lists or downloaded packages, no docs but the copyright files,
  # no man pages, no translations. The host's name and name server stay out (buildah provides both in RUN).
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -f "$root"/var/log/*.log "$root/var/log/apt/"*
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
}

base_key=$(printf '%s\n' "$PY" "$SUITE" "${BASE_PACKAGES[*]}" "$UV_CONFIG" "$(declare -f build_base)" \
  | sha256sum | cut -c1-12)
BASE=localhost/djangoops-python:$PY-$SUITE-$base_key

t=$(now)
if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  say "base: $BASE (built before)"
else
  say "base: debootstrap $SUITE with ${BASE_PACKAGES[*]}"
  build_base "$work/base"
  c=$(buildah from --name djangoops-image-base scratch)
  containers+=("$c")
  mnt=$(buildah mount "$c")
  cp -a "$work/base/." "${mnt:?}/"
  buildah umount "$c" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 "$c"
  buildah commit -q "$c" "$BASE" >/dev/null
  buildah rm "$c" >/dev/null
  containers=()
  rm -rf --one-file-system "$work/base"
  # Bases of earlier inputs (an image still built on one keeps its layers until it goes too).
  for old in $(buildah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/djangoops-python:' || true); do
    [ "$old" = "$BASE" ] || buildah rmi "$old" >/dev/null 2>&1 || true
  done
fi
base_took=$(took "$t")

# 3. The build. RUN steps: chroot isolation (no OCI runtime installed; buildah still gives them their own mount,
# IPC and UTS namespaces) and the host's network (pip and uv fetch from PyPI). --layers keeps each step's result,
# so a change to operator/ rebuilds from `COPY operator/` on; uv's cache mount (RUN --mount=type=cache) lives in
# buildah's cache folder between builds. The host's CA bundle is bind-mounted over the base's for the RUN steps
# only (not in any layer): where HTTPS goes through a proxy that the host trusts, so do pip and uv.
t=$(now)
say "build: buildah bud --build-arg PYTHON_IMAGE=$BASE"
mounts=()
[ -f /etc/ssl/certs/ca-certificates.crt ] \
  && mounts+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
if ! buildah bud --layers --force-rm --pull-never --isolation chroot --network host \
    --build-arg PYTHON_IMAGE="$BASE" "${mounts[@]}" \
    --tag "$IMAGE:$key" --tag "$IMAGE:oci" --file Dockerfile . >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  say "buildah bud failed"
  exit 1
fi
for old in $(buildah images --format '{{.Name}}:{{.Tag}}' | grep "^$IMAGE:" || true); do
  [ "$old" = "$IMAGE:$key" ] || [ "$old" = "$IMAGE:oci" ] || buildah rmi "$old" >/dev/null 2>&1 || true
done
build_took=$(took "$t")

# 4. The export, into <key>.tmp and renamed: a runtime never sees half a root filesystem.
t=$(now)
rm -rf --one-file-system "$OUT/$key.tmp" "$dest"
mkdir -p "$OUT/$key.tmp/rootfs"
c=$(buildah from --name djangoops-image-export --pull-never "$IMAGE:$key")
containers+=("$c")
mnt=$(buildah mount "$c")
cp -a "${mnt:?}/." "$OUT/$key.tmp/rootfs/"
buildah umount "$c" >/dev/null
buildah rm "$c" >/dev/null
containers=()
# buildah 1.28's templates have no json function: the whole inspection, and its OCIv1.config.
buildah inspect --type image "$IMAGE:$key" \
  | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"], indent=2))' \
  >"$OUT/$key.tmp/config.json"
mv -T "$OUT/$key.tmp" "$dest"
point_current "$key"
for old in "$OUT"/*; do
  [ "$old" = "$dest" ] || [ "$old" = "$OUT/current" ] || rm -rf --one-file-system "$old"
done
export_took=$(took "$t")

say "base $base_took, build $build_took, export $export_took, total $(took "$start")"
say "rootfs $(du -sh "$dest/rootfs" | cut -f1), image $(buildah images --format '{{.Size}}' "$IMAGE:$key" | head -n 1)"
say "built: $dest ($IMAGE:$key, $IMAGE:oci)"
echo "$dest"
