# shellcheck shell=bash
# Shared helpers for scripts/services, scripts/platform, scripts/demo and scripts/base-images. Source it; do not run it.
#
# Everything the scripts create lives under $STACKPAD_HOME (default /var/lib/stackpad):
#   $STACKPAD_HOME/services/<name>/{data,config,<name>.log,<name>.pid}
#   $STACKPAD_HOME/images/<image>/            (OCI image layouts, see scripts/base-images)

STACKPAD_HOME=${STACKPAD_HOME:-/var/lib/stackpad}
SERVICES_DIR=$STACKPAD_HOME/services
# shellcheck disable=SC2034 # used by scripts/base-images
IMAGES_DIR=$STACKPAD_HOME/images
export STACKPAD_HOME

# ---------------------------------------------------------------- messages

log() { printf '[%s] %s\n' "${LOG_TAG:-stackpad}" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "${LOG_TAG:-stackpad}" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "${LOG_TAG:-stackpad}" "$*" >&2
    exit 1
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# ---------------------------------------------------------------- per-service paths

svc_dir() { printf '%s/%s' "$SERVICES_DIR" "$1"; }
svc_log() { printf '%s/%s/%s.log' "$SERVICES_DIR" "$1" "$1"; }
svc_pidfile() { printf '%s/%s/%s.pid' "$SERVICES_DIR" "$1" "$1"; }

# svc_prepare NAME: create NAME's state dir with data/ and config/ subdirs.
svc_prepare() {
    local d
    d=$(svc_dir "$1")
    mkdir -p "$d/data" "$d/config"
    chmod 755 "$STACKPAD_HOME" "$SERVICES_DIR" "$d"
}

# write_private FILE: stdin to FILE for files that hold a secret or a database URL. The temp file
# is created 0600 in FILE's directory (mktemp), fsynced, then renamed over FILE, so FILE is never
# seen half-written or readable by others; an older FILE with a wider mode is replaced.
write_private() {
    local tmp
    tmp=$(mktemp "$1.tmp.XXXXXX") || return 1
    if cat >"$tmp" && sync "$tmp" && mv -f "$tmp" "$1"; then
        sync "$(dirname "$1")"
    else
        rm -f "$tmp"
        return 1
    fi
}

# ---------------------------------------------------------------- processes

# pid_of NAME [CMD_SUBSTRING]: print the pid recorded for NAME if that process is alive
# (and, when given, its command line contains CMD_SUBSTRING: guards against pid reuse).
pid_of() {
    local pidfile pid
    pidfile=$(svc_pidfile "$1")
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -n ${2:-} ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
    fi
    printf '%s' "$pid"
}

# start_bg NAME CMD...: run CMD detached (own session, stdin /dev/null, output appended to the
# service log) and record its pid. The pid is also the process group id (setsid), so
# stop_bg can end the whole group, wrappers (runuser) included.
start_bg() {
    local name=$1
    shift
    local logf pidfile
    logf=$(svc_log "$name")
    pidfile=$(svc_pidfile "$name")
    printf '\n==== %s starting: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$logf"
    nohup setsid "$@" </dev/null >>"$logf" 2>&1 &
    echo $! >"$pidfile"
}

# stop_bg NAME [CMD_SUBSTRING] [TIMEOUT]: stop the process recorded for NAME (TERM, then KILL
# after TIMEOUT seconds, default 20), and its process group when it leads one.
stop_bg() {
    local name=$1 match=${2:-} timeout=${3:-20}
    local pidfile pid pgid target i
    pidfile=$(svc_pidfile "$name")
    if ! pid=$(pid_of "$name" "$match"); then
        rm -f "$pidfile"
        return 0
    fi
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
    target=$pid
    [[ $pgid == "$pid" ]] && target=-$pid
    log "stopping $name (pid $pid)"
    kill -TERM -- "$target" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 -- "$target" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 -- "$target" 2>/dev/null; then
        warn "$name did not stop within ${timeout}s: sending KILL"
        kill -KILL -- "$target" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# wait_for NAME SECONDS CHECK_FN [ARGS...]: poll CHECK_FN until it succeeds. On timeout print
# the end of NAME's log(s) and fail, naming the service and the log path.
wait_for() {
    local name=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.25
    done
    "$@" >/dev/null 2>&1 && return 0
    fail_service "$name" "did not answer within ${secs}s"
}

# fail_service NAME REASON [EXTRA_LOG...]: print the tail of NAME's log and exit non-zero.
fail_service() {
    local name=$1 reason=$2
    shift 2
    local f
    printf '[%s] ERROR: service %s %s\n' "${LOG_TAG:-stackpad}" "$name" "$reason" >&2
    for f in "$(svc_log "$name")" "$@"; do
        [[ -f $f ]] || continue
        printf -- '---- last lines of %s ----\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
    printf '[%s] log: %s\n' "${LOG_TAG:-stackpad}" "$(svc_log "$name")" >&2
    exit 1
}

# ---------------------------------------------------------------- ports

# listeners PROTO PORT: print "addr:port pid/name" lines of sockets listening on PORT
# (PROTO is t for TCP, u for UDP).
listeners() {
    ss -Hln"$1"p "sport = :$2" 2>/dev/null | awk '{print $4, $6}'
}

port_busy() { [[ -n $(listeners "$1" "$2") ]]; }

# is_loopback_addr ADDR:PORT as printed by ss
is_loopback_addr() {
    local a=${1%:*}
    a=${a#[}
    a=${a%]}
    a=${a%%%*}
    [[ $a == 127.* || $a == ::1 || $a == ::ffff:127.* ]]
}

# ---------------------------------------------------------------- packages

pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

# apt_ensure PKG...: install the packages that are missing (apt-get update first). Package
# maintainer scripts must not start daemons (they would listen on all addresses with the
# packaged configs): if no policy-rc.d is in place, one that denies starts is put there for
# the duration of the install. Scripts run at once (the suite's cluster tests each start
# `scripts/cluster up`) take turns on one lock and look again once they hold it, so only the
# first installs; apt-get itself waits for dpkg's lock (another apt-get on the machine) up to
# 10 minutes instead of failing.
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    (
        flock 7
        apt_ensure_locked "$@"
    ) 7>/run/lock/stackpad-apt.lock
}

apt_ensure_locked() {
    local missing=() p tmp_policy=""
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing missing packages: ${missing[*]}"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        tmp_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# temporary, from stackpad scripts/services\nexit 101\n' >"$tmp_policy"
        chmod 755 "$tmp_policy"
    fi
    local rc=0
    export NEEDRESTART_SUSPEND=1
    {
        apt-get -o DPkg::Lock::Timeout=600 update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
    } >&2 || rc=$?
    [[ -n $tmp_policy ]] && rm -f "$tmp_policy"
    ((rc == 0)) || die "apt-get install failed (rc $rc) for: ${missing[*]}"
}

# ---------------------------------------------------------------- pebble

# write_pebble_config FILE LISTEN MANAGEMENT HTTP_PORT TLS_PORT CERT KEY: the config of one
# Pebble (the test CA of scripts/services, the platform CA of scripts/platform).
write_pebble_config() {
    cat >"$1" <<JSON
{
  "pebble": {
    "listenAddress": "$2",
    "managementListenAddress": "$3",
    "certificate": "$6",
    "privateKey": "$7",
    "httpPort": $4,
    "tlsPort": $5,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
}
