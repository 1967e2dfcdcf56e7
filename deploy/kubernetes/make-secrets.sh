#!/bin/sh
# Makes the two Secrets statefulset.yaml mounts, as YAML on stdout:
#   svc-overlay-tls   ca.pem, and svc-overlay-N.pem / .key for each pod
#   svc-overlay-auth  root.key (tokens are checked against it) and
#                     relay.token (the cluster's op=relay token)
# Each pod has a certificate of its own (a TLS node's id is its key's
# SHA-256), for its pod name and for the names every node shares
# (svc-overlay-headless, the seed name and tls.peer_name; svc-overlay, the
# clients' Service).
#
# Usage: make-secrets.sh [REPLICAS] [NAMESPACE] [PKI_DIR] > secrets.yaml
#   PKI_DIR (default ./overlay-pki) keeps the CA and the root key: run again
#   with more replicas to add pods' certificates from the same CA and key.
#   SVC_OVERLAY names the binary that mints the token (default: on PATH).
set -eu
replicas=${1:-3}
ns=${2:-default}
pki=${3:-./overlay-pki}
bin=${SVC_OVERLAY:-svc-overlay}
case $replicas in '' | *[!0-9]*) echo "REPLICAS must be a number" >&2; exit 2 ;; esac
mkdir -p "$pki"
chmod 700 "$pki"
if [ ! -f "$pki/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
        -subj "/CN=svc-overlay-ca" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
fi
if [ ! -f "$pki/root.key" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$pki/root.key")
fi
token=$("$bin" token mint --root-key-file "$pki/root.key" --op relay --id svc-overlay-cluster)
b64() { base64 -w0 < "$1"; }
# The head of a Secret named $1, up to its data: key.
secret() {
    cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $ns
  labels:
    app.kubernetes.io/name: svc-overlay
type: Opaque
data:
YAML
}
svc="$ns.svc"
secret svc-overlay-tls
printf '  ca.pem: %s\n' "$(b64 "$pki/ca.pem")"
i=0
while [ "$i" -lt "$replicas" ]; do
    pod=svc-overlay-$i
    if [ ! -f "$pki/$pod.pem" ]; then
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$pod" \
            -keyout "$pki/$pod.key" -out "$pki/$pod.csr" 2>/dev/null
        san="DNS:svc-overlay-headless,DNS:svc-overlay-headless.$svc,DNS:svc-overlay-headless.$svc.cluster.local"
        san="$san,DNS:$pod.svc-overlay-headless,DNS:$pod.svc-overlay-headless.$svc.cluster.local"
        san="$san,DNS:svc-overlay,DNS:svc-overlay.$svc,DNS:svc-overlay.$svc.cluster.local"
        printf 'subjectAltName=%s\n' "$san" > "$pki/$pod.ext"
        openssl x509 -req -in "$pki/$pod.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
            -days 365 -extfile "$pki/$pod.ext" -out "$pki/$pod.pem" 2>/dev/null
        rm -f "$pki/$pod.csr" "$pki/$pod.ext"
    fi
    printf '  %s.pem: %s\n  %s.key: %s\n' "$pod" "$(b64 "$pki/$pod.pem")" "$pod" "$(b64 "$pki/$pod.key")"
    i=$((i + 1))
done
echo ---
secret svc-overlay-auth
printf '  root.key: %s\n  relay.token: %s\n' "$(b64 "$pki/root.key")" "$(printf '%s' "$token" | base64 -w0)"
