#!/bin/sh
# Install smiley-gateway as a systemd service on a Debian machine (Raspberry Pi
# class, arm64 or armhf). Safe to run again: it upgrades the code and the unit
# and keeps an existing configuration, registry and data.
set -eu

usage() {
    cat <<'USAGE'
Usage: deploy/install.sh [OPTIONS]

Installs smiley-gateway from this source tree:
  - the service user smiley-gateway (system user, no login, no home)
  - a virtual environment in PREFIX/venv with the gateway installed in it
  - /etc/smiley-gateway/gateway.toml and terminals.toml from the examples
    (only if they do not exist yet; an existing configuration is kept)
  - the systemd unit /etc/systemd/system/smiley-gateway.service
    (data in /var/lib/smiley-gateway through StateDirectory=)
  - the udev rule /etc/udev/rules.d/99-smiley-modem.rules (/dev/smiley-modem)
then checks the configuration and enables and starts the service.

Options:
  --prefix DIR    where the virtual environment goes (default /opt/smiley-gateway)
  --source DIR    the source tree or a wheel to install (default: this tree)
  --destdir DIR   install under DIR instead of / (packaging and tests): no user,
                  no systemctl, no udevadm
  --no-venv       do not create or update the virtual environment
  --no-start      install, but do not enable or start the service
  -h, --help      show this help

Needs: python3 (3.11 or newer) with the venv module (apt install python3-venv).
USAGE
}

here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/smiley-gateway
source_dir=$(dirname "$here")
destdir=
make_venv=1
start=1
user=smiley-gateway

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --source) source_dir=${2:?--source needs a directory or wheel}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --no-venv) make_venv=0; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'install.sh: %s\n' "$*"; }

etc="$destdir/etc/smiley-gateway"
unit_dir="$destdir/etc/systemd/system"
udev_dir="$destdir/etc/udev/rules.d"
venv="$destdir$prefix/venv"

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo deploy/install.sh), or with --destdir DIR" >&2
    exit 1
fi

# 1. The service user; the unit adds the dialout group for the modem.
if [ -z "$destdir" ]; then
    if id -u "$user" >/dev/null 2>&1; then
        say "user $user exists"
    else
        useradd --system --user-group --no-create-home --home-dir /var/lib/smiley-gateway \
            --shell /usr/sbin/nologin --comment "smiley-gateway service" "$user"
        say "created system user $user"
    fi
fi

# 2. The virtual environment, upgraded in place on a second run.
if [ "$make_venv" -eq 1 ]; then
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        say "created $venv"
    fi
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet --upgrade "$source_dir"
    say "installed smiley-gateway into $venv"
fi

# 3. Configuration from the examples, only where none exists yet.
install -d -m 0750 "$etc"
if [ -z "$destdir" ]; then
    chgrp "$user" "$etc"
fi
install_config() {  # $1 target, $2 source; never overwrites
    if [ -e "$1" ]; then
        say "kept existing $1"
        return
    fi
    install -m 0640 "$2" "$1"
    if [ -z "$destdir" ]; then
        chgrp "$user" "$1"
    fi
    say "wrote $1"
}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed -e 's|^data_dir = .*|data_dir = "/var/lib/smiley-gateway"    # the unit'"'"'s StateDirectory=|' \
    -e 's|^registry = .*|registry = "terminals.toml"|' \
    -e 's|^url = "sqlite:///.*|url = "sqlite:////var/lib/smiley-gateway/central.db"|' \
    -e 's|^log_format = .*|log_format = "json"                     # the journal takes JSON lines|' \
    "$here/gateway.example.toml" >"$tmp"
install_config "$etc/gateway.toml" "$tmp"
install_config "$etc/terminals.toml" "$here/terminals.example.toml"

# 4. The unit, pointed at this prefix; the udev rule for the modem.
install -d -m 0755 "$unit_dir" "$udev_dir"
sed "s|/opt/smiley-gateway|$prefix|g" "$here/smiley-gateway.service" >"$tmp"
install -m 0644 "$tmp" "$unit_dir/smiley-gateway.service"
install -m 0644 "$here/99-smiley-modem.rules" "$udev_dir/99-smiley-modem.rules"
say "installed $unit_dir/smiley-gateway.service and $udev_dir/99-smiley-modem.rules"

if [ -n "$destdir" ]; then
    say "done (under $destdir: nothing enabled or started)"
    exit 0
fi

if command -v udevadm >/dev/null 2>&1; then
    udevadm control --reload
    udevadm trigger --subsystem-match=tty --action=add
fi
systemctl daemon-reload

# 5. Check, then start. A configuration that does not pass is not started.
if ! "$prefix/venv/bin/smiley-gateway" check --offline --config "$etc/gateway.toml"; then
    echo "install.sh: fix $etc/gateway.toml, then: systemctl enable --now smiley-gateway" >&2
    exit 1
fi
if [ "$start" -eq 1 ]; then
    systemctl enable smiley-gateway.service
    systemctl restart smiley-gateway.service
    say "started; see: systemctl status smiley-gateway; smiley-gateway status --config $etc/gateway.toml"
else
    say "not started (--no-start): systemctl enable --now smiley-gateway"
fi
