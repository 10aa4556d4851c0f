#!/bin/bash
# EMR bootstrap action (runs on every node as hadoop): install the cluster owner's SSH
# public key for the hadoop user. Argument 1: the key, one OpenSSH line.
# Shipped by the portal; upload it with `manage.py upload_emr_bootstrap`.
set -euo pipefail
key="$1"
case "$key" in
  ssh-ed25519\ *|ssh-rsa\ *|ecdsa-sha2-nistp*) ;;
  *) echo "not an SSH public key" >&2; exit 1 ;;
esac
install -d -m 700 "$HOME/.ssh"
touch "$HOME/.ssh/authorized_keys"
chmod 600 "$HOME/.ssh/authorized_keys"
grep -qxF "$key" "$HOME/.ssh/authorized_keys" || printf '%s\n' "$key" >> "$HOME/.ssh/authorized_keys"
