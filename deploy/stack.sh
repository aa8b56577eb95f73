#!/usr/bin/env bash
# Landlord's local stack: `deploy/stack.sh up|down|status`.
# Everything binds to 127.0.0.1 on Landlord's own ports and keeps its state
# under $LANDLORD_HOME (default <repo>/.stack): the machine's own servers on
# the default ports are never touched.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home=${LANDLORD_HOME:-$repo/.stack}
[ -f "$home/env" ] || "$repo/deploy/install.sh" >/dev/null
# shellcheck source=/dev/null
. "$home/env"
home=$LANDLORD_HOME

nats_port=${LANDLORD_NATS_PORT:-14222}
nats_monitor_port=${LANDLORD_NATS_MONITOR_PORT:-18222}
pg_port=${LANDLORD_PG_PORT:-15432}
s3_port=${LANDLORD_S3_PORT:-19000}
smtp_port=${LANDLORD_SMTP_PORT:-12525}
log=$home/log
mkdir -p "$log"

# Polls a command until it succeeds (at most $2 seconds).
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$what did not become ready within ${seconds}s" >&2
      return 1
    fi
    sleep 0.1
  done
}

http_ok() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# PostgreSQL refuses to run as root: as root, run its tools as `postgres`.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

nats_up() {
  local pidfile=$home/nats.pid
  if pid_alive "$pidfile"; then
    echo "nats        already running (pid $(cat "$pidfile"))"
    return
  fi
  mkdir -p "$home/nats"
  write_nats_passwords
  # nats.conf includes accounts.conf, whose users' passwords are variables
  # the server reads from its environment: only the server gets them all.
  (
    set -a
    # shellcheck source=/dev/null
    . "$nats_passwords"
    set +a
    exec nohup "$LANDLORD_NATS_SERVER" -c "$repo/deploy/nats/nats.conf" -a 127.0.0.1 -p "$nats_port" \
      -m "$nats_monitor_port" -sd "$home/nats" -P "$pidfile" >>"$log/nats.log" 2>&1
  ) &
  wait_for "nats-server" 20 http_ok "http://127.0.0.1:$nats_monitor_port/healthz?js-enabled-only=true"
  echo "nats        nats://127.0.0.1:$nats_port (monitoring http://127.0.0.1:$nats_monitor_port)"
}

# The bus users of deploy/nats/accounts.conf and their passwords: random,
# made at the first start and kept in $home/nats/passwords.env (mode 600) —
# plaintext, fine for a stack on one's own machine and nowhere else.
nats_users=(orchestrator gateway idp database storage notification operator platform)
nats_passwords=$home/nats/passwords.env
write_nats_passwords() {
  local user var
  (
    umask 077
    mkdir -p "$home/nats"
    touch "$nats_passwords"
    for user in "${nats_users[@]}"; do
      var=LANDLORD_NATS_PASSWORD_${user^^}
      grep -q "^$var=" "$nats_passwords" || echo "$var=$(python3 -c 'import secrets; print(secrets.token_hex(24))')" >>"$nats_passwords"
    done
  )
}

# Runs a command as the bus user $1 (the runtime reads LANDLORD_NATS_USER
# and LANDLORD_NATS_PASSWORD; its inbox prefix follows, _INBOX_<user>).
nats_as() {
  local user=$1; shift
  write_nats_passwords
  local password
  password=$(sed -n "s/^LANDLORD_NATS_PASSWORD_${user^^}=//p" "$nats_passwords")
  LANDLORD_NATS_USER=$user LANDLORD_NATS_PASSWORD=$password "$@"
}

nats_down() {
  local pidfile=$home/nats.pid
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill -TERM "$pid"
    wait_for "nats-server exit" 20 bash -c "! kill -0 $pid"
    echo "nats        stopped"
  fi
  rm -f "$pidfile"
}

# The superuser's password, generated once and kept in the state folder
# (mode 600). TCP connections check passwords (scram-sha-256); only the
# superuser's Unix socket, in the data folder, is trusted — which is how
# this script itself talks to the server (pg_sql).
pg_password_file=$home/postgres.password
pg_password() {
  if [ ! -s "$pg_password_file" ]; then
    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$pg_password_file")
  fi
  cat "$pg_password_file"
}
pg_sql() { psql -h "$home/postgres" -p "$pg_port" -U postgres "$@"; }
# A superuser URL for a database, with the password (URL-safe characters).
pg_url() { echo "postgres://postgres:$(pg_password)@127.0.0.1:$pg_port/$1"; }

