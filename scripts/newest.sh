#!/usr/bin/env bash
# The newest end: Python 3.13 in a Debian 13 (trixie) root file system with the newest release
# of every dependency, built on this machine and used to run the test suite (CI's second
# environment; the first is scripts/setup.sh with constraints/oldest.txt on the machine's Python).
#
#   bash scripts/newest.sh              build or refresh the newest end, then run the test suite
#   bash scripts/newest.sh --setup      build or refresh it only
#   bash scripts/newest.sh --root       build the Debian 13 root only (no pip; touches .newest/ only)
#   bash scripts/newest.sh CMD [ARG..]  run CMD in this checkout inside the root, with its venv
#                                       active (builds the root and the venv first if missing)
#
# Needs root (debootstrap, mount, chroot) and Debian's package mirror; Debian/Ubuntu hosts.
# Idempotent: the root (.newest/trixie; debootstrap took 46 s on a 2-core CI machine, up to about
# 6 minutes with a slow mirror) and its venv (/opt/venv inside it, about 1.5 minutes of pip) are
# reused; --setup and the test run upgrade every dependency to its newest release (pip
# --upgrade-strategy eager) and write the versions to .newest/versions.txt.
# Each command runs in a private mount namespace (unshare -m): /proc, /dev, /sys, this checkout
# (at the same path) and the host's /usr/share/datasets (Fashion-MNIST, read-only) are mounted
# inside the root for that process only, so nothing stays mounted when it ends, however it ends,
# and two commands can run side by side.
#
# Left out there: the test extras that only compare against other frameworks (torch,
# torchvision: test_pretrained's comparisons with torchvision; nvidia-dali: test_dali_decode),
# several GB; their tests skip themselves (pytest -ra lists them). Everything else of
# ltjax[test] is installed at its newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd -P)"
NEWEST="${LTJAX_NEWEST_DIR:-$REPO/.newest}"
ROOT="$NEWEST/trixie"
SUITE=trixie
VENV=/opt/venv  # inside the root

if [ "$(id -u)" != 0 ]; then
  echo "scripts/newest.sh needs root (debootstrap, mount, chroot): sudo bash $0 $*" >&2
  exit 1
fi

log() { echo "[newest $(date +%H:%M:%S)] $*"; }

# Debian's mirror: the host's own (its apt sources), else deb.debian.org.
debian_mirror() {
  if [ -n "${LTJAX_DEBIAN_MIRROR:-}" ]; then echo "$LTJAX_DEBIAN_MIRROR"; return; fi
  local url
  url="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ')" || true
  echo "${url:-http://deb.debian.org/debian}"
}

apt_install_host() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${_APT_UPDATED:-}" ]; then apt-get update -qq; _APT_UPDATED=1; fi
  apt-get install -y -qq "$@"
}

# 1. The Debian 13 root (debootstrap's minimal variant, python3 and venv).
make_root() {
  if [ -f "$ROOT/.ltjax-root-complete" ]; then return; fi
  command -v debootstrap >/dev/null 2>&1 || apt_install_host debootstrap
  [ -d /usr/share/datasets/fashion-mnist ] || apt_install_host dataset-fashion-mnist
  if [ -e "$ROOT" ]; then
    log "removing an incomplete root $ROOT"
    # Nothing is mounted there: every mount lives in a private namespace (see run_in_root).
    rm -rf --one-file-system "$ROOT"
  fi
  mkdir -p "$NEWEST"
  local mirror
  mirror="$(debian_mirror)"
  log "debootstrap $SUITE from $mirror into $ROOT (about 1 to 6 minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$ROOT" "$mirror" \
    >"$NEWEST/debootstrap.log" 2>&1 || {
    tail -n 30 "$NEWEST/debootstrap.log" >&2
    exit 1
  }
  touch "$ROOT/.ltjax-root-complete"
  log "root ready: $(chroot "$ROOT" python3 --version)"
}

# Runs "$@" inside the root, in a private mount namespace, from this checkout.
run_in_root() {
  # Name resolution and the host's CA bundle (pip verifies PyPI with it; the root has no
  # ca-certificates package) are refreshed at every call.
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  cp -L /etc/hosts "$ROOT/etc/hosts"
  mkdir -p "$ROOT/etc/ssl/certs"
  local bundle
  for bundle in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -n "$bundle" ] && [ -f "$bundle" ]; then
      cp -L "$bundle" "$ROOT/etc/ssl/certs/ca-certificates.crt"
      break
    fi
  done
  mkdir -p "$ROOT$REPO" "$ROOT/usr/share/datasets"
  # Variables handed through: CI's, JAX's and ltjax's own, pytest's.
  local -a pass=()
  local name
  for name in $(compgen -e); do
    case "$name" in
      CI | XLA_FLAGS | JAX_* | LTJAX_* | PYTEST_* | TF_CPP_MIN_LOG_LEVEL) pass+=("$name=${!name}") ;;
    esac
  done
  unshare --mount --propagation private -- /bin/bash -euc '
    root="$1" repo="$2"; shift 2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --rbind /sys "$root/sys"
    mount --bind "$repo" "$root$repo"
    if [ -d /usr/share/datasets ]; then
      mount --bind /usr/share/datasets "$root/usr/share/datasets"
      mount -o remount,bind,ro "$root/usr/share/datasets"
    fi
    exec chroot "$root" "$@"
  ' run_in_root "$ROOT" "$REPO" \
    /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    VIRTUAL_ENV="$VENV" SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 PYTHONUNBUFFERED=1 \
    LTJAX_TEST_CACHE="$NEWEST/jax_cache" "${pass[@]}" \
    /bin/bash -c 'cd "$1" && shift && exec "$@"' cd "$REPO" "$@"
}

# 2. The venv: ltjax (editable, this checkout) and the newest release of every dependency.
make_venv() {
  local upgrade="$1"
  if [ -x "$ROOT$VENV/bin/python" ] && [ -f "$NEWEST/versions.txt" ] && [ "$upgrade" = 0 ]; then
    return
  fi
  [ -x "$ROOT$VENV/bin/python" ] || run_in_root python3 -m venv "$VENV"
  log "installing ltjax and the newest release of every dependency"
  # ltjax[test] without the frameworks its tests only compare against (see the top).
  run_in_root python - <<'EOF' >"$NEWEST/requirements.txt"
import configparser
cfg = configparser.ConfigParser()
cfg.read('setup.cfg')
for line in cfg['options.extras_require']['test'].splitlines():
  line = line.split('#')[0].strip()
  name = line.split(';')[0].split('>')[0].split('=')[0].split('<')[0].strip()
  if line and name not in ('torch', 'torchvision', 'nvidia-dali-cuda120'):
    print(line)
EOF
  run_in_root python -m pip install -q --upgrade pip
  run_in_root python -m pip install -q --upgrade --upgrade-strategy eager \
    -e . -r "$NEWEST/requirements.txt"
  run_in_root python -m pip freeze --exclude-editable >"$NEWEST/versions.txt"
  {
    run_in_root python --version
    grep -iE '^(jax|jaxlib|flax|optax|orbax-checkpoint|numpy|grain|chex)==' "$NEWEST/versions.txt"
  } | tr '\n' ' '
  echo
}

make_root
case "${1:-}" in
  "")
    make_venv 1
    log "test suite (Python 3.13, newest releases)"
    run_in_root python -m pytest tests -q -n 2
    ;;
  --setup)
    make_venv 1
    ;;
  --root) ;;
  -*)
    sed -n '2,11p' "$0" >&2
    exit 2
    ;;
  *)
    make_venv 0
    run_in_root "$@"
    ;;
esac
