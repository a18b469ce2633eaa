#!/usr/bin/env bash
# Install, upgrade or remove PlateGate on a unit (docs/install.md). Every step is idempotent.
#
#   install.sh [--destdir DIR] [--wheels DIR] [--user NAME] [--no-start]   install (or repair)
#   install.sh --upgrade [...]                 replace the software, keep config, keys and state
#   install.sh --uninstall [--purge]           remove the software; --purge also config and state
#   install.sh --files-only | --configure      the two halves of an install (a .deb ships the
#                                              files and runs --configure from its postinst)
#
# From a bundle (tools/bundle.sh: install.sh next to wheels/ and systemd/) it installs with no
# network: pip --no-index --find-links wheels/. From a checkout it installs the checkout itself
# (pip may fetch dependencies from the index).
#
# What goes where (DESTDIR, default /, is a staging root for packaging and tests):
#   /opt/plategate/venv                        the agent's own virtualenv (replaced on upgrade)
#   /opt/plategate/bin/plategate               the stable command path the units run
#   /opt/plategate/lib/install.sh              this script (uninstall without the bundle)
#   /usr/local/bin/plategate                   the same, on the operator's PATH
#   /usr/local/lib/systemd/system/             plategate.service, plategate-console@.service
#   /usr/local/lib/sysusers.d/plategate.conf   the plategate user (groups video, dialout)
#   /usr/local/lib/tmpfiles.d/plategate.conf   /var/lib/plategate, 0700
#   /etc/plategate/plategate.toml              the default config, only when none exists
#   /etc/plategate/keys/unit.key, unit.pub     the unit's Ed25519 key, made once, never replaced
#   /var/lib/plategate                         state: outbox, audit log, installed policy (0700)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DESTDIR="${DESTDIR:-}"
ACTION=install
PURGE=0
START=1
PHASES="files configure"
LAYOUT=local
AGENT_USER=plategate
WHEELS=""
PYTHON="${PYTHON:-python3}"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) DESTDIR="${2:?--destdir needs a folder}"; shift ;;
    --destdir=*) DESTDIR="${1#*=}" ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
    --user) AGENT_USER="${2:?--user needs a name}"; shift ;;
    --upgrade) ACTION=upgrade ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    --no-start) START=0 ;;
    --files-only) PHASES="files" ;;
    --configure) PHASES="configure" ;;
    --layout) LAYOUT="${2:?--layout needs local or package}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done
[ "$PURGE" = 1 ] && [ "$ACTION" != uninstall ] && die "--purge goes with --uninstall"
[ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ] && die "installing on this machine needs root (sudo $0), or --destdir DIR"
if [ -n "$DESTDIR" ]; then
  mkdir -p "$DESTDIR"
  DESTDIR="$(cd "$DESTDIR" && pwd)"
fi

# Where the pieces come from: a bundle (wheels/ beside this script) or the checkout.
if [ -z "$WHEELS" ] && [ -d "$HERE/wheels" ]; then WHEELS="$HERE/wheels"; fi
if [ -d "$HERE/systemd" ]; then UNITS_SRC="$HERE/systemd"; DOC_SRC="$HERE/README.md"
else UNITS_SRC="$HERE/../systemd"; DOC_SRC="$HERE/../README.md"; fi

PREFIX=/opt/plategate
VENV="$PREFIX/venv"
case "$LAYOUT" in  # local: installed by this script; package: files owned by a .deb
  local) LIB=/usr/local/lib; BIN_LINK=/usr/local/bin/plategate ;;
  package) LIB=/usr/lib; BIN_LINK=/usr/bin/plategate ;;
  *) die "--layout is local or package, not $LAYOUT" ;;
esac
UNIT_DIR="$LIB/systemd/system"
SYSUSERS="$LIB/sysusers.d/plategate.conf"
TMPFILES="$LIB/tmpfiles.d/plategate.conf"
ETC=/etc/plategate
KEYS="$ETC/keys"
STATE=/var/lib/plategate
UNITS=(plategate.service plategate-console@.service)