pg_hba() {
  as_pg tee "$1/pg_hba.conf" >/dev/null <<'HBA'
# Landlord's local stack (deploy/stack.sh rewrites this file on every start):
# the superuser over the Unix socket without a password; every TCP
# connection with a SCRAM-SHA-256 password, so a tenant role's password is
# checked as it would be in a deployment.
local all postgres trust
host all all 127.0.0.1/32 scram-sha-256
HBA
}

pg_up() {
  local data=$home/postgres
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres: "$data"
      chmod o+x "$home"
    fi
    as_pg "$LANDLORD_PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
      >>"$log/postgres.log" 2>&1
  fi
  # Also for a stack made when the server trusted every loopback connection.
  pg_hba "$data"
  if as_pg "$LANDLORD_PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$LANDLORD_PG_BIN/pg_ctl" -D "$data" reload >/dev/null
    echo "postgres    already running"
  else
    [ "$(id -u)" -eq 0 ] && { touch "$log/postgres.log"; chown postgres: "$log/postgres.log"; }
    as_pg "$LANDLORD_PG_BIN/pg_ctl" -D "$data" -l "$log/postgres.log" -w -t 30 start \
      -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $data" >/dev/null
  fi
  # On stdin, not the command line (which ps shows); the same value each time.
  pg_sql -d postgres -q <<<"ALTER ROLE postgres PASSWORD '$(pg_password)'"
  if ! pg_sql -d postgres -tAc "select 1 from pg_database where datname = 'landlord'" | grep -q 1; then
    pg_sql -d postgres -qc "create database landlord"
  fi
  echo "postgres    postgres://postgres:…@127.0.0.1:$pg_port/landlord (scram-sha-256 over TCP; the password is in $pg_password_file)"
}

pg_down() {
  local data=$home/postgres
  if [ -f "$data/PG_VERSION" ] && as_pg "$LANDLORD_PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$LANDLORD_PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo "postgres    stopped"
  fi
}

port_open() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"; }

# Starts a background server with a pidfile: name, port, command...
bg_up() {
  local name=$1 port=$2; shift 2
  local pidfile=$home/$name.pid
  if pid_alive "$pidfile"; then
    echo "$(printf '%-11s' "$name") already running (pid $(cat "$pidfile"))"
    return
  fi
  nohup "$@" >>"$log/$name.log" 2>&1 &
  echo $! >"$pidfile"
  wait_for "$name" 20 port_open "$port"
}

bg_down() {
  local pidfile=$home/$1.pid
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill -TERM "$pid"
    wait_for "$1 exit" 20 bash -c "! kill -0 $pid"
    echo "$(printf '%-11s' "$1") stopped"
  fi
  rm -f "$pidfile"
}

s3_up() {
  mkdir -p "$home/s3"
  bg_up s3 "$s3_port" "$LANDLORD_S3S_FS" --host 127.0.0.1 --port "$s3_port" \
    --access-key landlord --secret-key landlord-secret "$home/s3"
  echo "s3          http://127.0.0.1:$s3_port (s3s-fs, path-style; access key landlord / landlord-secret)"
}

smtp_up() {
  mkdir -p "$home/mail/tmp" "$home/mail/new" "$home/mail/cur"  # a Maildir
  bg_up smtp "$smtp_port" "$LANDLORD_HOME/venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$smtp_port" \
    -c aiosmtpd.handlers.Mailbox "$home/mail"
  echo "smtp        smtp://127.0.0.1:$smtp_port (aiosmtpd; every mail lands in $home/mail/new)"
}

# The services, their health ports, and the Keycloak stand-in.
services=(orchestrator idp database storage notification gateway)
api_port=${LANDLORD_API_PORT:-18100}
keycloak_port=${LANDLORD_KEYCLOAK_DOUBLE_PORT:-18080}
health_port() {
  case $1 in
    orchestrator) echo 18101 ;; idp) echo 18102 ;; database) echo 18103 ;;
    storage) echo 18104 ;; notification) echo 18105 ;; gateway) echo 18106 ;;
  esac
}
target=${CARGO_TARGET_DIR:-$repo/target}/debug

