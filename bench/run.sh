#!/usr/bin/env bash
# Runs the serving benchmark and writes its figures into docs/BENCHMARKS.md.
#
# Builds the release binary, installs the load generator (oha, from
# crates.io) when it is missing, then runs benches/serving against the
# daemon and a bare hyper baseline on this machine's loopback and temporary
# Unix sockets. Takes about ten minutes. Extra arguments go to the driver,
# e.g. bench/run.sh --duration 5s --idle 10s for a quick look.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

OHA_VERSION=1.16.0

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v oha >/dev/null 2>&1; then
    echo "installing oha ${OHA_VERSION} from crates.io" >&2
    cargo install --locked --version "${OHA_VERSION}" oha
fi

# 1024 client connections need more descriptors than the usual soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --locked --bin assumed
cargo bench --locked --bench serving -- --daemon target/release/assumed --oha "$(command -v oha)" "$@"
