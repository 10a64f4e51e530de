# shellcheck shell=bash
# Shared helpers for scripts/deps, scripts/assets and scripts/lab. Source it; do not run it.

# Repository root (this file is <repo>/scripts/lib/common.sh) and the asset cache.
SWIFTVMM_REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
SWIFTVMM_CACHE=${SWIFTVMM_CACHE:-$SWIFTVMM_REPO/.cache}
# The prebuilt lab kernel in the team's shared folder, used as a cache when present.
SWIFTVMM_SHARED=${SWIFTVMM_SHARED:-$SWIFTVMM_REPO/../shared}

PROG=${PROG:-$(basename -- "$0")}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 ||
            die "'$c' not found; run scripts/deps first (or see scripts/README.md)"
    done
}

# Run as root: directly when we are root, through sudo otherwise.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        die "need root to run: $*  (not root and no sudo)"
    fi
}

# sha256 of a file, hex only.
sha256_of() { sha256sum -- "$1" | cut -d' ' -f1; }

# Replace a file atomically: write to "$1.tmp.$$" then call commit_file "$1".
commit_file() { mv -f -- "$1.tmp.$$" "$1"; }
