# shellcheck shell=bash
# Process helpers for the lab suites and scripts that run in the lab host: read the
# process table with builtins, and run a command with a bound that holds even when the
# command is stuck in the kernel (such a task cannot be killed or waited for: it is left
# behind, and the caller goes on). Sourced.

# The state letter of PID (R, S, D, Z, ...), empty when it is gone. /proc/PID/stat is
# "pid (comm) state ...": the state follows the last ')'.
proc_state() {
    local s
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 0
    s=${s##*) }
    echo "${s%% *}"
}

# Every task as "pid ppid state", read with builtins only (no fork per task).
proc_list() {
    local f s rest
    for f in /proc/[0-9]*/stat; do
        { read -r s <"$f"; } 2>/dev/null || continue
        rest=${s##*) }
        # shellcheck disable=SC2086 # split "state ppid ..."
        set -- $rest
        echo "${s%% *} $2 $1"
    done
}

# PID and all its descendants, children after their parents.
proc_tree() {
    proc_list | awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            queue[1] = root; n = 1
            for (i = 1; i <= n; i++) {
                print queue[i]
                m = split(kids[queue[i]], k, " ")
                for (j = 1; j <= m; j++) queue[++n] = k[j]
            }
        }'
}

# await_exit PID SECONDS: waits up to SECONDS for PID to end (gone, or a zombie to reap
# with wait); status 1 if it is still there then, e.g. stuck in the kernel.
await_exit() {
    local pid=$1 t0 st
    t0=$(date +%s)
    while :; do
        st=$(proc_state "$pid")
        [ -n "$st" ] && [ "$st" != Z ] || return 0
        [ $(($(date +%s) - t0)) -lt "$2" ] || return 1
        # Short naps at first: most commands end within milliseconds.
        if [ $(($(date +%s) - t0)) -lt 2 ]; then sleep 0.05; else sleep 0.5; fi
    done
}

# bounded SECONDS CMD...: CMD in a child; its status, or 124 (and a message) if it is still
# running after SECONDS, which is then left behind (a task stuck in the kernel cannot be
# waited for). For sysfs writes that can block forever (an unbind waits for the device's
# users), use it through sysfs_write.
bounded() {
    local limit=$1 pid
    shift
    "$@" &
    pid=$!
    if ! await_exit "$pid" "$limit"; then
        echo "bounded: '$*' still running after ${limit}s (pid $pid, state $(proc_state "$pid"), wchan $(cat "/proc/$pid/wchan" 2>/dev/null)); left behind" >&2
        kill -KILL "$pid" 2>/dev/null
        return 124
    fi
    wait "$pid"
}

# sysfs_write VALUE FILE: echo VALUE >FILE, bounded to 30 s.
sysfs_write() { bounded 30 sh -c 'echo "$1" >"$2"' sysfs_write "$1" "$2"; }
