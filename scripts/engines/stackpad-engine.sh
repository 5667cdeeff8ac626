# shellcheck shell=sh
# Shared by the entrypoints of the engine images (scripts/base-images, #14); busybox sh.

die() {
    echo "stackpad-engine: $*" >&2
    exit 1
}

# need NAME: the environment variable NAME is set and non-empty.
need() {
    eval "v=\${$1:-}"
    # shellcheck disable=SC2154 # set by the eval
    [ -n "$v" ] || die "$1 is not set (Stackpad sets it for managed services)"
}

# ident NAME: NAME's value is a plain SQL identifier (it is written into SQL unquoted).
ident() {
    need "$1"
    eval "v=\${$1}"
    case $v in
    *[!a-z0-9_]* | [0-9]*) die "$1 must be lowercase letters, digits and _ (got '$v')" ;;
    esac
}

# secret NAME: NAME's value is safe inside single quotes in SQL and in a config file.
secret() {
    need "$1"
    eval "v=\${$1}"
    case $v in
    *[!A-Za-z0-9_.~-]*) die "$1 must be letters, digits and _.~- only" ;;
    esac
}

# memory_limit: the container's memory limit in bytes: STACKPAD_MEMORY_LIMIT_BYTES, else the
# cgroup's memory.max, else the machine's memory.
memory_limit() {
    m=${STACKPAD_MEMORY_LIMIT_BYTES:-0}
    case $m in '' | *[!0-9]*) m=0 ;; esac
    if [ "$m" -eq 0 ] && [ -r /sys/fs/cgroup/memory.max ]; then
        m=$(cat /sys/fs/cgroup/memory.max)
        case $m in '' | *[!0-9]*) m=0 ;; esac
    fi
    if [ "$m" -eq 0 ]; then
        m=$(awk '$1 == "MemTotal:" {print $2 * 1024}' /proc/meminfo)
    fi
    echo "$m"
}

# as_user USER CMD ARGS...: exec CMD as USER (the engines never run as root).
as_user() {
    u=$1
    shift
    if [ "$(id -u)" -eq 0 ]; then
        exec su -s /bin/sh -c 'exec "$0" "$@"' "$u" -- "$@"
    fi
    exec "$@"
}

# run_as USER CMD ARGS...: run CMD as USER and wait for it.
run_as() {
    u=$1
    shift
    if [ "$(id -u)" -eq 0 ]; then
        su -s /bin/sh -c '"$0" "$@"' "$u" -- "$@"
    else
        "$@"
    fi
}

# own_dir USER DIR MODE: DIR exists, belongs to USER, has MODE.
own_dir() {
    mkdir -p "$2"
    if [ "$(id -u)" -eq 0 ]; then chown "$1:$1" "$2"; fi
    chmod "$3" "$2"
}
