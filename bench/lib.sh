# Sourced by every bench script: the one way a bench states a target and checks it.
#
#   source bench/lib.sh "$@"        parses the bench's own flags:
#       --check   exit non-zero (status 3) at the end when any target was missed
#   target NAME VALUE OP LIMIT      prints "target NAME: VALUE OP LIMIT: met" or "... NOT MET"
#                                   (OP is one of < <= > >=) and records a miss
#   targets_from FILE               runs `target` for every "target NAME VALUE OP LIMIT" line a
#                                   bench program printed (the Rust examples print them)
#   targets_done                    the summary; under --check, exits 3 if a target was missed
#
# A target is only stated here, next to the peer it is measured against in the same run; a
# number with nothing to compare to is reported without a target.

BENCH_CHECK=0
for bench_arg in "$@"; do
    case $bench_arg in
        --check) BENCH_CHECK=1 ;;
        *) echo "$(basename "$0"): unknown argument '$bench_arg' (the only flag is --check; settings are environment variables, see the script's header)" >&2
           exit 2 ;;
    esac
done
unset bench_arg
BENCH_MISSED=()

target() { # NAME VALUE OP LIMIT
    local name=$1 value=$2 op=$3 limit=$4
    if python3 - "$value" "$op" "$limit" <<'PY'
import operator, sys
value, op, limit = sys.argv[1:]
ops = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
if op not in ops:
    sys.exit(f"target: unknown comparison {op!r}")
try:
    sys.exit(0 if ops[op](float(value), float(limit)) else 1)
except ValueError:
    sys.exit(1)  # "n/a", empty: not measured, so not met
PY
    then
        echo "target $name: $value $op $limit: met"
    else
        echo "target $name: $value, wanted $op $limit: NOT MET"
        BENCH_MISSED+=("$name")
    fi
}

targets_from() { # FILE
    local _t name value op limit
    while read -r _t name value op limit; do
        target "$name" "$value" "$op" "$limit"
    done < <(grep -E '^target [^ ]+ [^ ]+ (<|<=|>|>=) [^ ]+$' "$1" || true)
}

targets_done() {
    echo
    if ((${#BENCH_MISSED[@]})); then
        echo "targets missed: ${BENCH_MISSED[*]}"
        if ((BENCH_CHECK)); then exit 3; fi
    else
        echo "all targets met"
    fi
}
