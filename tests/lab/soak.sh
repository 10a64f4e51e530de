#!/usr/bin/env bash
# Inside the lab host: boot a guest N times, K at a time, and tally the exit statuses.
#   bash tests/lab/soak.sh N K VCPUS swiftvmm|qemu [GUEST-CMDLINE-EXTRA]
# Run through scripts/soak, which starts the lab. Each boot is the test guest with
# swiftvmm.test=verdict: it writes verdict 7 to port 0x501 and stops. A good boot is
# status 7 from swiftvmm, 15 from QEMU (isa-debug-exit turns 7 into 7 << 1 | 1); anything
# else is bad and its console tail is printed. Every boot is bounded (120 s).
source "$(dirname "$0")/lib.sh"
cd "$REPO" || exit 1
n=$1 k=$2 vcpus=$3 kind=$4 extra=${5:-}
VERDICT=7
# The suites' guest parameters (LAB_GUEST_PARAMS in lib.sh; LAB_GUEST_PARAMS= for none),
# so that a soak measures what the suites see.
# LAB_SOAK_TEST=viommu (swiftvmm only): the suites' vIOMMU guest test instead of the
# verdict (groups, a disk pattern through the vIOMMU), good when it powers off with 0.
CMDLINE="console=ttyS0 reboot=k panic=-1 quiet${LAB_GUEST_PARAMS:+ $LAB_GUEST_PARAMS}${extra:+ $extra} swiftvmm.test=${LAB_SOAK_TEST:-verdict} swiftvmm.status=$VERDICT"
# LAB_SOAK_HUGEPAGES=1: swiftvmm's guest RAM in 2 MiB hugetlb pages (hugepages = true),
# reserved here for K guests at once.
# LAB_SOAK_MODULES=1: the initramfs with the guest modules (swiftvmm.modules=... in PARAMS
# loads them). LAB_SOAK_ARGS: more swiftvmm run arguments, e.g. "--viommu".
VMCONFIG=configs/smoke.toml
if [ "${LAB_SOAK_HUGEPAGES:-0}" = 1 ] || [ "${LAB_SOAK_MODULES:-0}" = 1 ]; then
    VMCONFIG=$LOGDIR/soak.toml
    sed -e "s|\.\./\.cache|$CACHE|" configs/smoke.toml >"$VMCONFIG"
fi
if [ "${LAB_SOAK_HUGEPAGES:-0}" = 1 ] && [ "$kind" = swiftvmm ]; then
    echo $((k * 256 + 16)) >/proc/sys/vm/nr_hugepages
    sed -i -e "s|^memory = .*|&\nhugepages = true|" "$VMCONFIG"
    echo "soak: guest RAM in hugetlb pages: $(awk '/HugePages_Total/ {print $2}' /proc/meminfo) x 2 MiB reserved"
fi
if [ "${LAB_SOAK_MODULES:-0}" = 1 ]; then
    sed -i -e "s|initramfs\.cpio\.gz|initramfs-modules.cpio.gz|" "$VMCONFIG"
    echo "soak: initramfs with the guest modules"
fi
# LAB_SOAK_DEVICES=1: a 64 MiB virtio-blk disk (one per boot slot) and virtio-rng too.
if [ "${LAB_SOAK_DEVICES:-0}" = 1 ] && [ "$kind" = swiftvmm ]; then
    [ "$VMCONFIG" != configs/smoke.toml ] || { VMCONFIG=$LOGDIR/soak.toml; sed -e "s|\.\./\.cache|$CACHE|" configs/smoke.toml >"$VMCONFIG"; }
    for j in $(seq 1 "$k"); do
        truncate -s 64M "$LOGDIR/soak-disk$j.img"
        sed -e "s|^\[serial\]|[[disk]]\npath = \"$LOGDIR/soak-disk$j.img\"\n[rng]\nenabled = true\n&|" "$VMCONFIG" >"$LOGDIR/soak-$j.toml"
    done
    echo "soak: each guest with a virtio-blk disk and virtio-rng"
fi
[ -z "${LAB_SOAK_ARGS:-}" ] || echo "soak: swiftvmm run ... $LAB_SOAK_ARGS"
case $kind in
    swiftvmm) good=$VERDICT; [ "${LAB_SOAK_TEST:-verdict}" = verdict ] || good=0 ;;
    qemu) good=$((VERDICT << 1 | 1)) ;;
    *) echo "soak: unknown VMM '$kind'"; exit 2 ;;
esac

