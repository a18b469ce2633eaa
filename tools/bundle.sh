#!/usr/bin/env bash
# Build the offline install bundle for one target: this Python version and this architecture.
#
#   tools/bundle.sh [--out DIR]        (make bundle; DIR defaults to dist/)
#
# Writes DIR/plategate-VERSION-cpXY-ARCH.tar.gz, which holds
#   install.sh                    tools/install.sh: installs from wheels/ with no network
#   wheels/                       the project's wheel and a wheel for every dependency
#   systemd/                      the units, sysusers.d and tmpfiles.d files
#   README.md, BUNDLE, SHA256SUMS what it is (version, python tag, arch) and the wheels' hashes
# and, beside it, the project's sdist and wheel, and plategate_VERSION_ARCH.deb when this machine
# can build it (dpkg-deb, and a Debian /usr/bin/python3 of the same version). On the unit:
#   tar xzf plategate-*.tar.gz && sudo plategate-*/install.sh
# The build machine needs the index (or pip's cache); the unit needs nothing but python3-venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/dist"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bundle.sh: unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# sdist first, then the wheel built from it: the wheel can only carry what the sdist carries.
"$PY" -m build --outdir "$work/dist" "$ROOT" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
wheel="$(ls "$work"/dist/plategate-*.whl)"
version="$(basename "$wheel" | cut -d- -f2)"
tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')"
arch="$(uname -m)"
name="plategate-$version-$tag-$arch"
stage="$work/$name"

mkdir -p "$stage/wheels" "$stage/systemd"
cp "$wheel" "$stage/wheels/"
# Every dependency as a wheel for this interpreter and machine (pip's cache avoids a second download).
"$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --dest "$stage/wheels" "$wheel"
cp "$ROOT"/systemd/plategate.service "$ROOT"/systemd/plategate-console@.service \
   "$ROOT"/systemd/plategate.sysusers "$ROOT"/systemd/plategate.tmpfiles "$stage/systemd/"
install -m 0755 "$ROOT/tools/install.sh" "$stage/install.sh"
cp "$ROOT/README.md" "$stage/README.md"
printf 'version=%s\npython=%s\narch=%s\n' "$version" "$tag" "$arch" >"$stage/BUNDLE"
(cd "$stage" && sha256sum wheels/*.whl >SHA256SUMS)

tar -C "$work" -cf - "$name" | gzip -1 >"$OUT/$name.tar.gz.part"
mv "$OUT/$name.tar.gz.part" "$OUT/$name.tar.gz"
cp "$work"/dist/* "$OUT/"

# The same content as a .deb, when this machine can build one that works on a Debian unit: the
# venv is made by Debian's /usr/bin/python3 (the venv links to it), of the bundle's version.
debarch="$(dpkg --print-architecture 2>/dev/null || true)"
if command -v dpkg-deb >/dev/null && [ -n "$debarch" ] && [ -x /usr/bin/python3 ] \
   && [ "$(/usr/bin/python3 -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')" = "$tag" ]; then
  debroot="$work/deb"
  PYTHON=/usr/bin/python3 "$stage/install.sh" --destdir "$debroot" --files-only --layout package >/dev/null
  install -d -m 0755 "$debroot/DEBIAN"
  install -m 0755 "$ROOT"/tools/deb/postinst "$ROOT"/tools/deb/prerm "$ROOT"/tools/deb/postrm "$debroot/DEBIAN/"
  minor="${tag#cp3}"
  cat >"$debroot/DEBIAN/control" <<CONTROL
Package: plategate
Version: $version
Architecture: $debarch
Maintainer: PlateGate project <plategate@example.invalid>
Depends: python3 (>= 3.$minor), python3 (<< 3.$((minor + 1))), systemd
Section: misc
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$debroot" | cut -f1)
Description: policy-enforcing licence-plate camera agent
 Reads plates on the unit with its own ONNX models and applies the department's
 signed sharing policy before anything leaves it. Installs into /opt/plategate;
 the postinst creates the plategate user, the default config and the unit key.
CONTROL
  dpkg-deb --root-owner-group -Zgzip -z1 --build "$debroot" "$OUT/plategate_${version}_${debarch}.deb" >/dev/null
else
  echo "bundle.sh: no .deb (needs dpkg-deb and /usr/bin/python3 of version $tag)" >&2
fi
echo "$OUT/$name.tar.gz"
