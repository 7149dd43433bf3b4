#!/usr/bin/env bash
# Property-based API testing with Schemathesis: starts the Graph simulator and `sspr-fleet
# serve` on a temporary SQLite database, onboards a few tenants through the API so that the
# GET routes have data, then lets Schemathesis generate requests from openapi/openapi.json.
# Fails on any 5xx and on any answer the document does not describe (status code, content
# type, body schema).
#
# Run by hand from anywhere in the repository: .ci/schemathesis.sh
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 50 per operation), SCHEMATHESIS_WORKERS
# (default 2), SCHEMATHESIS_SEED (default random), SSPR_FLEET_VENV (default
# $HOME/.cache/sspr-fleet-venv), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sspr-fleet-target}"
VENV="${SSPR_FLEET_VENV:-$HOME/.cache/sspr-fleet-venv}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
WORKERS="${SCHEMATHESIS_WORKERS:-2}"

fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. Schemathesis, in a virtual environment of its own (kept between runs).
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "installing schemathesis into $VENV"
  python3 -m venv "$VENV" || fail "cannot create a Python venv at $VENV (install python3-venv)"
  "$VENV/bin/pip" install --quiet --upgrade pip || fail "pip cannot upgrade itself in $VENV"
  "$VENV/bin/pip" install --quiet schemathesis || fail "pip install schemathesis failed"
fi
"$VENV/bin/schemathesis" --version || fail "schemathesis does not run from $VENV"

# 2. The daemon and the simulator.
cargo build --locked --bin sspr-fleet
BIN="$CARGO_TARGET_DIR/debug/sspr-fleet"
[ -x "$BIN" ] || fail "no binary at $BIN"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
SIM_PORT="$(free_port)"
API_PORT="$(free_port)"
SIM="http://127.0.0.1:$SIM_PORT"
API="http://127.0.0.1:$API_PORT"

"$BIN" graph-sim --tenants 5 --listen "127.0.0.1:$SIM_PORT" >"$WORK/sim.log" 2>&1 &
PIDS+=("$!")

export SSPR_FLEET_DATABASE_URL="sqlite://$WORK/schemathesis.db"
export SSPR_FLEET_DATA_DIR="$WORK"
export SSPR_FLEET_LISTEN="127.0.0.1:$API_PORT"
export SSPR_FLEET_GRAPH_URL="$SIM" SSPR_FLEET_LOGIN_URL="$SIM" SSPR_FLEET_PORTAL_URL="$SIM"
export SSPR_FLEET_LOG="info,sqlx=warn,actix_server=warn"
# Fuzzing sends far more than a client would: the limiter is tested elsewhere.
export SSPR_FLEET_API__RATE_PER_SECOND=100000 SSPR_FLEET_API__RATE_BURST=100000

TOKEN="$("$BIN" keys create --name st --role admin 2>"$WORK/keys.log")" \
  || { cat "$WORK/keys.log" >&2; fail "sspr-fleet keys create failed"; }

"$BIN" serve >"$WORK/serve.log" 2>&1 &
PIDS+=("$!")

wait_for() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  cat "$WORK/sim.log" "$WORK/serve.log" >&2
  fail "$1 did not answer"
}
wait_for "$SIM/_sim/tenants"
wait_for "$API/readyz"

# 3. Data for the GET routes: two tenants onboarded through the API.
CLIENT_ID=5f1b6c3e-9a4d-4e2b-8c7f-53535052ff01
CLIENT_SECRET='sim~secret~for~sspr-fleet~tests~0001'
ENTRA_IDS="$(curl -fsS "$SIM/_sim/tenants" \
  | python3 -c 'import json, sys; print(" ".join(t["id"] for t in json.load(sys.stdin)["tenants"][:2]))')"
[ -n "$ENTRA_IDS" ] || fail "the simulator lists no tenants"
n=0
for entra in $ENTRA_IDS; do
  n=$((n + 1))
  body="{\"entra_tenant\": \"$entra\", \"display_name\": \"Schemathesis $n\", \"credentials\": {\"kind\": \"client_secret\", \"client_id\": \"$CLIENT_ID\", \"client_secret\": \"$CLIENT_SECRET\"}}"
  status="$(curl -sS -o "$WORK/onboard.json" -w '%{http_code}' -X POST "$API/v1/tenants?verify=true" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$body")"
  [ "$status" = 201 ] || { cat "$WORK/onboard.json" >&2; fail "onboarding $entra answered $status"; }
done

# 4. Schemathesis. The checks: no 5xx; every status, content type and body as documented.
SEED_ARGS=()
[ -n "${SCHEMATHESIS_SEED:-}" ] && SEED_ARGS=(--seed "$SCHEMATHESIS_SEED")
set +e
"$VENV/bin/schemathesis" run openapi/openapi.json \
  --url "$API" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --workers "$WORKERS" \
  --request-timeout 20 \
  --phases examples,coverage,fuzzing \
  --generation-database none \
  --suppress-health-check all \
  --no-color \
  "${SEED_ARGS[@]}"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  echo "--- daemon errors (serve.log) ---" >&2
  grep -E 'ERROR|WARN|panicked' "$WORK/serve.log" | tail -n 40 >&2 || true
  fail "schemathesis found problems (exit $status)"
fi
echo "schemathesis: no server errors, every answer as documented"
