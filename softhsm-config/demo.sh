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

say "tokenissue ca init --ca-dir $demo/ca --token demo-ca --subject 'CN=Demo Root CA,O=Demo Bank,C=KR'"
"$ti" ca init --ca-dir "$demo/ca" --token demo-ca --subject "CN=Demo Root CA,O=Demo Bank,C=KR" \
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

printf '\nDemo state is in %s. Try:\n  export SOFTHSM2_CONF=%s TOKENISSUE_STATE_DIR=%s\n' "$demo" "$SOFTHSM2_CONF" "$TOKENISSUE_STATE_DIR"
printf '  tokenissue revoke --token demo-user --key %s   # PIN: demo-1234\n' "$label"
