#!/usr/bin/env bash
# Installs every Debian package trit needs to build, test and run its Vulkan backend, and the
# npm packages of its tests (pinned by their package-lock.json files). Idempotent: apt-get
# skips what is already there, npm ci leaves the locked versions.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  clang-format
  clang libclang-rt-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libpcre2-dev zlib1g-dev
  libvulkan-dev glslc spirv-tools mesa-vulkan-drivers vulkan-tools
  libopenmpi-dev openmpi-bin
  python3
)
# Node.js and npm: the server's tests drive it with the official openai client. A machine
# with its own Node (20 or later) keeps it.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: all packages present"

root="$(cd "$(dirname "$0")/.." && pwd)"
npm ci --prefix "$root/tests/serve/openai_client" --no-audit --no-fund --loglevel=error
# The delegation bridge (`trit peer`): hyperdht and its dependencies, as locked.
npm ci --prefix "$root/peer" --no-audit --no-fund --loglevel=error
echo "setup: npm packages of the tests and of peer/ installed"
