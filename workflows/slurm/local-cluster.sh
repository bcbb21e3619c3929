#!/usr/bin/env bash
# Bring up / tear down a real single-node SLURM cluster on this host (munged,
# slurmctld and slurmd started directly as daemons, no systemd), for the
# integration tests (tests/slurm) and for developers.
#
# Everything lives in one state directory (BH_SLURM_STATE, default /tmp/bh-slurm):
#   etc/slurm.conf  munge/{munge.key,munge.socket.2,munged.pid}  run/*.pid
#   state/  spool/  log/{slurmctld,slurmd,munged}.log  log/jobcomp.txt
# Nothing under /etc is written: the client commands find the cluster through
# SLURM_CONF (print it with `local-cluster.sh env`). `up` on a running cluster
# rewrites slurm.conf and runs `scontrol reconfigure` if it changed; changes
# such as SelectType need `down` then `up`.
#
# Environment knobs (all optional):
#   BH_SLURM_STATE              state directory                    [/tmp/bh-slurm]
#   BH_SLURM_CPUS               CPUs of the node                   [nproc]
#   BH_SLURM_MEM_MARGIN_MB      memory kept back from `free -m`    [max(512, 10%)]
#   BH_SLURM_DEF_MEM_PER_CPU    DefMemPerCPU in MB                 [RealMemory / CPUs]
#   BH_SLURM_CTLD_PORT          slurmctld port                     [6817]
#   BH_SLURMD_PORT              slurmd port                        [6818]
#   BH_SLURM_UP_TIMEOUT         seconds to wait for the node       [30]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly TEMPLATE="${SCRIPT_DIR}/local-cluster/slurm.conf.in"
readonly STATE="${BH_SLURM_STATE:-/tmp/bh-slurm}"
readonly CONF="${STATE}/etc/slurm.conf"
readonly MUNGE_DIR="${STATE}/munge"
readonly MUNGE_SOCKET="${MUNGE_DIR}/munge.socket.2"
readonly MUNGE_PID="${MUNGE_DIR}/munged.pid"
readonly CTLD_PID="${STATE}/run/slurmctld.pid"
readonly SLURMD_PID="${STATE}/run/slurmd.pid"
readonly UP_TIMEOUT="${BH_SLURM_UP_TIMEOUT:-30}"
readonly STOP_TIMEOUT=10

usage() {
    cat <<EOF
Usage: $(basename "$0") {up|down|status|env} [--purge]

A real single-node SLURM cluster on this host (state in \$BH_SLURM_STATE,
default /tmp/bh-slurm; needs root).

  up       install slurm-wlm and munge with apt if missing, start munged,
           slurmctld and slurmd, wait until the node is idle, then print the
           environment the client commands need (eval "\$($(basename "$0") up)").
           Idempotent: daemons that already run are left alone.
  down     stop slurmd, slurmctld and munged (TERM, then KILL after ${STOP_TIMEOUT} s).
           Jobs are not cancelled. With --purge also delete the state directory
           (job state, logs, generated configuration). Idempotent.
  status   print sinfo and squeue; exit 0 if the cluster runs, 1 if not.
  env      print the export lines for the client commands (SLURM_CONF, LOGNAME):
           eval "\$($(basename "$0") env)"
EOF
}

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

print_env() {
    # LOGNAME is unset in some containers; Nipype's SLURM plugin reads it.
    printf 'export SLURM_CONF=%q\n' "${CONF}"
    printf 'export LOGNAME=%q\n' "${LOGNAME:-$(id -un)}"
}

# --- processes -------------------------------------------------------------

# pid from a pid file if that process is alive and is the expected program
live_pid() {
    local pidfile="$1" name="$2" pid comm
    [[ -r "${pidfile}" ]] || return 1
    pid="$(tr -dc '0-9' <"${pidfile}")"
    [[ -n "${pid}" ]] || return 1
    comm="$(cat "/proc/${pid}/comm" 2>/dev/null)" || return 1
    [[ "${comm}" == "${name}" ]] || return 1
    printf '%s\n' "${pid}"
}

