#!/usr/bin/env bash
# Starts a private PostgreSQL 15 cluster and the real Mattermost server (built by build.sh) on
# 127.0.0.1, provisions them, runs the given command with the connection in its environment,
# and tears everything down. Meant to run inside a network namespace that has only loopback
# (run-tier4.sh does that), but works anywhere: nothing listens beyond 127.0.0.1.
#
#   tests/mattermost/run.sh CMD [ARGS...]
#   TM_MM_LINE=current tests/mattermost/run.sh CMD [ARGS...]   # the current line's server
#
# The command sees:
#   TM_REAL_MATTERMOST_URL         http://127.0.0.1:PORT
#   TM_REAL_MATTERMOST_ADMIN_TOKEN a session token of the system admin "sysadmin"
#   TM_REAL_MATTERMOST_BOT_TOKEN   the token of the bot "teleport-bot"
#   TM_REAL_MATTERMOST_PASSWORD    password of alice, bob and carol
#   TM_REAL_MATTERMOST_RATE_LIMIT  "PERSEC/MAXBURST" of the server's own rate limiter
#   TM_REAL_MATTERMOST_LOG         the server's log file
#   TM_REAL_MATTERMOST_VERSION     the server's version (X-Version-Id's first field, e.g. 11.4.0)
# Provisioned: team "engineering" with public channel "access-requests"; users alice, carol
# (reviewers), bob (requester), all in the team and channel; the bot, in the team and channel.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/mattermost/lib.sh
. "$HERE/lib.sh"
MM_HOME="$(mm_home)"
PG_BIN="${TM_PG_BIN:-/usr/lib/postgresql/15/bin}"
RATE_PERSEC="${TM_MM_RATE_PERSEC:-20}"
RATE_BURST="${TM_MM_RATE_BURST:-20}"
PASSWORD="Tier4-passw0rd!"
log() { echo "[mattermost] $*" >&2; }

