# Shared by the scripts in this folder: paths, tools on PATH, logging.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools built or downloaded from registries live outside the clone, so a fresh
# clone on the same machine does not rebuild them.
export DCP_TOOLS="${DCP_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/dcp/tools}"
export PATH="$DCP_TOOLS/bin:$DCP_TOOLS/node_modules/.bin:$HOME/.cargo/bin:$PATH"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export DCP_UI_DIR="${DCP_UI_DIR:-$TARGET_DIR/ui}"
export DCP_PLUGIN_DIR="${DCP_PLUGIN_DIR:-$TARGET_DIR/plugins}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Runs a command as root when we are not root already (developers' machines).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"; return 1; fi
}

APT_UPDATED=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
