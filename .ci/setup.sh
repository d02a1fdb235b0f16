#!/usr/bin/env bash
# Idempotent machine set-up for building and testing forwarder (recipe: ../shared/TOOLCHAIN.md).
# Safe to run again: every step checks before it installs.
set -euo pipefail

# systemd: systemd-analyze, with which tests/tests/packaging.rs verifies the unit file, and
# the systemd that tests/tests/systemd_unit.rs boots in namespaces (with util-linux and dpkg,
# both essential on Debian).
# prometheus: its promtool checks packaging/prometheus/alerts.yml and a live scrape (the
# package's server is not started: there is no running systemd to start it).
# util-linux: setpriv, with which tests/tests/capabilities.rs starts the daemon with the unit's
# capabilities only.
# linux-perf: `cargo xtask bench` profiles the path bed with perf record / report.
# stunnel4: the TLS listener in front of tansu for tests/tests/kafka_security.rs (its service is
# not started: no configuration is installed, and the tests run their own).
# cloud-init: `cloud-init schema` validates the cloud-config of `kafka discover --nat-vms vmss`
# (forwarder/src/kafka/azure/tests.rs); it also brings PyYAML, with which that test reads the
# files back. Only its schema check is used: /etc/cloud/cloud-init.disabled below keeps it from
# running at boot (here, or in the systemd that tests/tests/systemd_unit.rs boots).
need_pkgs=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev bpftool ethtool iproute2
           iptables nftables iperf3 systemd prometheus util-linux stunnel4 linux-perf cloud-init)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -e /etc/cloud/cloud-init.disabled ] || { mkdir -p /etc/cloud; touch /etc/cloud/cloud-init.disabled; }

rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' \
  || rustup component add rust-src --toolchain nightly

if ! command -v bpf-linker >/dev/null; then
  echo "setup: building bpf-linker (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker \
    --no-default-features --features llvm-22
fi
# cargo-deb for `cargo xtask deb` and the package check of `cargo xtask test`. Pinned: the
# test packages the debug binary (--profile dev), which newer releases may refuse.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  echo "setup: installing cargo-deb $CARGO_DEB_VERSION (about a minute)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
# cargo-deny: licenses, bans and sources of every dependency, checked by `cargo xtask test`.
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "setup: installing cargo-deny $CARGO_DENY_VERSION (a few minutes)"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
fi
# cargo-fuzz for the fuzz step of `cargo xtask stress` (fuzz/: libFuzzer, nightly).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "setup: installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
# The Kafka lab (cargo xtask demo, tests/tests/lab.rs, kafka_cli.rs, kafka_security.rs): tansu, a
# Kafka-compatible broker from crates.io, with its SQLite storage (the default build has no
# storage engine and refuses to start). About 11 minutes on two cores, once.
TANSU_VERSION=0.6.0
if ! /opt/tansu/bin/tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "setup: building tansu $TANSU_VERSION (about 11 minutes on two cores)"
  cargo install tansu --version "$TANSU_VERSION" --features libsql --locked --root /opt/tansu
fi
# kafka-python: the lab's independent Kafka client.
KAFKA_PYTHON_VERSION=3.0.12
if ! command -v python3 >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
if ! python3 -c "import kafka, sys; sys.exit(kafka.__version__ != '$KAFKA_PYTHON_VERSION')" 2>/dev/null; then
  echo "setup: installing kafka-python $KAFKA_PYTHON_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "kafka-python==$KAFKA_PYTHON_VERSION" \
    || python3 -m pip install --quiet --break-system-packages "kafka-python==$KAFKA_PYTHON_VERSION"
fi
# The Azure CLI, from PyPI in a venv of its own: tests/tests/kafka_cli.rs runs every `az`
# command `forwarder kafka discover` prints through its argument parser (no login, no
# network: a well-formed command stops at "Please run 'az login'"). About 8 minutes, once.
AZURE_CLI_VERSION=2.91.0
if ! /opt/azure-cli/bin/python -c "
import importlib.metadata as m, sys
sys.exit(m.version('azure-cli') != '$AZURE_CLI_VERSION')" 2>/dev/null; then
  echo "setup: installing azure-cli $AZURE_CLI_VERSION into /opt/azure-cli (about 8 minutes)"
  python3 -m venv /opt/azure-cli
  /opt/azure-cli/bin/pip install --quiet --disable-pip-version-check "azure-cli==$AZURE_CLI_VERSION"
fi
echo "setup: done"
