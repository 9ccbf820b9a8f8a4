#!/usr/bin/env bash
# classic_pipeline.sh — the "classic" shell pipeline for issuing a certificate to a key that
# lives in a PKCS#11 token, with stock Debian tools only: pkcs11-tool (OpenSC), openssl with
# the libp11 engine (libengine-pkcs11-openssl) and a file-based openssl CA. It is the
# baseline that `tokenissue enroll` is measured against. Self-contained: needs nothing from
# outside this repository.
#
#   classic_pipeline.sh init  [--no-token]     fresh BASE: softhsm2.conf, tokens/, token, CA,
#                                              engine.cnf (--no-token: keep/skip the token)
#   classic_pipeline.sh issue [--key ec|rsa] [--id HEX] [--label L] [--cn CN] [--san SAN]
#                             [--times FILE] [-q]
#   classic_pipeline.sh clean                  rm -rf BASE
#
# One `issue` == one full issuance, five timed steps:
#   1 keygen  pkcs11-tool --keypairgen (EC P-256 or RSA-2048) --id --label --usage-sign
#   2 csr     openssl req -engine pkcs11 -keyform engine -key 'pkcs11:...;type=private'
#   3 sign    openssl x509 -req -CA ca.crt -CAkey ca.key (clientAuth EKU + SAN), DER out
#   4 write   pkcs11-tool --write-object cert.der --type cert --id --label
#   5 verify  pkcs11-tool -O (private key + public key + cert with that ID) + openssl verify
# Step times (µs) go to --times FILE as CSV; a summary goes to stderr unless -q.
#
# PINs never appear on a command line: pkcs11-tool --pin/--so-pin/--new-pin env:VAR,
# openssl req -passin env:VAR. The token is created with pkcs11-tool --init-token too.
#
# Environment (all optional):
#   BASE         working dir (default ${TMPDIR:-/tmp}/tokenissue-classic; use /dev/shm/... for
#                tmpfs): softhsm2.conf, tokens/, ca/, engine.cnf, issued/
#   TOKEN_LABEL  token label (default classic)
#   KEY          ec|rsa (default ec; --key overrides)
#   PKCS11_PIN   user PIN (default 123456)   PKCS11_SO_PIN (default 87654321, init only)
#   P11_MODULE   PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so)
#   SOFTHSM2_CONF  default $BASE/softhsm2.conf (init writes it there)
#
# Pitfalls this script works around (OpenSC 0.23, libp11 0.4.12, OpenSSL 3.0):
#   - once the libp11 engine is loaded, openssl cannot sign with file keys in that command:
#     the engine config is used only for `openssl req`;
#   - without MODULE_PATH libp11 loads p11-kit-proxy (and every module it knows);
#   - PKCS#11 URI ids must be percent-encoded (id=%c0%01);
#   - pkcs11-tool -O ignores --id/--label: list everything and filter;
#   - after C_InitToken SoftHSM moves the token to a new slot: select by --token-label.
set -euo pipefail
export LC_ALL=C

BASE=${BASE:-${TMPDIR:-/tmp}/tokenissue-classic}
TOKEN_LABEL=${TOKEN_LABEL:-classic}
KEY=${KEY:-ec}
export PKCS11_PIN=${PKCS11_PIN:-123456}
export PKCS11_SO_PIN=${PKCS11_SO_PIN:-87654321}
P11_MODULE=${P11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
export SOFTHSM2_CONF=${SOFTHSM2_CONF:-$BASE/softhsm2.conf}
ENGINE_SO=
for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
  [ -e "$d/engines-3/pkcs11.so" ] && { ENGINE_SO=$d/engines-3/pkcs11.so; break; }
done

usage() { sed -n '2,40p' "$0"; }
CMD=${1:-}
[ $# -gt 0 ] && shift
ID= LABEL= CN= SAN= TIMES= QUIET=0 NOTOKEN=0
while [ $# -gt 0 ]; do
  case $1 in
    --key) KEY=$2; shift ;;
    --id) ID=$2; shift ;;
    --label) LABEL=$2; shift ;;
    --cn) CN=$2; shift ;;
    --san) SAN=$2; shift ;;
    --times) TIMES=$2; shift ;;
    --no-token) NOTOKEN=1 ;;
    -q) QUIET=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

log() { [ "$QUIET" = 1 ] || echo "[classic] $*" >&2; }
p11() { pkcs11-tool --module "$P11_MODULE" --token-label "$TOKEN_LABEL" "$@"; }

