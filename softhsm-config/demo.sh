#!/usr/bin/env bash
# The demo behind `make demo`: the main job on the embedded default — SoftHSM tokens, the
# built-in CA with its key on a token, SQLite inventories — from a clean slate every run.
#
# Demo PINs are fixed and public (this is a throwaway SoftHSM under $STATE/demo); they travel
# in the environment, never in argv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
STATE=${STATE:-$here/../.state}
demo=$STATE/demo
ti=${TOKENISSUE_BIN:-tokenissue}
export TOKENISSUE_BIN=$ti
export TOKENISSUE_SO_PIN=demo-so-pin-0000
export TOKENISSUE_PIN=demo-1234           # the holder's token PIN
export TOKENISSUE_CA_PIN=demo-1234        # the CA token's PIN (same demo value)
export TOKENISSUE_STATE_DIR=$demo/holder
export COLUMNS=${COLUMNS:-100}

rm -rf "$demo"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "softhsm-config/make-token.sh $demo/softhsm demo-ca demo-user"
eval "$(bash "$here/make-token.sh" "$demo/softhsm" demo-ca demo-user)"
export SOFTHSM2_CONF

say "tokenissue tokens"
"$ti" tokens

say "tokenissue ca init --ca $demo/ca --token demo-ca --subject 'CN=Demo Root CA,O=Demo Bank,C=KR'"
"$ti" ca init --ca "$demo/ca" --token demo-ca --subject "CN=Demo Root CA,O=Demo Bank,C=KR" \
  --crl-url http://127.0.0.1/demo.crl

say "tokenissue enroll --token demo-user --ca $demo/ca --subject 'CN=홍길동,O=Demo Bank,C=KR' --profile personal --san email:gildong.hong@example.kr"
"$ti" enroll --token demo-user --ca "$demo/ca" --subject "CN=홍길동,O=Demo Bank,C=KR" \
  --profile personal --san email:gildong.hong@example.kr

say "tokenissue status --token demo-user"
"$ti" status --token demo-user

say "tokenissue keys list --token demo-user"
"$ti" keys list --token demo-user

label=$("$ti" keys list --token demo-user --json | "${PYTHON:-python3}" -c 'import json,sys; print(json.load(sys.stdin)[0]["label"])')
say "tokenissue cert export --token demo-user --key $label --chain -o $demo/hong.pem && openssl verify"
"$ti" cert export --token demo-user --key "$label" --chain -o "$demo/hong.pem"
openssl verify -CAfile "$demo/ca/ca.pem" -purpose sslclient "$demo/hong.pem"

# The token is lost: revoke what it held by its serial (no token needed), then re-issue onto a
# new token. The lost token's directory is deleted, as a lost USB token is simply gone.
serial=$("$ti" tokens --json | "${PYTHON:-python3}" -c 'import json,sys; print(next(t["serial"] for t in json.load(sys.stdin) if t["label"] == "demo-user"))')
rm -rf "$("${PYTHON:-python3}" - "$demo/softhsm/tokens" <<'PY'
import pathlib, sys
print(next(p.parent for p in pathlib.Path(sys.argv[1]).glob("*/token.object") if b"demo-user" in p.read_bytes()))
PY
)"
say "tokenissue revoke --token-serial $serial --ca $demo/ca"
"$ti" revoke --token-serial "$serial" --ca "$demo/ca"

say "tokenissue ca crl --ca $demo/ca -o $demo/ca.crl"
"$ti" ca crl --ca "$demo/ca" -o "$demo/ca.crl"

say "softhsm-config/make-token.sh $demo/softhsm demo-new && tokenissue enroll --token demo-new ..."
bash "$here/make-token.sh" "$demo/softhsm" demo-new >/dev/null
"$ti" enroll --token demo-new --ca "$demo/ca" --subject "CN=홍길동,O=Demo Bank,C=KR" --profile personal

# The command itself: make demo installs it in .venv, not on PATH.
printf '\nDemo state is in %s. The command is %s (or: source .venv/bin/activate). Try:\n' "$demo" "$ti"
printf '  export SOFTHSM2_CONF=%s TOKENISSUE_STATE_DIR=%s TOKENISSUE_PIN=demo-1234\n' "$SOFTHSM2_CONF" "$TOKENISSUE_STATE_DIR"
printf '  %s status --token demo-new\n' "$ti"
