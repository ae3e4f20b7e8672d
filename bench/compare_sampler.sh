#!/usr/bin/env bash
# Exact-mixture sampler, side by side in one run: `scoregen bench sample` (Euler–Maruyama,
# 25-component grid mixture, 10,000 particles, 50 steps, f64) against the JAX peer
# bench/peers/jax_gmm_sampler.py, interleaved round by round; prints the median
# particle-steps/s of each and the ratio for d = 10 and d = 100.
#
#   bench/compare_sampler.sh            # quiet machine
#   LOAD=1 bench/compare_sampler.sh     # with one busy single-threaded process beside
#
# Environment: ROUNDS (default 3), DIMS (default "10 100"), SCOREGEN (binary, default
# target/release/scoregen, built if absent), VENV (default bench/.venv: created with
# `python3 -m venv` and `pip install jax numpy` if absent), LOCK (the machine-wide bench
# lock, default /tmp/scoregen-bench.lock).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DIMS=${DIMS:-"10 100"}
BIN=${SCOREGEN:-target/release/scoregen}
VENV=${VENV:-bench/.venv}
LOCK=${LOCK:-/tmp/scoregen-bench.lock}

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q jax numpy
fi
[ -x "$BIN" ] || cargo build --release -p scoregen-cli

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

exec 9>"$LOCK"
flock 9
busy=""
if [ "${LOAD:-0}" = 1 ]; then
    sh -c 'while :; do :; done' &
    busy=$!
    trap 'kill "$busy"' EXIT
    echo "load: one busy single-threaded process (pid $busy)"
fi
echo "case                          scoregen          jax    ratio (median of per-round ratios)"
for d in $DIMS; do
    ours=() theirs=() ratios=()
    for _ in $(seq "$ROUNDS"); do
        # Three runs of ours (median) next to the peer's three timed runs (median).
        o=$(for _ in 1 2 3; do "$BIN" bench sample --dims "$d" | awk -v d="$d" '$1 == d && $2 == "isotropic" {print $4}'; done | median)
        t=$("$VENV/bin/python" bench/peers/jax_gmm_sampler.py --dims "$d" --runs 3 | awk '{print $3}')
        ours+=("$o") theirs+=("$t") ratios+=("$(awk -v a="$o" -v b="$t" 'BEGIN {print a / b}')")
    done
    o=$(printf '%s\n' "${ours[@]}" | median)
    t=$(printf '%s\n' "${theirs[@]}" | median)
    r=$(printf '%s\n' "${ratios[@]}" | median)
    printf 'sample exact-mixture d=%-6s %12.0f %12.0f %8.2f  (rounds: %s)\n' "$d" "$o" "$t" "$r" "${ratios[*]}"
done