# stop daemons given as "pidfile:name" pairs: TERM all of them, wait for all,
# KILL whatever is left after STOP_TIMEOUT seconds
stop_daemons() {
    local spec pidfile name pid waited=0
    local -a pids=()
    for spec in "$@"; do
        pidfile="${spec%%:*}" name="${spec##*:}"
        if pid="$(live_pid "${pidfile}" "${name}")"; then
            log "stopping ${name} (pid ${pid})"
            kill -TERM "${pid}" 2>/dev/null || true
            pids+=("${pid}")
        fi
    done
    while ((${#pids[@]})); do
        local -a alive=()
        for pid in "${pids[@]}"; do
            kill -0 "${pid}" 2>/dev/null && alive+=("${pid}")
        done
        pids=("${alive[@]+"${alive[@]}"}")
        ((${#pids[@]})) || break
        if (( waited >= STOP_TIMEOUT * 10 )); then
            log "pid(s) ${pids[*]} ignored TERM for ${STOP_TIMEOUT} s; sending KILL"
            kill -KILL "${pids[@]}" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    for spec in "$@"; do
        rm -f "${spec%%:*}"
    done
}

# wait (up to 10 s) until a daemon has written its pid file
wait_pidfile() {
    local pidfile="$1" name="$2" logfile="$3" i
    for ((i = 0; i < 100; i++)); do
        live_pid "${pidfile}" "${name}" >/dev/null && return 0
        sleep 0.1
    done
    log "${name} did not start; last lines of ${logfile}:"
    tail -n 30 "${logfile}" >&2 2>/dev/null || true
    exit 1
}

# serialise concurrent up/down calls (e.g. several pytest workers) on one state dir;
# the daemons are started with fd 9 closed, or they would hold the lock forever
lock_state() {
    exec 9>"${STATE}/.lock"
    flock -w 60 9 || die "another local-cluster.sh holds ${STATE}/.lock"
}

# --- installation and configuration -----------------------------------------

ensure_packages() {
    local missing=0 cmd
    for cmd in munged munge slurmctld slurmd sbatch sinfo; do
        command -v "${cmd}" >/dev/null 2>&1 || PATH="${PATH}:/usr/sbin:/sbin" command -v "${cmd}" >/dev/null 2>&1 || missing=1
    done
    if ((missing)); then
        command -v apt-get >/dev/null 2>&1 || die "slurm-wlm/munge are not installed and apt-get is unavailable"
        log "installing slurm-wlm and munge with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurm-wlm munge >&2
    fi
    export PATH="${PATH}:/usr/sbin:/sbin"
}

ensure_munge_key() {
    local key="${MUNGE_DIR}/munge.key"
    [[ -s "${key}" ]] && return 0
    # munged running as root wants a root-owned key; the Debian key belongs to
    # the munge user, so keep a private copy (or a fresh key) in the state dir.
    if [[ -r /etc/munge/munge.key ]]; then
        install -m 0400 -o root -g root /etc/munge/munge.key "${key}"
    elif command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="${key}" --force
        chmod 0400 "${key}"
    else
        (umask 077 && head -c 1024 /dev/urandom >"${key}")
        chmod 0400 "${key}"
    fi
}

render_conf() {
    local node cpus total_mb margin_mb real_mb def_mem tpl key val tmp
    node="$(hostname -s)"
    cpus="${BH_SLURM_CPUS:-$(nproc)}"
    total_mb="$(free -m | awk '/^Mem:/ {print $2}')"
    margin_mb="${BH_SLURM_MEM_MARGIN_MB:-$(( total_mb / 10 > 512 ? total_mb / 10 : 512 ))}"
    real_mb=$(( total_mb - margin_mb ))
    (( real_mb >= 256 )) || die "not enough memory for a node (free -m total ${total_mb} MB, margin ${margin_mb} MB)"
    def_mem="${BH_SLURM_DEF_MEM_PER_CPU:-$(( real_mb / cpus ))}"

    tpl="$(<"${TEMPLATE}")"
    for key in NODE_NAME CPUS REAL_MEMORY DEF_MEM_PER_CPU STATE_DIR CTLD_PORT SLURMD_PORT; do
        case "${key}" in
            NODE_NAME) val="${node}" ;;
            CPUS) val="${cpus}" ;;
            REAL_MEMORY) val="${real_mb}" ;;
            DEF_MEM_PER_CPU) val="${def_mem}" ;;
            STATE_DIR) val="${STATE}" ;;
            CTLD_PORT) val="${BH_SLURM_CTLD_PORT:-6817}" ;;
            SLURMD_PORT) val="${BH_SLURMD_PORT:-6818}" ;;
        esac
        tpl="${tpl//@${key}@/"${val}"}"
    done
    [[ "${tpl}" != *@[A-Z_]*@* ]] || die "unfilled placeholder in ${TEMPLATE}"

    tmp="${CONF}.new"
    printf '%s\n' "${tpl}" >"${tmp}"
    if [[ -f "${CONF}" ]] && cmp -s "${tmp}" "${CONF}"; then
        rm -f "${tmp}"
        return 1    # unchanged
    fi
    mv -f "${tmp}" "${CONF}"
    return 0        # (re)written
}

# --- node readiness ----------------------------------------------------------

node_state() {
    SLURM_CONF="${CONF}" sinfo -h -N -n "$(hostname -s)" -o '%t' 2>/dev/null | head -n 1
}

wait_node_ready() {
    local deadline state="" now
    deadline=$(( $(date +%s) + UP_TIMEOUT ))
    while :; do
        state="$(node_state || true)"
        case "${state}" in
            idle | mix | alloc | comp) return 0 ;;
            down | drain | drng | fail | inval)
                # ReturnToService=2 clears a plain DOWN on registration;
                # a drain/invalid state needs a human
                SLURM_CONF="${CONF}" scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        now="$(date +%s)"
        if (( now >= deadline )); then
            log "node $(hostname -s) not ready after ${UP_TIMEOUT} s (state: '${state:-unknown}')"
            SLURM_CONF="${CONF}" scontrol show node "$(hostname -s)" 2>&1 | grep -E 'State=|Reason=' >&2 || true
            log "last lines of ${STATE}/log/slurmctld.log:"
            tail -n 20 "${STATE}/log/slurmctld.log" >&2 2>/dev/null || true
            log "last lines of ${STATE}/log/slurmd.log:"
            tail -n 20 "${STATE}/log/slurmd.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
}

