#!/usr/bin/env bash
# Run testssl.sh (Debian package `testssl.sh`, installed if missing) against
# the daemon's TLS listener on loopback. It fails on any MEDIUM, HIGH or
# CRITICAL finding (weak protocols or ciphers, missing forward secrecy, known
# vulnerabilities such as Heartbleed, ROBOT, CRIME/BREACH, POODLE, insecure
# renegotiation, certificate problems), on a scan that did not finish (FATAL
# entries, no protocol or vulnerability results, or the time limit) and
# when TLS 1.3 is not offered or SSLv2/SSLv3/TLS 1.0/1.1 are. LOW and INFO
# findings are listed, not judged (e.g. no DNS CAA record for 127.0.0.1).
# About 2.5 minutes on the 2-core CI machine; scripts/test.sh runs it.
#
# Usage: benches/testssl.sh [--timeout SECONDS]  (default 600; report in
#        .cache/testssl/<time>.json)
# Environment: SPOTTER_BIN (a built spotter), SPOTTER_TESTDATA.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$REPO/scripts/api-daemon.sh"
limit=600
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; limit="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
[[ "$limit" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"
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
started=$SECONDS
# testssl.sh exits non-zero for reasons of its own (it counts findings), so
# its exit code is not the verdict; the time limit and the JSON are.
rc=0
timeout --kill-after=10 "$limit" testssl --quiet --color 0 --warnings off --connect-timeout 10 \
    --openssl-timeout 10 --add-ca "$pki/ca.pem" --jsonfile "$out" "127.0.0.1:$port" > "$work/testssl.txt" || rc=$?
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || die "testssl.sh did not finish within $limit s"
[ -s "$out" ] || die "testssl.sh wrote no report (exit $rc); its output: $(tail -n 20 "$work/testssl.txt")"
jq -r '.[] | select(.severity != "OK" and .severity != "INFO") | "\(.severity)\t\(.id)\t\(.finding)"' "$out"
bad="$(jq '[.[] | select(.severity == "MEDIUM" or .severity == "HIGH" or .severity == "CRITICAL" or .severity == "FATAL")] | length' "$out")"
# What the scan must have seen, so that a scan that reached nothing does not pass.
finding() { jq -r --arg id "$1" '[.[] | select(.id == $id) | .finding][0] // "missing"' "$out"; }
problems=()
case "$(finding TLS1_3)" in offered*) ;; *) problems+=("TLS1_3: $(finding TLS1_3)") ;; esac
for p in SSLv2 SSLv3 TLS1 TLS1_1; do
    case "$(finding "$p")" in "not offered"*) ;; *) problems+=("$p: $(finding "$p")") ;; esac
done
for id in heartbleed ROBOT secure_renego cert_chain_of_trust; do
    [ "$(finding "$id")" != missing ] || problems+=("$id: not tested (scan incomplete)")
done
say "testssl.sh: $((SECONDS - started)) s; MEDIUM, HIGH, CRITICAL or FATAL findings: $bad; other problems: ${#problems[@]}"
for p in "${problems[@]}"; do say "problem: $p"; done
rm -rf "$work"
[ "$bad" -eq 0 ] && [ ${#problems[@]} -eq 0 ]
