#!/usr/bin/env bash
# Builds hearth-setup.exe, Hearth's Windows installer (NSIS, hearth.nsi), from the cross-built
# programs:  scripts/windows/installer.sh [--fast] <folder with the .exe files> <setup.exe to write>
# --fast packs without compression (the test command's installer: seconds instead of minutes).
# The programs are packed without their debug information (a debug build's is most of its size).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fast=()
if [ "${1:-}" = "--fast" ]; then
  fast=(-DFAST)
  shift
fi
programs="$(cd "$1" && pwd)"
out="$(realpath -m "$2")"
version="$(sed -n 's/^version = "\([0-9.]*\)"$/\1/p' "$here/../../Cargo.toml" | head -1)"
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
for program in hearth-app hearth-tray hearth-node hearth-models; do
  x86_64-w64-mingw32-strip --strip-debug -o "$staging/$program.exe" "$programs/$program.exe"
done
if [ -f "$programs/WebView2Loader.dll" ]; then
  cp "$programs/WebView2Loader.dll" "$staging/"
fi
makensis -V2 "${fast[@]}" -DVERSION="$version" -DPROGRAMS="$staging" -DOUTFILE="$out" "$here/hearth.nsi"
