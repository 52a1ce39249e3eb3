#!/usr/bin/env bash
# Prepares this Linux machine to build blit.exe and run it under Wine:
#   - installs mingw-w64 and wine64 (apt), and the Rust target x86_64-pc-windows-gnu;
#   - builds the ProcessPrng shim DLL (see processprng.c) and installs it in the Wine prefix;
#   - builds blit.exe into $CARGO_TARGET_DIR (default target/)/x86_64-pc-windows-gnu/release.
# Afterwards, scripts/wine/blit runs that blit.exe under Wine with the right settings.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
export CARGO_TARGET_DIR="$target"
export WINEPREFIX="${WINEPREFIX:-$target/wine-prefix}"
export WINEDEBUG=-all

if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || ! command -v wine >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 wine64 >/dev/null
fi
rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1

mkdir -p "$target/wine"
dll="$target/wine/bcryptprimitives.dll"
x86_64-w64-mingw32-gcc -O2 -shared -o "$dll" "$here/processprng.c" -ladvapi32

if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
    wineboot -i >/dev/null 2>&1 || true
    wineserver -w || true
fi
cp "$dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"

(cd "$repo" && cargo build --release --target x86_64-pc-windows-gnu -p blit-cli)
echo "blit.exe: $target/x86_64-pc-windows-gnu/release/blit.exe"