# Settings every service reads; the secrets key is made once and kept.
write_service_env() {
  local file=$home/services.env random='import base64, os; print(base64.b64encode(os.urandom(32)).decode())'
  (
    umask 077
    touch "$file"
    grep -q '^LANDLORD_SECRETS_KEY=' "$file" || echo "LANDLORD_SECRETS_KEY=$(python3 -c "$random")" >>"$file"
    grep -q '^LANDLORD_JWT_SECRET=' "$file" || echo "LANDLORD_JWT_SECRET=$(python3 -c "$random")" >>"$file"
    grep -q '^LANDLORD_CLERK_WEBHOOK_SECRET=' "$file" ||
      echo "LANDLORD_CLERK_WEBHOOK_SECRET=whsec_$(python3 -c "$random")" >>"$file"
  )
  # shellcheck source=/dev/null
  set -a; . "$file"; set +a
  export LANDLORD_NATS_URL=nats://127.0.0.1:$nats_port
  LANDLORD_DATABASE_URL=$(pg_url landlord)
  LANDLORD_TENANT_DATABASE_URL=$(pg_url landlord_tenants)
  export LANDLORD_DATABASE_URL LANDLORD_TENANT_DATABASE_URL
  # For psql and deploy/show-tenant.sh over TCP.
  PGPASSWORD=$(pg_password)
  export PGPASSWORD
  export LANDLORD_PLANS=$repo/deploy/plans.toml
  export LANDLORD_S3_ENDPOINT=http://127.0.0.1:$s3_port LANDLORD_S3_PATH_STYLE=true
  export AWS_ACCESS_KEY_ID=landlord AWS_SECRET_ACCESS_KEY=landlord-secret
  export LANDLORD_SMTP_URL=smtp://127.0.0.1:$smtp_port
  export LANDLORD_KEYCLOAK_SHARED_REALM=landlord
  if [ -n "${KEYCLOAK_URL:-}" ]; then
    export LANDLORD_KEYCLOAK_URL=$KEYCLOAK_URL
    [ -n "${KEYCLOAK_CLIENT_SECRET:-}" ] && export LANDLORD_KEYCLOAK_CLIENT_ID=${KEYCLOAK_CLIENT_ID:-landlord-idp} \
      LANDLORD_KEYCLOAK_CLIENT_SECRET=$KEYCLOAK_CLIENT_SECRET
    [ -n "${KEYCLOAK_ADMIN_PASSWORD:-}" ] && export LANDLORD_KEYCLOAK_USERNAME=${KEYCLOAK_ADMIN:-admin} \
      LANDLORD_KEYCLOAK_PASSWORD=$KEYCLOAK_ADMIN_PASSWORD
  else
    export LANDLORD_KEYCLOAK_URL=http://127.0.0.1:$keycloak_port
    export LANDLORD_KEYCLOAK_CLIENT_ID=landlord-idp LANDLORD_KEYCLOAK_CLIENT_SECRET=landlord-idp-secret
  fi
  export LANDLORD_LOGIN_URL=$LANDLORD_KEYCLOAK_URL/realms/tenant-{key}/account
  export LANDLORD_ADMIN_PORTAL_URL=$LANDLORD_KEYCLOAK_URL/admin/tenant-{key}/console/
  export LANDLORD_API_ADDR=127.0.0.1:$api_port
  export RUST_LOG=${RUST_LOG:-info}
}

services_up() {
  echo "building    the services (cargo build --bins)"
  (cd "$repo" && cargo build --quiet --workspace --bins)
  if ! pg_sql -d postgres -tAc "select 1 from pg_database where datname = 'landlord_tenants'" | grep -q 1; then
    pg_sql -d postgres -qc "create database landlord_tenants"
  fi
  write_service_env
  if [ -z "${KEYCLOAK_URL:-}" ]; then
    bg_up keycloak-double "$keycloak_port" "$target/keycloak-double" --port "$keycloak_port" --shared-realm landlord
    echo "keycloak    $LANDLORD_KEYCLOAK_URL — a CONTRACT DOUBLE of the Keycloak Admin API, not Keycloak (set KEYCLOAK_URL for a real one)"
  else
    echo "keycloak    $KEYCLOAK_URL (real Keycloak, from KEYCLOAK_URL)"
  fi
  local name port
  for name in "${services[@]}"; do
    port=$(health_port "$name")
    LANDLORD_HTTP_ADDR=127.0.0.1:$port nats_as "$name" bg_up "$name" "$port" "$target/landlord-$name"
    wait_for "$name readiness" 30 http_ok "http://127.0.0.1:$port/readyz"
    echo "$(printf '%-11s' "$name") ready (http://127.0.0.1:$port/readyz, logs $log/$name.log)"
  done
}