do_init() {
  [ -n "$ENGINE_SO" ] || { echo "libp11 engine (engines-3/pkcs11.so) not found" >&2; exit 1; }
  if [ "$SOFTHSM2_CONF" = "$BASE/softhsm2.conf" ]; then
    rm -rf "$BASE"
    mkdir -p "$BASE/tokens"
    cat > "$SOFTHSM2_CONF" <<EOF
directories.tokendir = $BASE/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
  fi
  mkdir -p "$BASE/ca" "$BASE/issued"
  if [ "$NOTOKEN" = 0 ]; then
    # SoftHSM always offers one uninitialised slot; initialise that one.
    local slot
    slot=$(pkcs11-tool --module "$P11_MODULE" --list-token-slots 2>/dev/null | awk '
      /^Slot [0-9]+ \(0x[0-9a-f]+\)/ { s = $3; gsub(/[()]/, "", s) }
      /token state: +uninitialized/  { print s; exit }')
    [ -n "$slot" ] || { echo "no uninitialised slot in $P11_MODULE" >&2; exit 1; }
    pkcs11-tool --module "$P11_MODULE" --slot "$slot" --init-token --label "$TOKEN_LABEL" \
      --so-pin env:PKCS11_SO_PIN >/dev/null
    p11 --login --login-type so --so-pin env:PKCS11_SO_PIN --init-pin --new-pin env:PKCS11_PIN \
      >/dev/null
  fi
  # Engine config for `openssl req` only. MODULE_PATH points libp11 at the module directly.
  cat > "$BASE/engine.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE_SO
MODULE_PATH = $P11_MODULE
init = 0
[req]
distinguished_name = req_dn
[req_dn]
EOF
  # File CA: EC P-256 key and a self-signed root.
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$BASE/ca/ca.key" \
    2>/dev/null
  chmod 600 "$BASE/ca/ca.key"
  openssl req -config /dev/null -x509 -new -key "$BASE/ca/ca.key" -sha256 -days 3650 \
    -subj "/CN=tokenissue classic baseline CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$BASE/ca/ca.crt"
  log "initialised token '$TOKEN_LABEL' ($SOFTHSM2_CONF) and CA in $BASE/ca"
}

now() { local t=$EPOCHREALTIME; echo "${t/./}"; }   # microseconds
declare -A T
ORDER=()
step() { local n=$1 a b; shift; a=$(now); "$@"; b=$(now); T[$n]=$((b - a)); ORDER+=("$n"); }

s_keygen() {
  p11 --login --pin env:PKCS11_PIN --keypairgen --key-type "$KEYTYPE" \
    --id "$ID" --label "$LABEL" --usage-sign >"$W/keygen.log"
}
s_csr() {
  OPENSSL_CONF=$BASE/engine.cnf openssl req -engine pkcs11 -keyform engine \
    -key "$URI" -passin env:PKCS11_PIN -new -sha256 -subj "/O=tokenissue/CN=$CN" \
    -out "$W/req.csr" 2>"$W/csr.log"
}
s_sign() {
  cat > "$W/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=$KU
extendedKeyUsage=clientAuth
subjectAltName=$SAN
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  openssl x509 -req -in "$W/req.csr" -CA "$BASE/ca/ca.crt" -CAkey "$BASE/ca/ca.key" \
    -set_serial "0x$(openssl rand -hex 16 | sed 's/^./7/')" -days 365 -sha256 \
    -extfile "$W/ext.cnf" -outform DER -out "$W/cert.der" 2>"$W/sign.log"
}
s_write() {
  p11 --login --pin env:PKCS11_PIN --write-object "$W/cert.der" --type cert \
    --id "$ID" --label "$LABEL" >"$W/write.log"
}
s_verify() {
  p11 --login --pin env:PKCS11_PIN -O >"$W/objects.txt"
  awk -v want="$ID" '
    /^[A-Z].* Object;/ { t = $0; sub(/ Object;.*/, "", t) }
    /^ +ID: +/         { if (tolower($2) == want) f[t] = 1 }
    END { ok = ("Private Key" in f) && ("Public Key" in f) && ("Certificate" in f)
          if (!ok) print "verify: missing objects for ID " want > "/dev/stderr"
          exit !ok }' "$W/objects.txt"
  openssl x509 -inform DER -in "$W/cert.der" -out "$W/cert.pem"
  openssl verify -CAfile "$BASE/ca/ca.crt" -purpose sslclient "$W/cert.pem" >"$W/verify.log"
}

do_issue() {
  [ -f "$BASE/engine.cnf" ] || { echo "run '$0 init' first (BASE=$BASE)" >&2; exit 1; }
  case $KEY in
    ec)  KEYTYPE=EC:prime256v1; KU="critical,digitalSignature" ;;
    rsa) KEYTYPE=RSA:2048;      KU="critical,digitalSignature,keyEncipherment" ;;
    *) echo "--key ec|rsa" >&2; exit 2 ;;
  esac
  [ -n "$ID" ] || ID=$(openssl rand -hex 8)
  ID=${ID,,}
  [ -n "$LABEL" ] || LABEL="classic-$KEY-$ID"
  [ -n "$CN" ] || CN=$LABEL
  [ -n "$SAN" ] || SAN="DNS:$CN.example.test,email:$CN@example.test"
  local pctid
  pctid=$(printf '%s' "$ID" | sed 's/../%&/g')
  URI="pkcs11:token=$TOKEN_LABEL;object=$LABEL;id=$pctid;type=private"
  W=$BASE/issued/$ID
  mkdir -p "$W"

  local t0 t1 total n
  t0=$(now)
  step keygen s_keygen
  step csr    s_csr
  step sign   s_sign
  step write  s_write
  step verify s_verify
  t1=$(now); total=$((t1 - t0))

  log "issued $KEY id=$ID: $(openssl x509 -in "$W/cert.pem" -noout -subject | tr -d '\n')"
  if [ -n "$TIMES" ]; then
    [ -s "$TIMES" ] || echo "key,id,total_us,keygen_us,csr_us,sign_us,write_us,verify_us" >"$TIMES"
    echo "$KEY,$ID,$total,${T[keygen]},${T[csr]},${T[sign]},${T[write]},${T[verify]}" >>"$TIMES"
  fi
  if [ "$QUIET" = 0 ]; then
    for n in "${ORDER[@]}"; do
      printf '  %-8s %9d us\n' "$n" "${T[$n]}" >&2
    done
    printf '  %-8s %9d us\n' total "$total" >&2
  fi
}

case $CMD in
  init) do_init ;;
  issue) do_issue ;;
  clean) rm -rf "$BASE" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
