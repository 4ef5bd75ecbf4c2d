#!/usr/bin/env bash
# Create .venv and install turnwise with the pinned versions of constraints.txt.
#
#   bash scripts/setup.sh          the main job: turnwise and what it runs on
#   bash scripts/setup.sh --test   also what the tests and benchmarks need: pytest, ruff,
#                                  moto, RLlib, Stable-Baselines3 and sb3-contrib, Debian's
#                                  prometheus, and Sample Factory 2's own venv .venv-sf
#
# Idempotent: a second run with unchanged pins installs nothing (a --test install also
# serves the main job).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
mode=main
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  *) echo "usage: bash scripts/setup.sh [--test]" >&2; exit 2 ;;
esac

# Prometheus and promtool for the tests (a real server scrapes a run, promtool tests the
# alert rules). apt waits up to APT_LOCK_WAIT_S for another apt's lock; if it cannot
# install, the set-up goes on without it and says so (those tests then fail under CI=1
# and are skipped otherwise).
install_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup: prometheus/promtool not found; the monitoring tests need them (apt-get install prometheus)" >&2
    return 0
  fi
  local deadline=$((SECONDS + ${APT_LOCK_WAIT_S:-600}))
  echo "setup: installing the Debian package prometheus (for the tests)"
  while true; do  # apt-get fails at once on a held lock: retry until the deadline
    if apt-get -o DPkg::Lock::Timeout=60 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 install -y -qq prometheus >/dev/null; then
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || break
    echo "setup: apt is busy (or failed); retrying in 10 s" >&2
    sleep 10
  done
  echo "setup: could not install prometheus (apt busy or offline); going on without it: the monitoring tests need it" >&2
}

if [ "$mode" = test ]; then
  install_prometheus
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.turnwise-install
pins=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
installed=$(cat "$stamp" 2>/dev/null || true)
if [ "$installed" != "$pins test" ] && [ "$installed" != "$pins $mode" ]; then
  extras=""
  [ "$mode" = test ] && extras="[dev]"
  echo "setup: installing turnwise${extras} and its pinned dependencies into .venv (a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}"
  echo "$pins $mode" >"$stamp"
fi
if [ "$mode" = test ]; then
  # Sample Factory 2's own venv for the benchmarks (.venv-sf: it needs gymnasium<1 and
  # numpy<2); a no-op once made with the same pins. Without it, its benchmark rows and
  # test say why.
  .venv/bin/python -m benchmarks.sample_factory_env >/dev/null ||
    echo "setup: could not make .venv-sf (above); going on without Sample Factory" >&2
fi
