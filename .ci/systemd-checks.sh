#!/usr/bin/env bash
# Checks the deployment side of assumed: the systemd units' sandbox score and
# syntax, the sysusers.d and tmpfiles.d files, the Debian package, and the
# CloudFormation template. Installs the tools it lacks, so it can run on a
# fresh machine, and can be run again at any time.
#
# The units are verified as the package ships them: the .deb is built and
# unpacked into a temporary root, and systemd-analyze verify reads the
# unpacked units with ExecStart= pointed at the unpacked binary, because
# verify insists that the command exists and /usr/bin/assumed is not
# installed here. Only that one path is rewritten, and the rewrite must hit
# exactly one line.
set -euo pipefail

cd "$(dirname "$0")/.."

# Exposure reported by `systemd-analyze security`, 0 (locked down) to 10.
# Hardened loopback daemons reach 1.1-1.5; the unit must stay in that band.
readonly MAX_EXPOSURE=1.5

readonly UNITS=(assumed.service assumed.socket assumed-tcp.socket)

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'systemd-checks: %s\n' "$*" >&2; exit 1; }

apt_updated=no
apt_install() {
    if [ "$apt_updated" = no ]; then
        apt-get update -qq
        apt_updated=yes
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

step "tools"
command -v systemd-analyze >/dev/null || apt_install systemd
command -v lintian >/dev/null || apt_install lintian
command -v dpkg-deb >/dev/null || apt_install dpkg
command -v cfn-lint >/dev/null || python3 -m pip install --quiet 'cfn-lint>=1,<2'
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb
echo "systemd $(systemd-analyze --version | awk 'NR==1 {print $2}')," \
    "$(lintian --version), cfn-lint $(cfn-lint --version | awk '{print $2}')," \
    "$(cargo deb --version)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "systemd-analyze security (limit $MAX_EXPOSURE)"
security_out=$(systemd-analyze security --offline=true --no-pager systemd/assumed.service 2>&1) ||
    fail "systemd-analyze security failed: $security_out"
exposure=$(printf '%s\n' "$security_out" |
    sed -n 's/.*Overall exposure level for assumed\.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "no exposure score in: $security_out"
printf '%s\n' "$security_out" | grep -v '✓' || true
echo "exposure score: $exposure"
awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e <= max) }' ||
    fail "exposure $exposure is above $MAX_EXPOSURE"

step "sysusers.d and tmpfiles.d, applied to an empty root"
root="$work/sysroot"
mkdir -p "$root/etc" "$root/run" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
cp systemd/sysusers.d/assumed.conf "$root/usr/lib/sysusers.d/"
cp systemd/tmpfiles.d/assumed.conf "$root/usr/lib/tmpfiles.d/"
systemd-sysusers --root="$root" assumed.conf
systemd-tmpfiles --root="$root" --create assumed.conf
uid() { awk -F: -v n="$1" '$1 == n {print $3}' "$root/etc/passwd"; }
gid() { awk -F: -v n="$1" '$1 == n {print $3}' "$root/etc/group"; }
expect_dir() {
    local got
    got=$(stat -c '%a %u:%g' "$root/$1")
    [ "$got" = "$2" ] || fail "/$1 is $got, expected $2"
    echo "/$1: $got"
}
expect_dir run/assumed "2750 $(uid assumed):$(gid assumed-clients)"
expect_dir etc/assumed "750 0:$(gid assumed)"

step "cargo deb"
cargo deb --output "$work/" 2>&1 | tail -n 3
deb=$(find "$work" -maxdepth 1 -name 'assumed_*.deb' | head -n 1)
[ -n "$deb" ] || fail "cargo deb produced no package"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb" | awk '{print $1, $6}'

step "lintian (fails on errors)"
lintian --fail-on error --tag-display-limit 0 "$deb"
echo "lintian: no errors"

step "systemd-analyze verify (fails on any output)"
unpacked="$work/unpacked"
dpkg-deb -x "$deb" "$unpacked"
unit_dir="$unpacked/usr/lib/systemd/system"
for unit in "${UNITS[@]}"; do
    [ -f "$unit_dir/$unit" ] || fail "the package lacks $unit"
    cmp -s "$unit_dir/$unit" "systemd/$unit" || fail "packaged $unit differs from systemd/$unit"
done
rewritten=$(grep -c '^ExecStart=/usr/bin/assumed ' "$unit_dir/assumed.service" || true)
[ "$rewritten" = 1 ] || fail "expected one ExecStart=/usr/bin/assumed line, found $rewritten"
sed -i "s|^ExecStart=/usr/bin/assumed |ExecStart=$unpacked/usr/bin/assumed |" "$unit_dir/assumed.service"
verify_out=$(cd "$unit_dir" && systemd-analyze verify "${UNITS[@]/#/$unit_dir/}" 2>&1) ||
    fail "systemd-analyze verify failed: $verify_out"
[ -z "$verify_out" ] || fail "systemd-analyze verify reported: $verify_out"
echo "verify: clean"

step "cfn-lint"
cfn-lint deploy/cloudformation.yaml
echo "cfn-lint: clean"

printf '\nsystemd-checks: all passed (exposure %s)\n' "$exposure"
