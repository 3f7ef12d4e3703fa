#!/usr/bin/env bash
# Installs the Debian packages kboost-rt needs, only those missing (so a
# machine that has them needs neither root nor network). Arguments name more
# packages (`make test-aarch64` adds its cross compiler and qemu).
set -euo pipefail

# jackd2: a real audio/MIDI server (dummy backend) for the live tests;
# portaudio19-dev: the native audio stream and PyAudio (PortAudio with its JACK host API).
PACKAGES=(g++ make jackd2 portaudio19-dev "$@")

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