services_down() {
  local i
  for ((i = ${#services[@]} - 1; i >= 0; i--)); do bg_down "${services[$i]}"; done
  bg_down keycloak-double
}

# Asks for the demo tenant with the CLI and prints what it got.
demo() {
  write_service_env
  local key=${LANDLORD_DEMO_KEY:-demo}
  local status
  status=$(pg_sql -d landlord -tA -v key="$key" \
    <<<"select status from tenants where key = :'key'" 2>/dev/null || true)
  echo
  if [ -n "$status" ]; then
    echo "the demo tenant '$key' exists already ($status); LANDLORD_DEMO_KEY=<key> deploy/stack.sh demo asks for another"
  else
    echo "requesting the demo tenant '$key' through the API (POST /v1/tenants with a token from landlord-gateway mint-token):"
    local token
    token=$("$target/landlord-gateway" mint-token --scope tenants:write --ttl 10m --subject demo)
    KEY=$key TOKEN=$token API=http://127.0.0.1:$api_port python3 - <<'PY'
import json, os, urllib.request
key = os.environ["KEY"]
body = {"key": key, "display_name": "Demo Inc.", "plan": "standard",
        "admin": {"email": f"admin@{key}.localhost", "first_name": "Ada", "last_name": "Lovelace"},
        "domains": [f"{key}.localhost"]}
request = urllib.request.Request(os.environ["API"] + "/v1/tenants", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + os.environ["TOKEN"],
                                          "Content-Type": "application/json", "Idempotency-Key": f"demo-{key}"})
with urllib.request.urlopen(request, timeout=10) as answer:
    print(f"  {answer.status} {answer.reason}: {answer.read().decode()}")
PY
    echo "following its saga (landlord watch):"
    nats_as operator "$target/landlord" watch "$key" --timeout 120s
  fi
  "$repo/deploy/show-tenant.sh" "$key"
}

status() {
  if pid_alive "$home/nats.pid"; then echo "nats        running  nats://127.0.0.1:$nats_port"; else echo "nats        stopped"; fi
  if [ -f "$home/postgres/PG_VERSION" ] && as_pg "$LANDLORD_PG_BIN/pg_ctl" -D "$home/postgres" status >/dev/null 2>&1; then
    echo "postgres    running  postgres://postgres:…@127.0.0.1:$pg_port/landlord (password in $pg_password_file)"
  else
    echo "postgres    stopped"
  fi
  for name in s3 smtp keycloak-double "${services[@]}"; do
    if pid_alive "$home/$name.pid"; then echo "$(printf '%-11s' "$name") running"; else echo "$(printf '%-11s' "$name") stopped"; fi
  done
}

case ${1:-} in
  up) nats_up; pg_up; s3_up; smtp_up; services_up; demo ;;
  down) services_down; bg_down smtp; bg_down s3; pg_down; nats_down ;;
  demo) demo ;;
  watch) write_service_env; nats_as operator "$target/landlord" watch "${2:?usage: $0 watch KEY}" ;;
  audit) write_service_env; shift; nats_as operator "$target/landlord" audit "$@" ;;
  nats-env) echo "LANDLORD_NATS_USER=${2:?usage: $0 nats-env USER}"; nats_as "$2" printenv LANDLORD_NATS_PASSWORD | sed 's/^/LANDLORD_NATS_PASSWORD=/' ;;
  token) write_service_env; "$target/landlord-gateway" mint-token --scope tenants:read,tenants:write --ttl 1h --subject admin ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|demo|watch KEY|audit [--remove-orphans]|token|nats-env USER" >&2; exit 2 ;;
esac