[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
if [ ! -x "$MM_HOME/bin/mattermost" ]; then
  echo "real Mattermost not built in $MM_HOME; run tests/mattermost/build.sh ${TM_MM_LINE:-}" >&2
  exit 3
fi

if [ ! -x "$PG_BIN/postgres" ]; then
  log "PostgreSQL 15 missing; installing the Debian package"
  apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
fi

# A port nobody listens on yet, on loopback.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( (RANDOM % 20000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tm-mattermost.XXXXXX")"
chmod 755 "$TMP"
PG_PID=""; MM_PID=""
cleanup() {
  local rc=$?
  if [ -n "$MM_PID" ] && kill -0 "$MM_PID" 2>/dev/null; then
    kill "$MM_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$MM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$MM_PID" 2>/dev/null || true
  fi
  if [ -n "$PG_PID" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$TMP/mattermost.log" ]; then
    log "exit $rc; last lines of the server log:"
    tail -n 40 "$TMP/mattermost.log" >&2 || true
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL refuses to run as root: use the postgres system user (the Debian package makes
# it), or nobody.
PG_USER=""
if [ "$(id -u)" -eq 0 ]; then
  if id postgres >/dev/null 2>&1; then PG_USER=postgres; else PG_USER=nobody; fi
fi
as_pg() { if [ -n "$PG_USER" ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }

PG_PORT=$(free_port)
mkdir -p "$TMP/pg" "$TMP/pgsock"
[ -n "$PG_USER" ] && chown "$PG_USER" "$TMP/pg" "$TMP/pgsock"
as_pg "$PG_BIN/initdb" -D "$TMP/pg" -U mmuser --auth=trust -E UTF8 --locale=C.UTF-8 >"$TMP/initdb.log" 2>&1 \
  || { cat "$TMP/initdb.log" >&2; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg/server.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $TMP/pgsock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null
PG_PID=started
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mmuser mattermost
log "PostgreSQL on 127.0.0.1:$PG_PORT"

MM_PORT=$(free_port)
URL="http://127.0.0.1:$MM_PORT"
mkdir -p "$TMP/data" "$TMP/logs" "$TMP/plugins" "$TMP/client-plugins"
export MM_SQLSETTINGS_DRIVERNAME=postgres
export MM_SQLSETTINGS_DATASOURCE="postgres://mmuser@127.0.0.1:$PG_PORT/mattermost?sslmode=disable&connect_timeout=10"
export MM_SERVICESETTINGS_LISTENADDRESS="127.0.0.1:$MM_PORT"
export MM_SERVICESETTINGS_SITEURL="$URL"
export MM_SERVICESETTINGS_ENABLEBOTACCOUNTCREATION=true
export MM_SERVICESETTINGS_ENABLEUSERACCESSTOKENS=true
export MM_SERVICESETTINGS_ALLOWEDUNTRUSTEDINTERNALCONNECTIONS="127.0.0.1 localhost"
export MM_SERVICESETTINGS_ENABLESECURITYFIXALERT=false
export MM_SERVICESETTINGS_ENABLELINKPREVIEWS=false
export MM_SERVICESETTINGS_ENABLEPERMALINKPREVIEWS=false
export MM_SERVICESETTINGS_ENABLEGIFPICKER=false
export MM_SERVICESETTINGS_ENABLEDEVELOPER=false
export MM_SERVICESETTINGS_ENABLEPOSTUSERNAMEOVERRIDE=false
export MM_TEAMSETTINGS_ENABLEOPENSERVER=true
export MM_PRIVACYSETTINGS_SHOWEMAILADDRESS=true
export MM_PRIVACYSETTINGS_SHOWFULLNAME=true
export MM_LOGSETTINGS_ENABLEDIAGNOSTICS=false
export MM_LOGSETTINGS_ENABLECONSOLE=false
export MM_LOGSETTINGS_ENABLEFILE=true
export MM_LOGSETTINGS_FILELEVEL=INFO
export MM_LOGSETTINGS_FILELOCATION="$TMP/logs"
export MM_NOTIFICATIONLOGSETTINGS_ENABLECONSOLE=false
export MM_NOTIFICATIONLOGSETTINGS_FILELOCATION="$TMP/logs"
export MM_FILESETTINGS_DIRECTORY="$TMP/data/"
export MM_PLUGINSETTINGS_ENABLE=false
export MM_PLUGINSETTINGS_ENABLEMARKETPLACE=false
export MM_PLUGINSETTINGS_ENABLEREMOTEMARKETPLACE=false
export MM_PLUGINSETTINGS_AUTOMATICPREPACKAGEDPLUGINS=false
export MM_PLUGINSETTINGS_DIRECTORY="$TMP/plugins"
export MM_PLUGINSETTINGS_CLIENTDIRECTORY="$TMP/client-plugins"
export MM_EMAILSETTINGS_SENDEMAILNOTIFICATIONS=false
export MM_EMAILSETTINGS_REQUIREEMAILVERIFICATION=false
export MM_EMAILSETTINGS_SENDPUSHNOTIFICATIONS=false
export MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER=""
export MM_ANNOUNCEMENTSETTINGS_ADMINNOTICESENABLED=false
export MM_ANNOUNCEMENTSETTINGS_USERNOTICESENABLED=false
export MM_METRICSSETTINGS_ENABLE=false
# Tier 5's standalone plugin serves a self-signed callback certificate.
[ "${TM_MM_INSECURE_OUTGOING:-0}" = 1 ] && export MM_SERVICESETTINGS_ENABLEINSECUREOUTGOINGCONNECTIONS=true
export MM_RATELIMITSETTINGS_ENABLE=true
export MM_RATELIMITSETTINGS_PERSEC="$RATE_PERSEC"
export MM_RATELIMITSETTINGS_MAXBURST="$RATE_BURST"
export MM_RATELIMITSETTINGS_VARYBYUSER=true
export MM_RATELIMITSETTINGS_VARYBYREMOTEADDR=false

log "starting Mattermost on $URL"
# The server finds i18n/, templates/, fonts/ and client/ next to its working directory.
(cd "$MM_HOME" && exec ./bin/mattermost server --config "$TMP/config.json" >"$TMP/mattermost.log" 2>&1) &
MM_PID=$!
for i in $(seq 1 600); do
  if curl -fsS --max-time 2 "$URL/api/v4/system/ping" >/dev/null 2>&1; then break; fi
  kill -0 "$MM_PID" 2>/dev/null || { log "the server exited"; cat "$TMP/mattermost.log" >&2; exit 1; }
  [ "$i" -eq 600 ] && { log "no ping after 120 s"; exit 1; }
  sleep 0.2
done
log "ping answered after ~$((i / 5)) s"

# Provisioning through the REST API (works on every server version): on an empty server the
# first account created becomes the system admin.
api() { # METHOD PATH [JSON] -> body on stdout; fails on a non-2xx status
  local method=$1 path=$2 data=${3:-}
  local args=(-sS --max-time 30 -X "$method" -H "Content-Type: application/json" -w '\n%{http_code}')
  [ -n "${TOKEN:-}" ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ -n "$data" ] && args+=(--data "$data")
  local out code
  out=$(curl "${args[@]}" "$URL/api/v4$path")
  code=${out##*$'\n'}; out=${out%$'\n'*}
  if [ "${code:0:1}" != 2 ]; then log "$method $path -> $code: $out"; return 1; fi
  printf '%s' "$out"
}
TOKEN=""
api POST /users "{\"username\":\"sysadmin\",\"email\":\"sysadmin@example.com\",\"password\":\"$PASSWORD\"}" >/dev/null
TOKEN=$(curl -sS --max-time 30 -D - -o /dev/null -H "Content-Type: application/json" \
  --data "{\"login_id\":\"sysadmin\",\"password\":\"$PASSWORD\"}" "$URL/api/v4/users/login" \
  | tr -d '\r' | sed -n 's/^[Tt]oken: //p')
[ -n "$TOKEN" ] || { log "admin login failed"; exit 1; }
ADMIN_TOKEN=$TOKEN
TEAM_ID=$(api POST /teams '{"name":"engineering","display_name":"Engineering","type":"O"}' | jq -r .id)
CHANNEL_ID=$(api POST /channels "{\"team_id\":\"$TEAM_ID\",\"name\":\"access-requests\",\"display_name\":\"Access requests\",\"type\":\"O\"}" | jq -r .id)
ids=()
for u in alice carol bob; do
  ids+=("$(api POST /users "{\"username\":\"$u\",\"email\":\"$u@example.com\",\"password\":\"$PASSWORD\"}" | jq -r .id)")
done
BOT_ID=$(api POST /bots '{"username":"teleport-bot","display_name":"Teleport"}' | jq -r .user_id)
ADMIN_ID=$(api GET /users/me | jq -r .id)
for id in "$ADMIN_ID" "${ids[@]}" "$BOT_ID"; do
  api POST "/teams/$TEAM_ID/members" "{\"team_id\":\"$TEAM_ID\",\"user_id\":\"$id\"}" >/dev/null
  api POST "/channels/$CHANNEL_ID/members" "{\"user_id\":\"$id\"}" >/dev/null
done
BOT_TOKEN=$(api POST "/users/$BOT_ID/tokens" '{"description":"tier4"}' | jq -r .token)
[ -n "$BOT_TOKEN" ] && [ "$BOT_TOKEN" != null ] || { log "no bot token"; exit 1; }
VERSION=$(curl -sS -D - -o /dev/null "$URL/api/v4/system/ping" | tr -d '\r' | sed -n 's/^[Xx]-[Vv]ersion-[Ii]d: //p')
log "provisioned team engineering, channel access-requests, users alice carol bob, bot teleport-bot (server $VERSION)"

export TM_REAL_MATTERMOST_URL="$URL"
export TM_REAL_MATTERMOST_ADMIN_TOKEN="$ADMIN_TOKEN"
export TM_REAL_MATTERMOST_BOT_TOKEN="$BOT_TOKEN"
export TM_REAL_MATTERMOST_PASSWORD="$PASSWORD"
export TM_REAL_MATTERMOST_RATE_LIMIT="$RATE_PERSEC/$RATE_BURST"
export TM_REAL_MATTERMOST_LOG="$TMP/mattermost.log"
TM_REAL_MATTERMOST_VERSION=$(printf '%s' "$VERSION" | cut -d. -f1-3)
export TM_REAL_MATTERMOST_VERSION
# Run the command in the background so a signal still reaches the cleanup trap.
set +e
"$@" &
CMD_PID=$!
wait "$CMD_PID"
rc=$?
set -e
exit "$rc"