# systemd is only driven on a live install of a host that runs it.
live_systemd() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }
user_exists() { getent passwd "$AGENT_USER" >/dev/null 2>&1; }
owned() {  # owned OWNER:GROUP MODE PATH: chown as root when the account exists (staging may lack it)
  chmod "$2" "$3"
  local user="${1%%:*}" group="${1##*:}"
  if [ "$(id -u)" = 0 ] && getent passwd "$user" >/dev/null 2>&1 && getent group "$group" >/dev/null 2>&1; then
    chown -h "$1" "$3"
  fi
}

check_bundle() {  # a bundle is for one Python and one architecture, and must arrive intact
  [ -f "$HERE/BUNDLE" ] || return 0
  local want have
  want="$(sed -n 's/^python=//p' "$HERE/BUNDLE")"
  have="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')"
  [ "$want" = "$have" ] || die "this bundle is for $want, but $PYTHON is $have (set PYTHON=python3.X or build a bundle on a $have machine)"
  want="$(sed -n 's/^arch=//p' "$HERE/BUNDLE")"
  [ "$want" = "$(uname -m)" ] || die "this bundle is for $want, this machine is $(uname -m)"
  (cd "$HERE" && sha256sum --check --quiet SHA256SUMS) || die "the bundle's wheels do not match SHA256SUMS"
}

make_user() {
  if [ -z "$DESTDIR" ] && [ "$AGENT_USER" = plategate ]; then
    if command -v systemd-sysusers >/dev/null; then
      systemd-sysusers plategate.conf  # found in either layout's sysusers.d
    elif ! user_exists; then
      useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin --user-group plategate
      usermod -a -G video,dialout plategate
    fi
  fi
}

