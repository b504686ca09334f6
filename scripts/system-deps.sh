#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the project needs, only when something is missing.
# Run by `make run` / `make test`; needs root (or sudo) only the first time on a fresh machine.
set -euo pipefail
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# opencv-contrib-python (pulled by mediapipe) links libGL and glib at import time.
ldconfig -p | grep -q 'libGL.so.1' || need+=(libgl1)
ldconfig -p | grep -q 'libglib-2.0.so.0' || need+=(libglib2.0-0)
command -v make >/dev/null || need+=(make)
if [ "${1:-}" = "--test" ]; then
  command -v systemd-analyze >/dev/null || need+=(systemd)
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  # The sink's PostgreSQL path and its dashboard test (Chromium, driven by Playwright).
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  command -v chromium >/dev/null || need+=(chromium)
  command -v openssl >/dev/null || need+=(openssl)  # the mutual-TLS broker test makes its own CA
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
