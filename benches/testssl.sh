#!/usr/bin/env bash
# Run testssl.sh (Debian package `testssl.sh`, installed if missing) against
# the daemon's TLS listener on loopback and fail if it reports any HIGH or
# CRITICAL finding. Takes a few minutes, so it is not part of every CI run.
#
# Usage: benches/testssl.sh          (report in .cache/testssl/<time>.json)
# Environment: SPOTTER_BIN (a built spotter), SPOTTER_TESTDATA.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$REPO/scripts/api-daemon.sh"
apt_install testssl.sh curl jq openssl
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
# Spotter controls its TLS configuration (protocols, ciphers, key exchange,
# renegotiation, ...); the certificate is the operator's. testssl.sh rates
# both, so the daemon serves a certificate as an operator would install one:
# issued by a CA (a throw-away one, which testssl.sh trusts with --add-ca),
# valid for 90 days, with a CRL distribution point. Against the self-signed
# certificate Spotter generates on first start testssl.sh also reports that
# it is self-signed, has no revocation information and a long validity:
# properties of any self-signed appliance certificate, not of the server.
pki="$work/pki"
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" -subj "/CN=Spotter testssl CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$pki/leaf.key" -out "$pki/leaf.csr" -subj "/CN=localhost" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
    "crlDistributionPoints=URI:http://127.0.0.1/spotter-testssl-ca.crl" > "$pki/leaf.ext"
openssl x509 -req -in "$pki/leaf.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 90 -extfile "$pki/leaf.ext" -out "$pki/leaf.pem" 2>/dev/null
cat "$pki/leaf.pem" "$pki/ca.pem" > "$pki/chain.pem"
API_CA="$pki/ca.pem" start_api_daemon "$work" "$port" "cert = \"$pki/chain.pem\"
key = \"$pki/leaf.key\""
out="$CACHE/testssl/$(date +%Y%m%dT%H%M%S).json"
mkdir -p "$(dirname "$out")"
say "testssl.sh against 127.0.0.1:$port (report: $out)"
testssl --quiet --color 0 --warnings off --add-ca "$pki/ca.pem" --jsonfile "$out" "127.0.0.1:$port" > "$work/testssl.txt" || true
grep -E 'HIGH|CRITICAL' "$work/testssl.txt" || true
bad="$(jq '[.[] | select(.severity == "HIGH" or .severity == "CRITICAL")] | length' "$out")"
jq -r '.[] | select(.severity == "HIGH" or .severity == "CRITICAL" or .severity == "MEDIUM") | "\(.severity)\t\(.id)\t\(.finding)"' "$out"
say "HIGH or CRITICAL findings: $bad"
rm -rf "$work"
[ "$bad" -eq 0 ]
