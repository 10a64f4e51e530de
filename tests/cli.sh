#!/usr/bin/env bash
# Host CLI tests: the real swiftvmm binary on this machine, no guest boot.
# Needs the guest assets (scripts/assets guest initramfs) for the valid configs.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
BIN=${SWIFTVMM:-$REPO/.build/debug/swiftvmm}
CACHE=${SWIFTVMM_CACHE:-$REPO/.cache}
P=0; F=0
pass() { P=$((P + 1)); echo "cli: PASS $1"; }
fail() { F=$((F + 1)); echo "cli: FAIL $1: $2"; [ -n "${OUT:-}" ] && echo "$OUT" | tail -n 20 | sed 's/^/  | /'; }
run() { OUT=$(timeout 60 "$BIN" "$@" </dev/null 2>&1); ST=$?; }
tmp=$(mktemp -d /tmp/swiftvmm-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

run --version
[ $ST -eq 0 ] && echo "$OUT" | grep -qE '^[0-9]+\.[0-9]+\.[0-9]+' && pass version || fail version "status $ST"

run --help
[ $ST -eq 0 ] && echo "$OUT" | grep -q "swiftvmm run configs/smoke.toml" && pass help-has-example || fail help-has-example "status $ST"

run check configs/smoke.toml
[ $ST -eq 0 ] && pass check-smoke-config || fail check-smoke-config "status $ST"

# Every mistake is listed with its key path, and check exits non-zero.
cat >"$tmp/bad.toml" <<'TOML'
[machine]
vcpus = 0
memory = "12Q"
colour = "blue"
[kernel]
initramfs = "does-not-exist.img"
[serial]
mode = "file"
TOML
run check "$tmp/bad.toml"
if [ $ST -eq 65 ] && echo "$OUT" | grep -q 'machine.memory: "12Q" is not a size' \
    && echo "$OUT" | grep -q 'machine.vcpus' && echo "$OUT" | grep -q 'machine.colour' \
    && echo "$OUT" | grep -q 'kernel.path' && echo "$OUT" | grep -q 'kernel.initramfs' \
    && echo "$OUT" | grep -q 'serial.path'; then pass check-lists-every-error; else fail check-lists-every-error "status $ST"; fi

run run "$tmp/bad.toml"
[ $ST -eq 65 ] && echo "$OUT" | grep -q 'machine.memory' && pass run-validates-first || fail run-validates-first "status $ST"

run check "$tmp/missing.toml"
[ $ST -eq 65 ] && echo "$OUT" | grep -q "missing.toml" && pass missing-config-named || fail missing-config-named "status $ST"

printf '[machine\nvcpus = 1\n' >"$tmp/syntax.toml"
run check "$tmp/syntax.toml"
[ $ST -eq 65 ] && echo "$OUT" | grep -qi "line" && pass toml-syntax-error-has-line || fail toml-syntax-error-has-line "status $ST"

# A vfio-user socket must be there, and be a socket: check says which and where.
run check configs/smoke.toml --vfio-user "$tmp/none.sock"
if [ $ST -eq 65 ] && echo "$OUT" | grep -q -- "--vfio-user: $tmp/none.sock: no such socket"; then
    pass vfio-user-socket-checked
else
    fail vfio-user-socket-checked "status $ST"
fi
SERVER=${SWIFTVMM_SHARED:-$REPO/../shared}/vfio-user/server
if [ -x "$SERVER" ]; then
    "$SERVER" "$tmp/vfu.sock" >/dev/null 2>&1 &
    spid=$!
    for _ in $(seq 1 50); do [ -S "$tmp/vfu.sock" ] && break; sleep 0.1; done
    run check configs/smoke.toml --vfio-user "$tmp/vfu.sock"
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    [ $ST -eq 0 ] && pass vfio-user-listening-socket-accepted || fail vfio-user-listening-socket-accepted "status $ST"
else
    fail vfio-user-listening-socket-accepted "libvfio-user's sample server is not at $SERVER"
fi

# A bad kernel image is refused before KVM is touched, on any host.
head -c 4096 /dev/urandom >"$tmp/garbage"
run run configs/smoke.toml --kernel "$tmp/garbage"
[ $ST -eq 65 ] && echo "$OUT" | grep -q "$tmp/garbage" && pass garbage-kernel-refused || fail garbage-kernel-refused "status $ST"
: >"$tmp/empty"
run run configs/smoke.toml --kernel "$tmp/empty"
[ $ST -eq 65 ] && echo "$OUT" | grep -qi "empty" && pass empty-kernel-refused || fail empty-kernel-refused "status $ST"

# check reads the boot files with run's parsers: 5 MB of random bytes are neither a
# kernel nor an initramfs, and a kernel that does not fit the memory is refused.
head -c 5000000 /dev/urandom >"$tmp/random5m"
run check configs/smoke.toml --kernel "$tmp/random5m"
[ $ST -eq 65 ] && echo "$OUT" | grep -q "^  --kernel: kernel $tmp/random5m: not a kernel: no bzImage signature" \
    && pass check-refuses-random-kernel || fail check-refuses-random-kernel "status $ST"
printf '\001\002\003\004 not an archive' >"$tmp/random.cpio"
run check configs/smoke.toml --initramfs "$tmp/random.cpio"
[ $ST -eq 65 ] && echo "$OUT" | grep -q "^  --initramfs: initramfs $tmp/random.cpio: .*byte 0 starts with 01 02 03 04" \
    && pass check-refuses-random-initramfs || fail check-refuses-random-initramfs "status $ST"
run run configs/smoke.toml --initramfs "$tmp/random.cpio"
[ $ST -eq 65 ] && echo "$OUT" | grep -q "initramfs $tmp/random.cpio" && pass run-refuses-random-initramfs \
    || fail run-refuses-random-initramfs "status $ST"
run check configs/smoke.toml --memory 16M
[ $ST -eq 65 ] && echo "$OUT" | grep -q "^  --memory: memory too small for kernel" && pass check-kernel-must-fit \
    || fail check-kernel-must-fit "status $ST"
run check configs/smoke.toml
[ $ST -eq 0 ] && echo "$OUT" | grep -q "ok (.*: bzImage (boot protocol 2\.[0-9]*, [0-9]* MiB), initramfs gzip-compressed cpio" \
    && pass check-names-boot-files || fail check-names-boot-files "status $ST"

# A guest that triple-faults is reported as a crash with its RIP, not left hanging.
# (The tiny ELF/PVH kernel runs UD2 with an empty IDT; KVM-PVM can run that much.)
python3 tests/lab/make-crash-kernel.py "$tmp/crash.elf"
run run configs/smoke.toml --kernel "$tmp/crash.elf" --allow-pvm --timeout 20s
[ $ST -eq 122 ] && echo "$OUT" | grep -q "triple fault on vCPU 0 at RIP 0x200000" && pass triple-fault-reported || fail triple-fault-reported "status $ST"

# --report opens its file before the VMM gives up its privileges: as root, into a directory
# only nobody may write (root keeps no CAP_DAC_OVERRIDE after setup), the report still
# comes; a report that cannot be opened stops the run before the guest starts (status 64).
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1; then
    mkdir -p "$tmp/nobodys" && chown nobody "$tmp/nobodys" && chmod 0700 "$tmp/nobodys"
    run run configs/smoke.toml --kernel "$tmp/crash.elf" --allow-pvm --timeout 20s --report "$tmp/nobodys/r.json"
    if [ $ST -eq 122 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["exitStatus"] == 122' "$tmp/nobodys/r.json" 2>/dev/null; then
        pass report-written-after-privileges-dropped
    else
        fail report-written-after-privileges-dropped "status $ST, report $(head -c 200 "$tmp/nobodys/r.json" 2>&1)"
    fi
else
    echo "cli: SKIP report-written-after-privileges-dropped: needs root and a nobody user"
fi
run run configs/smoke.toml --kernel "$tmp/crash.elf" --allow-pvm --timeout 20s --report "$tmp/missing-dir/r.json"
[ $ST -eq 64 ] && echo "$OUT" | grep -q -- "--report: cannot open $tmp/missing-dir/r.json" && ! echo "$OUT" | grep -q "triple fault" \
    && pass report-unopenable-refused-before-boot || fail report-unopenable-refused-before-boot "status $ST"

# Descriptors a launcher opened ("fd:N", README "Running without root"): /dev/kvm passed
# as fd 9 reaches the same triple fault; as user nobody, with no capability and no
# right to /dev/kvm, too; a descriptor that is not open, or a standard stream, is refused.
OUT=$(timeout 60 "$BIN" run configs/smoke.toml --kernel "$tmp/crash.elf" --allow-pvm --timeout 20s --kvm fd:9 9<>/dev/kvm </dev/null 2>&1); ST=$?
[ $ST -eq 122 ] && echo "$OUT" | grep -q "triple fault on vCPU 0" && echo "$OUT" | grep -q "privileges: uid 0 (euid 0) " \
    && pass passed-kvm-descriptor || fail passed-kvm-descriptor "status $ST"
if command -v setpriv >/dev/null && [ "$(id -u)" = 0 ]; then
    mkdir "$tmp/nobody" && cp "$BIN" "$tmp/crash.elf" "$tmp/nobody/" && chmod 755 "$tmp" "$tmp/nobody"
    printf '[machine]\nmemory = "64M"\n[kernel]\npath = "crash.elf"\n[serial]\nmode = "terminal"\n' >"$tmp/nobody/vm.toml"
    chmod 644 "$tmp/nobody/vm.toml" "$tmp/nobody/crash.elf"
    OUT=$(cd "$tmp/nobody" && timeout 60 setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps=-all --bounding-set=-all \
        ./swiftvmm run vm.toml --allow-pvm --timeout 20s --kvm fd:9 9<>/dev/kvm </dev/null 2>&1); ST=$?
    [ $ST -eq 122 ] && echo "$OUT" | grep -q "triple fault on vCPU 0" && echo "$OUT" | grep -q "privileges: uid 65534 (euid 65534) held no capability" \
        && pass passed-kvm-descriptor-as-nobody || fail passed-kvm-descriptor-as-nobody "status $ST"
else
    echo "cli: SKIP passed-kvm-descriptor-as-nobody: needs root and setpriv to become nobody"
fi
run run configs/smoke.toml --kvm fd:9
[ $ST -eq 70 ] && echo "$OUT" | grep -q "cannot open fd:9: descriptor 9 is not open" && pass passed-descriptor-not-open || fail passed-descriptor-not-open "status $ST"
run run configs/smoke.toml --kvm fd:1
[ $ST -eq 64 ] && echo "$OUT" | grep -q "standard streams" && pass passed-descriptor-stdio-refused || fail passed-descriptor-stdio-refused "status $ST"

# `devices` lists host PCI devices; with no IOMMU it says nothing can be assigned, and exits 0.
run devices
if [ $ST -eq 0 ] && { [ -d /sys/class/iommu ] && ls /sys/kernel/iommu_groups/* >/dev/null 2>&1 || echo "$OUT" | grep -q "no IOMMU groups"; }; then pass devices-command; else fail devices-command "status $ST"; fi
run devices --json
[ $ST -eq 0 ] && echo "$OUT" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert isinstance(d["devices"], list)' && pass devices-json || fail devices-json "status $ST"

# On KVM-PVM hosts (ours) run must fail fast with an explanation, not hang.
if [ -d /sys/module/kvm_pvm ] && [ ! -d /sys/module/kvm_intel ] && [ ! -d /sys/module/kvm_amd ]; then
    t0=$(date +%s%N)
    run run configs/smoke.toml
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if [ $ST -eq 69 ] && echo "$OUT" | grep -q "kvm_pvm" && [ $ms -lt 10000 ]; then pass "pvm-host-fails-fast (${ms} ms)"; else fail pvm-host-fails-fast "status $ST after ${ms} ms"; fi
elif [ ! -e /dev/kvm ]; then
    run run configs/smoke.toml
    [ $ST -eq 69 ] && echo "$OUT" | grep -q "/dev/kvm" && pass no-kvm-explained || fail no-kvm-explained "status $ST"
else
    echo "cli: SKIP pvm-host-fails-fast: this host's KVM is not KVM-PVM (guests are booted by the lab tests and can be booted here too)"
fi

# The release binary is self-contained (scripts/install): ldd names no library of the Swift
# toolchain and none it cannot find, and with the toolchain's directory hidden (an empty
# tmpfs over it, in a mount namespace of its own) a copy still runs and checks a config.
case $BIN in
    */.build/debug/*|*/.build/release/*)
        echo "cli: SKIP release-binary-self-contained: $BIN is a build product, not the installed binary (scripts/install; scripts/test runs these tests on it)" ;;
    *)
        toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")
        libs=$(ldd "$BIN" 2>&1)
        if echo "$libs" | grep -qF -e "$toolchain/" -e "not found" -e "libswift" -e "libFoundation"; then
            OUT=$libs; fail release-binary-self-contained "ldd names toolchain libraries"
        elif nm "$BIN" 2>/dev/null | grep -q " icudt[0-9]*_dat$"; then
            OUT=""; fail release-binary-self-contained "ICU's data is linked in: something uses the full Foundation, not FoundationEssentials"
        elif [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
            cp "$BIN" "$tmp/swiftvmm-copy"
            OUT=$(cd "$REPO" && unshare -m sh -c 'mount -t tmpfs none "$1" && ls -A "$1" | wc -l && "$2" --version && "$2" check configs/smoke.toml' sh "$toolchain" "$tmp/swiftvmm-copy" 2>&1); ST=$?
            if [ $ST -eq 0 ] && [ "$(echo "$OUT" | head -n 1)" = 0 ] && echo "$OUT" | grep -q "configs/smoke.toml: ok"; then
                pass "release-binary-self-contained ($(echo "$libs" | awk '{ print $1 }' | grep -v vdso | sed 's,.*/,,' | tr '\n' ' ')without $toolchain)"
            else
                fail release-binary-self-contained "the copy did not run with $toolchain hidden (status $ST)"
            fi
        else
            OUT=$libs; pass "release-binary-self-contained (ldd only: hiding $toolchain needs root and unshare)"
        fi ;;
esac

echo "cli: $P passed, $F failed"
[ $F -eq 0 ]
