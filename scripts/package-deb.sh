#!/usr/bin/env bash
# Build the voicecare Debian package from an already built binary, with
# Debian's own dpkg-deb (no extra build tool, no second compile).
#
#   scripts/package-deb.sh [release|debug]
#
#   VOICECARE_BIN      the binary to package (default: target/<profile>/voicecare)
#   VOICECARE_DEB_DIR  where to write the .deb (default: target/debian)
#
# Prints the path of the package on its last line. Sources of everything but
# the binary and the flows are in packaging/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-release}"
bin="${VOICECARE_BIN:-target/$profile/voicecare}"
out="${VOICECARE_DEB_DIR:-target/debian}"
if [ ! -x "$bin" ]; then
    echo "package-deb.sh: $bin not found; build it first (cargo build --release -p voicecare) or set VOICECARE_BIN" >&2
    exit 1
fi
version="$("$bin" --version | awk '{print $2}')"
arch="$(dpkg --print-architecture)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps wants the Debian source layout: debian/control, debian/<package>/.
root="$work/debian/voicecare"
mkdir -p "$root/DEBIAN"
printf 'Source: voicecare\n\nPackage: voicecare\nArchitecture: any\n' > "$work/debian/control"

# Debug information out, symbols kept: backtraces still name functions, and
# the debug build shrinks from ~150 MB to ~80 MB.
install -d "$root/usr/bin"
strip --strip-debug -o "$root/usr/bin/voicecare" "$bin"
chmod 0755 "$root/usr/bin/voicecare"
install -d "$root/usr/share/voicecare/ivr-flows"
install -m 0644 ivr-flows/*.toml "$root/usr/share/voicecare/ivr-flows/"
install -m 0755 scripts/install-model.sh "$root/usr/share/voicecare/install-model.sh"
install -D -m 0644 packaging/debian/voicecare.service "$root/lib/systemd/system/voicecare.service"
install -D -m 0644 packaging/debian/voicecare.toml "$root/etc/voicecare/voicecare.toml"
install -D -m 0644 packaging/voicecare.toml "$root/usr/share/doc/voicecare/examples/voicecare.toml"
install -m 0644 packaging/debian/README.Debian "$root/usr/share/doc/voicecare/README.Debian"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: voicecare"
    echo "Source: https://github.com/voicecare/voicecare"
    echo
    echo "Files: *"
    echo "Copyright: the voicecare contributors"
    echo "License: Apache-2.0 or MIT"
    echo " See /usr/share/common-licenses/Apache-2.0 and the MIT text below."
    echo " ."
    sed -e 's/^$/./' -e 's/^/ /' LICENSE-MIT
} > "$root/usr/share/doc/voicecare/copyright"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
echo /etc/voicecare/voicecare.toml > "$root/DEBIAN/conffiles"

# Shared libraries the binary links (libc, libstdc++, ALSA, ...), with the
# minimum versions their symbols need.
if shlibs="$(cd "$work" && dpkg-shlibdeps -O -e debian/voicecare/usr/bin/voicecare 2>"$work/shlibdeps.log")"; then
    shlibs="${shlibs#shlibs:Depends=}"
else
    cat "$work/shlibdeps.log" >&2
    echo "package-deb.sh: dpkg-shlibdeps failed (apt-get install dpkg-dev)" >&2
    exit 1
fi

# PostgreSQL server binaries (initdb, postgres) for the embedded cluster;
# espeak-ng speaks the prompts; adduser for the service's user.
cat > "$root/DEBIAN/control" <<CONTROL
Package: voicecare
Version: $version
Architecture: $arch
Maintainer: voicecare contributors <voicecare@users.noreply.github.com>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $shlibs, postgresql | postgresql-15, espeak-ng, adduser
Suggests: python3-pip
Section: net
Priority: optional
Homepage: https://github.com/voicecare/voicecare
Description: self-hosted voice-care call-centre engine
 voicecare rings enrolled elders for a daily check-in, talks and listens
 through IVR flows in Mandarin and English, transcribes replies offline with
 whisper, flags signs of distress and puts those calls in front of human
 operators. This package runs it as the voicecare.service systemd unit.
CONTROL

mkdir -p "$out"
deb="$out/voicecare_${version}_${arch}.deb"
# gzip: a few seconds for the ~80 MB binary where xz takes over half a minute.
dpkg-deb --root-owner-group -Zgzip -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