echo "soak: lab host: $(nproc) CPUs, $(uname -r), cmdline: $(cat /proc/cmdline | sed 's/ labscript=.*//')"
params=""
for f in /sys/module/kvm_amd/parameters/*; do params="$params $(basename "$f")=$(cat "$f" 2>/dev/null)"; done
echo "soak: kvm_amd:$params"
echo "soak: kvm: halt_poll_ns=$(cat /sys/module/kvm/parameters/halt_poll_ns 2>/dev/null)"
echo "soak: $n boots of $kind, $vcpus vCPU(s), $k at a time; guest $(cat "$CACHE/guest/kernel-release"), cmdline: $CMDLINE"

# slot_config I: the config of boot I (with LAB_SOAK_DEVICES, each slot of a round has
# its own disk).
slot_config() {
    if [ "${LAB_SOAK_DEVICES:-0}" = 1 ]; then echo "$LOGDIR/soak-$(( ($1 - 1) % k + 1 )).toml"; else echo "$VMCONFIG"; fi
}

# boot I: one boot, its status into $LOGDIR/soak-I.status.
boot() {
    local i=$1 log=$LOGDIR/soak-$1.log t0 st
    t0=$(date +%s.%N)
    if [ "$kind" = swiftvmm ]; then
        # swiftvmm's own timeout, so a hung guest's log says where its vCPUs were;
        # the outer one guards against a hung VMM.
        timeout -k 5 150 "$SWIFTVMM" run "$(slot_config "$i")" --vcpus "$vcpus" --timeout 120s --cmdline "$CMDLINE" ${LAB_SOAK_ARGS:-} </dev/null >"$log" 2>&1
    else
        timeout -k 5 120 qemu-system-x86_64 -accel kvm -cpu host -smp "$vcpus" -m 512M -M pc \
            -nodefaults -no-reboot -display none -monitor none -serial stdio \
            -device isa-debug-exit,iobase=0x501,iosize=1 \
            -kernel "$CACHE/guest/vmlinuz" -initrd "$CACHE/guest/initramfs.cpio.gz" -append "$CMDLINE" \
            </dev/null >"$log" 2>&1
    fi
    st=$?
    echo "$st $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" >"$LOGDIR/soak-$i.status"
}

# What a bad status means, per VMM.
meaning() {
    case $kind:$1 in
        swiftvmm:122) echo "guest crashed (triple fault or KVM internal error)" ;;
        swiftvmm:121) echo "guest panicked" ;;
        *:124 | *:137) echo "hang (no verdict within 120 s)" ;;
        qemu:0) echo "guest reset (triple fault or reboot; -no-reboot)" ;;
        *) echo "status $1" ;;
    esac
}

# LAB_TRACE_KVM=1: the lab host's KVM trace events (every exit and entry, injected
# exceptions and interrupts, nested page faults) go to its trace buffer, which freezes
# when a vCPU exits with KVM_EXIT_SHUTDOWN (a triple fault). After that round the
# faulting vCPU thread's last 60 events are printed: what KVM saw the guest do just
# before it died.
T=/sys/kernel/tracing
trace_kvm=${LAB_TRACE_KVM:-0}
if [ "$trace_kvm" = 1 ]; then
    [ -e $T/trace ] || mount -t tracefs nodev $T
    echo 16384 >$T/buffer_size_kb
    echo 1 >$T/events/kvm/enable
    echo 'traceoff if reason == 8' >$T/events/kvm/kvm_userspace_exit/trigger
    echo >$T/trace
    echo 1 >$T/tracing_on
    echo "soak: tracing KVM events; the buffer freezes at a triple fault"
fi
trace_report() {
    [ "$trace_kvm" = 1 ] && [ "$(cat $T/tracing_on)" = 0 ] || return 0
    local line tid
    line=$(grep 'KVM_EXIT_SHUTDOWN' $T/trace | tail -n 1)
    tid=$(echo "$line" | sed -nE 's/^ *[^ ]+-([0-9]+) .*/\1/p')
    echo "soak: the KVM trace froze at: $line"
    if [ -n "$tid" ]; then
        echo "soak: thread $tid's last 60 KVM events:"
        grep -E "^ *[^ ]+-$tid " $T/trace | tail -n 60 | sed 's/^/    /'
    fi
    echo >$T/trace
    echo 1 >$T/tracing_on
}

start=$(date +%s) good_n=0 bad_n=0 i=0 round=0
declare -A by_status=()
while [ "$i" -lt "$n" ]; do
    round=$((round + 1))
    pids=() ids=()
    for _ in $(seq 1 "$k"); do
        [ "$i" -lt "$n" ] || break
        i=$((i + 1))
        boot "$i" &
        pids+=($!) ids+=("$i")
    done
    for p in "${pids[@]}"; do
        # A boot stuck in the kernel cannot be waited for: leave it, its status stays "stuck".
        if await_exit "$p" 200; then wait "$p" 2>/dev/null
        else echo "soak: a boot of round $round is stuck in the kernel (pid $p, wchan $(cat "/proc/$p/wchan" 2>/dev/null))"; fi
    done
    for j in "${ids[@]}"; do
        read -r st secs <"$LOGDIR/soak-$j.status" 2>/dev/null || { st=stuck secs=?; }
        by_status[$st]=$((${by_status[$st]:-0} + 1))
        if [ "$st" = "$good" ]; then
            good_n=$((good_n + 1))
            echo "soak: boot $j/$n (round $round): good, ${secs}s"
        else
            bad_n=$((bad_n + 1))
            echo "soak: boot $j/$n (round $round): BAD: $(meaning "$st") after ${secs}s; console tail:"
            tr -d '\r' <"$LOGDIR/soak-$j.log" | grep -v '^$' | tail -n 8 | sed 's/^/    /'
        fi
    done
    trace_report
done
tally=""
for st in "${!by_status[@]}"; do tally="$tally status $st x${by_status[$st]},"; done
echo "soak: $kind, $vcpus vCPU(s), $k at a time${extra:+, guest +'$extra'}: $n boots, $good_n good, $bad_n bad ($(echo "${tally%,}" | sed 's/^ //')) in $(($(date +%s) - start)) s"
[ "$bad_n" -eq 0 ]
