#!/usr/bin/env bash
# Writes throw-away TLS material for the tests into DIR (P-256 keys, valid 2 days):
#   ca.crt/ca.key             the test CA
#   server.crt/server.key     signed by the CA, for 127.0.0.1 and localhost
#   client.crt/client.key     signed by the CA (a client certificate for mutual TLS)
#   rogue-ca.crt, rogue.crt/rogue.key   another CA and a client certificate it signed
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2> /dev/null; }
ca() {  # ca NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 2 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() {  # leaf NAME CA CN EXTENSIONS...
  local name=$1 issuer=$2 cn=$3
  shift 3
  key "$name.key"
  openssl req -new -key "$name.key" -out "$name.csr" -subj "/CN=$cn"
  printf '%s\n' "$@" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$issuer.crt" -CAkey "$issuer.key" -CAcreateserial \
    -out "$name.crt" -days 2 -extfile "$name.ext" 2> /dev/null
  rm -f "$name.csr" "$name.ext"
}
ca ca "convserve test CA"
ca rogue-ca "rogue test CA"
leaf server ca localhost "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE"
leaf client ca "convserve test client" "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE"
leaf rogue rogue-ca "rogue client" "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE"