make_venv() {
  # A new venv beside the old one, swapped in only once complete: a failed upgrade keeps the old.
  local target="$DESTDIR$VENV" fresh="$DESTDIR$VENV.new"
  rm -rf "$fresh"
  mkdir -p "$DESTDIR$PREFIX"
  "$PYTHON" -m venv "$fresh"
  local pip=("$fresh/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location)
  if [ -n "$WHEELS" ]; then
    # Offline: only the wheels we carry; the host's pip config (indexes, find-links) is ignored.
    PIP_CONFIG_FILE=/dev/null "${pip[@]}" --no-index --find-links "$WHEELS" plategate
  else
    "${pip[@]}" "$HERE/.."
  fi
  # Scripts must name the venv where it will live (not venv.new, nor the staging root).
  { grep -rlI --null -- "$fresh" "$fresh/bin" "$fresh/pyvenv.cfg" || true; } | xargs -0 -r sed -i "s|$fresh|$VENV|g"
  rm -rf "$target.old"
  if [ -e "$target" ]; then mv "$target" "$target.old"; fi
  mv "$fresh" "$target"
  rm -rf "$target.old"
  mkdir -p "$DESTDIR$PREFIX/bin" "$(dirname "$DESTDIR$BIN_LINK")"
  ln -sfn ../venv/bin/plategate "$DESTDIR$PREFIX/bin/plategate"
  ln -sfn "$PREFIX/bin/plategate" "$DESTDIR$BIN_LINK"
  install -m 0644 "$DOC_SRC" "$DESTDIR$PREFIX/README.md"
  # This script, for --uninstall once the bundle is gone and for a .deb's postinst (--configure).
  [ "$0" -ef "$DESTDIR$PREFIX/lib/install.sh" ] || install -D -m 0755 "$0" "$DESTDIR$PREFIX/lib/install.sh"
}

agent_python() { "$DESTDIR$VENV/bin/python" "$@"; }

install_units() {
  for unit in "${UNITS[@]}"; do
    install -D -m 0644 "$UNITS_SRC/$unit" "$DESTDIR$UNIT_DIR/$unit"
  done
  install -D -m 0644 "$UNITS_SRC/plategate.sysusers" "$DESTDIR$SYSUSERS"
  install -D -m 0644 "$UNITS_SRC/plategate.tmpfiles" "$DESTDIR$TMPFILES"
}

install_config() {
  install -d -m 0770 "$DESTDIR$ETC"
  owned "root:$AGENT_USER" 0770 "$DESTDIR$ETC"
  if [ ! -e "$DESTDIR$ETC/plategate.toml" ]; then
    install -m 0660 "$(agent_python -c 'from agent.resources import default_config_path; print(default_config_path())')" \
      "$DESTDIR$ETC/plategate.toml"
    owned "root:$AGENT_USER" 0660 "$DESTDIR$ETC/plategate.toml"
    echo "installed the default config $ETC/plategate.toml (edit the source and policy sections)"
  fi
  install -d -m 0750 "$DESTDIR$KEYS"
  owned "root:$AGENT_USER" 0750 "$DESTDIR$KEYS"
  install -d -m 0700 "$DESTDIR$STATE"
  owned "$AGENT_USER:$AGENT_USER" 0700 "$DESTDIR$STATE"
}

unit_key() {
  local key="$DESTDIR$KEYS/unit.key"
  if [ ! -e "$key" ]; then
    (umask 077; agent_python -m agent keygen --out "$DESTDIR$KEYS/unit" >/dev/null)
    echo "generated the unit key $KEYS/unit.key"
  elif [ ! -e "$DESTDIR$KEYS/unit.pub" ]; then  # the public half can always be made again
    agent_python -c 'import sys; from pathlib import Path
from agent.policy.signing import load_private_key, public_pem
Path(sys.argv[2]).write_bytes(public_pem(load_private_key(sys.argv[1]).public_key()))' "$key" "$DESTDIR$KEYS/unit.pub"
  fi
  owned "$AGENT_USER:$AGENT_USER" 0600 "$key"
  owned root:root 0644 "$DESTDIR$KEYS/unit.pub"
  local kid
  kid="$(agent_python -c 'import sys
from agent.policy.signing import key_id, load_public_key
print(key_id(load_public_key(sys.argv[1])))' "$DESTDIR$KEYS/unit.pub")"
  echo "unit key id: $kid"
  echo "unit public key ($KEYS/unit.pub), register it with the department:"
  cat "$DESTDIR$KEYS/unit.pub"
}

start_service() {
  if ! live_systemd; then
    [ -z "$DESTDIR" ] && echo "systemd is not running: start the agent with $PREFIX/bin/plategate run --config $ETC/plategate.toml"
    return 0
  fi
  systemd-tmpfiles --create plategate.conf || true
  systemctl daemon-reload
  systemctl enable plategate.service
  [ "$START" = 1 ] || return 0
  if ! systemctl restart plategate.service; then
    echo "plategate.service did not start: see journalctl -u plategate (a fresh unit needs its" \
         "department key, policy and camera in $ETC/plategate.toml first)" >&2
  fi
  systemctl try-restart 'plategate-console@*.service' || true  # consoles run the new software too
}

stop_service() {
  if live_systemd && systemctl is-active --quiet plategate.service; then systemctl stop plategate.service; fi
}

uninstall() {
  if live_systemd; then
    systemctl disable --now plategate.service 2>/dev/null || true
    systemctl stop 'plategate-console@*.service' 2>/dev/null || true
  fi
  for unit in "${UNITS[@]}"; do rm -f "$DESTDIR$UNIT_DIR/$unit"; done
  rm -f "$DESTDIR$SYSUSERS" "$DESTDIR$TMPFILES" "$DESTDIR$BIN_LINK"
  rm -rf "$DESTDIR$PREFIX"
  live_systemd && systemctl daemon-reload
  if [ "$PURGE" = 1 ]; then
    rm -rf "$DESTDIR$ETC" "$DESTDIR$STATE"
    echo "removed PlateGate, its config, keys and state"
  else
    echo "removed PlateGate; kept $ETC (config, keys) and $STATE (outbox, audit log): --purge removes them"
  fi
}

case "$ACTION" in
  uninstall) uninstall ;;
  install|upgrade)
    if [ "$ACTION" = upgrade ] && [ ! -x "$DESTDIR$VENV/bin/python" ]; then
      die "nothing to upgrade at ${DESTDIR}$PREFIX: install first"
    fi
    if [[ " $PHASES " == *" files "* ]]; then
      [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ] && die "no wheel folder at $WHEELS"
      check_bundle
      stop_service
      make_venv
      install_units
    fi
    if [[ " $PHASES " == *" configure "* ]]; then
      [ -x "$DESTDIR$VENV/bin/python" ] || die "no PlateGate software at ${DESTDIR}$PREFIX to configure"
      make_user
      install_config
      unit_key
      start_service
    fi
    echo "PlateGate $(agent_python -c 'from importlib.metadata import version; print(version("plategate"))') installed in ${DESTDIR}$PREFIX"
    ;;
esac
