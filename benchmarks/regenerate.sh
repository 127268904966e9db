#!/usr/bin/env bash
# Regenerates every figure section of BENCHMARKS.md: the load generator on
# the memory store and on PostgreSQL (DATABASE_URL, else the server on
# 127.0.0.1:5432), and the criterion micro-benchmarks. About 20 minutes on
# 2 cores. Usage: benchmarks/regenerate.sh [extra loadgen flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out=BENCHMARKS.md

# Criterion first, on a quiet machine: after the PostgreSQL runs the server
# keeps checkpointing and vacuuming for minutes, which took 20-25% off the
# micro-benchmarks on 2 cores (transfer 3.83 µs right after them, 3.02 µs
# on a quiet machine, same code path).
bench_log=$(mktemp)
cargo bench -p eventcore-benchmarks --bench memory -- --noplot | tee "$bench_log"
{
    echo "<!-- criterion:begin -->"
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores (nproc), one thread."
    echo
    echo 'Command: `cargo bench -p eventcore-benchmarks --bench memory`'
    echo
    echo "| benchmark | time per iteration (low / estimate / high) |"
    echo "|---|---|"
    # criterion prints "<name>\n  time: [low est high]" or "<name>  time: [...]"
    awk '
        /time:/ {
            line = $0
            sub(/^[ \t]+/, "", line)
            if (line ~ /^time:/) { name = prev } else { name = line; sub(/[ \t]+time:.*/, "", name) }
            sub(/.*time:[ \t]+\[/, "", line); sub(/\].*/, "", line)
            gsub(/^[ \t]+|[ \t]+$/, "", name)
            printf "| %s | %s |\n", name, line
        }
        { if ($0 !~ /^[ \t]*$/) prev = $0 }
    ' "$bench_log"
    echo "<!-- criterion:end -->"
} > "$bench_log.section"
# Replace the criterion section (or append it when missing).
awk -v section="$bench_log.section" '
    /<!-- criterion:begin -->/ { while ((getline l < section) > 0) print l; skip = 1; found = 1; next }
    /<!-- criterion:end -->/ { skip = 0; next }
    !skip { print }
    END { if (!found) { while ((getline l < section) > 0) print l } }
' "$out" > "$out.new"
mv "$out.new" "$out"
rm -f "$bench_log" "$bench_log.section"

cargo build --release -p eventcore-benchmarks --bin loadgen
target/release/loadgen --store memory --write "$out" "$@"
target/release/loadgen --store postgres --write "$out" "$@"
echo "updated $out"
