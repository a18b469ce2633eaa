#!/usr/bin/env bash
# Install the Debian/Ubuntu packages PlateGate's demo, tests and tools need, if missing.
#   mosquitto: the MQTT broker the demo and the tests start on free ports
#   ffmpeg: video encoding for replay clips; tesseract-ocr: the OCR baseline in benchmarks
#   fonts-*: typefaces for the synthetic plate generator; python3-venv: the virtualenv
#   gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-*: the real RTSP server the capture tests
#     stream clips from (run with the system python3; ffmpeg can push RTSP but not serve it)
#   systemd: systemd-analyze (verify and security of the units); util-linux: unshare; strace: the
#   syscalls the agent makes, checked against the unit's filter (tests/test_install.py)
#   postgresql: the server the receiver's PostgreSQL tests and benchmark start in a temp dir
#   picocom: a real terminal program, to test that a person can use the serial console without our client
set -euo pipefail
PACKAGES=(mosquitto mosquitto-clients ffmpeg tesseract-ocr openssl python3-venv systemd util-linux strace
          postgresql picocom
          fonts-dejavu-core fonts-liberation2 fonts-roadgeek fonts-opendin
          fonts-roboto-unhinted fonts-open-sans fonts-croscore fonts-freefont-ttf
          fonts-adf-switzera fonts-adf-gillius fonts-clear-sans fonts-go
          fonts-league-spartan fonts-b612 fonts-jura
          gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good
          gstreamer1.0-plugins-ugly gstreamer1.0-libav)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
