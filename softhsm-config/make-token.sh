#!/usr/bin/env bash
# make-token.sh DIR LABEL [LABEL...] — idempotently create SoftHSM tokens under DIR.
#
#   DIR/softhsm2.conf   written from softhsm2.conf.template (kept if present)
#   DIR/tokens/         the token directory
#
# PINs come from TOKENISSUE_SO_PIN and TOKENISSUE_PIN (never from argv: softhsm2-util would put
# them in the process list, so the token is initialised by `tokenissue token init`, which hands
# them to PyKCS11 over a pipe). A token whose label exists already is left alone.
# Afterwards: export SOFTHSM2_CONF=DIR/softhsm2.conf
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 DIR LABEL [LABEL...]" >&2; exit 2; }
dir=$1; shift
: "${TOKENISSUE_SO_PIN:?set TOKENISSUE_SO_PIN}" "${TOKENISSUE_PIN:?set TOKENISSUE_PIN}"
tokenissue=${TOKENISSUE_BIN:-$(command -v tokenissue || echo "$here/../.venv/bin/tokenissue")}
mkdir -p "$dir/tokens"
chmod 700 "$dir" "$dir/tokens"
dir=$(cd "$dir" && pwd)
if [ ! -f "$dir/softhsm2.conf" ]; then
  sed "s#@TOKENDIR@#$dir/tokens#" "$here/softhsm2.conf.template" > "$dir/softhsm2.conf"
fi
export SOFTHSM2_CONF=$dir/softhsm2.conf
module=${TOKENISSUE_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
for label in "$@"; do
  if "$tokenissue" --module "$module" tokens --json | grep -q "\"label\": \"$label\""; then
    echo "token '$label' exists in $dir" >&2
  else
    "$tokenissue" --module "$module" token init --label "$label" >&2
  fi
done
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
