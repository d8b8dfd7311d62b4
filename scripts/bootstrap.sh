#!/usr/bin/env bash
# Installs what fluidcache needs on a fresh Debian machine: FUSE 3 and its headers, fio, nginx,
# rclone, s3fs, chromium and Node.js for the tests and benchmarks (apt), then a .venv with the
# project and its dev tools. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the status page's browser test (Playwright drives it; no browser download).
# iproute2: ip netns, veth, bridges and tc for the multi-host tests (tests/e2e/test_netns.py);
# nftables: their packet loss (a random drop rule), as kernels without sch_netem have no netem loss;
# iptables and libnetfilter-queue-dev: their delay (an NFQUEUE rule feeding tests/netem.py, through
# the netfilterqueue binding, which builds against libnetfilter_queue).
# vmtouch: make bench keeps the sources' files in memory through its cache drops (bench/sources.py).
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config fio nginx-light attr rclone s3fs chromium iproute2
    nftables iptables libnetfilter-queue-dev vmtouch)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# The benchmarks' S3 server (s3rver) runs on Node.js; any node and npm on PATH will do.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "bootstrap: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
