#!/usr/bin/env bash
# Debian packages the tests and the sandbox run for real: the router (haproxy), DNS for the
# headless-Service discovery (dnsmasq), Prometheus/promtool, and the Python the Triton
# Python-backend stub links against (libpython3.11 + numpy for model code).
set -euo pipefail
packages=(haproxy dnsmasq-base prometheus libpython3.11 python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # The packaged services must not start and hold the ports we want: policy-rc.d refuses them.
  printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee /usr/sbin/policy-rc.d >/dev/null
  $sudo_cmd chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $sudo_cmd rm -f /usr/sbin/policy-rc.d
fi
