#!/usr/bin/env bash
# Creates the virtualenv and installs the project with its CPU and test extras.
# pip (not uv/poetry) on purpose: it takes the pinned torch build from this disk.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --progress-bar off -e ".[cpu,test]"
"$venv/bin/python" -m pip check
# The tests scrape the service with a real Prometheus server (Debian's package).
if ! command -v prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "warning: no prometheus binary; the metrics test needs Debian's 'prometheus' package" >&2
    fi
fi