# --- subcommands -------------------------------------------------------------

cmd_up() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (the daemons run as root)"
    [[ "${STATE}" == /* && "${STATE}" != *[[:space:]]* ]] \
        || die "BH_SLURM_STATE must be an absolute path without spaces (got '${STATE}')"
    [[ -r "${TEMPLATE}" ]] || die "template ${TEMPLATE} is missing"
    ensure_packages

    mkdir -p "${STATE}"/{etc,run,state,log,spool/slurmd} "${MUNGE_DIR}"
    chmod 0755 "${STATE}" "${MUNGE_DIR}"   # munged: socket dir must be world-executable
    lock_state
    : >"${STATE}/etc/plugstack.conf"
    ensure_munge_key

    local changed=0
    if render_conf; then changed=1; fi

    if ! live_pid "${MUNGE_PID}" munged >/dev/null; then
        log "starting munged"
        rm -f "${MUNGE_PID}"
        munged --force --key-file="${MUNGE_DIR}/munge.key" --socket="${MUNGE_SOCKET}" \
            --pid-file="${MUNGE_PID}" --log-file="${STATE}/log/munged.log" \
            --seed-file="${MUNGE_DIR}/munged.seed" 9>&- \
            || { tail -n 20 "${STATE}/log/munged.log" >&2 || true; die "munged failed to start"; }
        wait_pidfile "${MUNGE_PID}" munged "${STATE}/log/munged.log"
    fi

    if live_pid "${CTLD_PID}" slurmctld >/dev/null; then
        if ((changed)); then
            log "slurm.conf changed; scontrol reconfigure"
            SLURM_CONF="${CONF}" scontrol reconfigure >&2
        fi
    else
        log "starting slurmctld"
        rm -f "${CTLD_PID}"
        # keeps job state (and job ids) across down/up; `down --purge` resets it
        SLURM_CONF="${CONF}" slurmctld -f "${CONF}" 9>&- \
            || { tail -n 20 "${STATE}/log/slurmctld.log" >&2 || true; die "slurmctld failed to start"; }
        wait_pidfile "${CTLD_PID}" slurmctld "${STATE}/log/slurmctld.log"
    fi

    if ! live_pid "${SLURMD_PID}" slurmd >/dev/null; then
        log "starting slurmd"
        rm -f "${SLURMD_PID}"
        SLURM_CONF="${CONF}" slurmd -f "${CONF}" 9>&- \
            || { tail -n 20 "${STATE}/log/slurmd.log" >&2 || true; die "slurmd failed to start"; }
        wait_pidfile "${SLURMD_PID}" slurmd "${STATE}/log/slurmd.log"
    fi

    wait_node_ready
    log "cluster up: node $(hostname -s), partition debug (default) and cpu; state in ${STATE}"
    print_env
}

cmd_down() {
    local purge=0
    case "${1:-}" in
        --purge) purge=1 ;;
        "") ;;
        *) usage >&2; exit 2 ;;
    esac
    [[ -d "${STATE}" ]] || { log "cluster down (no state dir ${STATE})"; return 0; }
    lock_state
    # slurmd and slurmctld together (each takes ~2 s to save state), munged last
    stop_daemons "${SLURMD_PID}:slurmd" "${CTLD_PID}:slurmctld"
    stop_daemons "${MUNGE_PID}:munged"
    if ((purge)); then
        [[ "${STATE}" == /* && "${STATE}" != / ]] || die "refusing to purge '${STATE}'"
        log "removing ${STATE}"
        rm -rf -- "${STATE}"
    fi
    log "cluster down"
}

cmd_status() {
    local name pidfile missing=()
    for name in munged slurmctld slurmd; do
        case "${name}" in
            munged) pidfile="${MUNGE_PID}" ;;
            slurmctld) pidfile="${CTLD_PID}" ;;
            slurmd) pidfile="${SLURMD_PID}" ;;
        esac
        live_pid "${pidfile}" "${name}" >/dev/null || missing+=("${name}")
    done
    if ((${#missing[@]} == 3)); then
        echo "not running (state dir ${STATE})"
        return 1
    fi
    if ((${#missing[@]})); then
        echo "partially running: ${missing[*]} not running (state dir ${STATE})"
        return 1
    fi
    export PATH="${PATH}:/usr/sbin:/sbin"
    echo "running (state dir ${STATE}, SLURM_CONF=${CONF})"
    SLURM_CONF="${CONF}" sinfo || return 1
    SLURM_CONF="${CONF}" squeue || return 1
}

main() {
    case "${1:-}" in
        up) cmd_up ;;
        down) shift; cmd_down "$@" ;;
        status) cmd_status ;;
        env) print_env ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
