#!/usr/bin/env bash
# The demo behind `make demo`: SoftHSM tokens under $STATE, then the main job on them.
# Demo PINs are fixed and public (this is a throwaway SoftHSM); they travel in the environment,
# never in argv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
STATE=${STATE:-$here/../.state}
ti=${TOKENISSUE_BIN:-tokenissue}
export TOKENISSUE_SO_PIN=${TOKENISSUE_SO_PIN:-demo-so-pin-0000}
export TOKENISSUE_PIN=${TOKENISSUE_PIN:-demo-1234}
eval "$(TOKENISSUE_BIN=$ti bash "$here/make-token.sh" "$STATE/softhsm" demo-user)"
export SOFTHSM2_CONF
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
say "tokenissue tokens"; "$ti" tokens
label="demo-$(date +%H%M%S)"
say "tokenissue keys generate --token demo-user --type ec-p256 --label $label"
"$ti" keys generate --token demo-user --type ec-p256 --label "$label"
say "tokenissue csr --token demo-user --key $label --subject 'CN=홍길동,O=Demo Bank,C=KR'"
"$ti" csr --token demo-user --key "$label" --subject "CN=홍길동,O=Demo Bank,C=KR" -o "$STATE/$label.csr"
openssl req -in "$STATE/$label.csr" -verify -noout -nameopt utf8 -subject
say "tokenissue keys list --token demo-user"; "$ti" keys list --token demo-user
