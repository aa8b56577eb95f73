#!/usr/bin/env bash
# What the stack created for a tenant, read from each backend itself:
# `deploy/show-tenant.sh KEY`. Called by `deploy/stack.sh up` for the demo.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home=${LANDLORD_HOME:-$repo/.stack}
key=${1:?usage: show-tenant.sh KEY}
pg_port=${LANDLORD_PG_PORT:-15432}
keycloak=${KEYCLOAK_URL:-http://127.0.0.1:${LANDLORD_KEYCLOAK_DOUBLE_PORT:-18080}}
# The stack's PostgreSQL checks passwords over TCP (deploy/stack.sh keeps the superuser's).
PGPASSWORD=${PGPASSWORD:-$(cat "$home/postgres.password" 2>/dev/null || true)}
export PGPASSWORD

control() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -d landlord -tA -F ' ' -v key="$key" "$@"; }
tenants() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -d landlord_tenants -tA "$@"; }

echo
echo "tenant $key, as the control plane records it:"
control <<<"select '  status ' || status || ', tier ' || tier || ', plan ' || plan || ', id ' || id
             from tenants where key = :'key'"
control <<<"select '  ' || rpad(kind, 18) || external_id from resources r join tenants t on t.id = r.tenant_id
             where t.key = :'key' and r.deleted_at is null order by r.id"

echo
echo "checked in the backends:"
KEY=$key KEYCLOAK=$keycloak python3 - <<'PY'
import json, os, urllib.parse, urllib.request
key, base = os.environ["KEY"], os.environ["KEYCLOAK"]
form = {"grant_type": "client_credentials", "client_id": os.environ.get("KEYCLOAK_CLIENT_ID", "landlord-idp"),
        "client_secret": os.environ.get("KEYCLOAK_CLIENT_SECRET", "landlord-idp-secret")}
if os.environ.get("KEYCLOAK_ADMIN_PASSWORD"):
    form = {"grant_type": "password", "client_id": "admin-cli", "username": os.environ.get("KEYCLOAK_ADMIN", "admin"),
            "password": os.environ["KEYCLOAK_ADMIN_PASSWORD"]}
def get(path):
    try:
        request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
        return json.load(urllib.request.urlopen(request, timeout=5))
    except urllib.error.HTTPError as e:
        return None
token = json.load(urllib.request.urlopen(base + "/realms/master/protocol/openid-connect/token",
                                         urllib.parse.urlencode(form).encode(), timeout=5))["access_token"]
realm = get(f"/admin/realms/tenant-{key}")
if realm:
    print(f"  keycloak realm    tenant-{key} ({realm.get('displayName', '')}), enabled={realm.get('enabled')}")
    for c in get(f"/admin/realms/tenant-{key}/clients?clientId={key}-app") or []:
        print(f"  keycloak client   {c['clientId']}: public={c.get('publicClient')}, "
              f"pkce={c.get('attributes', {}).get('pkce.code.challenge.method')}, redirects={c.get('redirectUris')}")
    for u in get(f"/admin/realms/tenant-{key}/users") or []:
        print(f"  keycloak user     {u['username']} ({u.get('firstName', '')} {u.get('lastName', '')}), "
              f"tenantId={u.get('attributes', {}).get('tenantId')}")
else:
    print(f"  keycloak realm    tenant-{key}: not found (pooled tenants live in the shared realm; "
          "the double keeps its state in memory, so a restarted stack has forgotten earlier realms)")
PY
# Database objects are marked in landlord_admin.markers (tenant id and saga),
# which only the worker's role reads.
id=$(control <<<"select id from tenants where key = :'key'")
tenants -c "select '  postgres schema   ' || nspname || ' owned by ' || pg_get_userbyid(nspowner) || ', saga ' || m.saga_id
            from landlord_admin.markers m join pg_namespace on nspname = m.name
            where m.kind = 'postgres.schema' and m.tenant_id = '$id'"
tenants -c "select '  postgres role     ' || rolname || ' (can log in: ' || rolcanlogin || '), saga ' || m.saga_id
            from landlord_admin.markers m join pg_roles on rolname = m.name
            where m.kind = 'postgres.role' and m.tenant_id = '$id'"
for bucket in "$home"/s3/*"$key"*; do
  [ -d "$bucket" ] && echo "  s3 bucket         $(basename "$bucket") (s3s-fs data in $bucket)"
done
mail=$(grep -l "^To: .*admin@$key\.localhost" "$home"/mail/new/* 2>/dev/null | tail -1 || true)
if [ -n "$mail" ]; then
  echo "  welcome mail      $(grep -m1 '^Subject:' "$mail")"
  echo "                    read it: less $mail"
else
  echo "  welcome mail      none yet in $home/mail/new"
fi
cat <<NEXT

try next:
  deploy/stack.sh watch $key                      # its saga, event by event (the landlord CLI)
  deploy/stack.sh token                           # an admin token for the API on http://127.0.0.1:18100
  curl -H "Authorization: Bearer \$(deploy/stack.sh token)" http://127.0.0.1:18100/v1/tenants/$key
  curl -N -H "Authorization: Bearer \$(deploy/stack.sh token)" http://127.0.0.1:18100/v1/events   # live feed (SSE)
  deploy/stack.sh audit                           # backends against the control plane
  deploy/just status                              # what runs
  PGPASSWORD=\$(cat $home/postgres.password) psql -h 127.0.0.1 -p $pg_port -U postgres landlord -c 'select key, status, tier from tenants'
  deploy/just down                                # stop everything (state stays in .stack/)
NEXT
