#!/bin/sh
# Start Redis with a single ACL user, "portal", whose password comes from $REDIS_PASSWORD
# (never from a command line, where `ps` shows it). The default user is off, so nothing
# reaches Redis without the password, and "portal" may not run the administrative commands
# (@admin: CONFIG, DEBUG, SHUTDOWN, ACL, MODULE, REPLICAOF, SAVE, MONITOR...) nor FLUSHALL
# and FLUSHDB: a stolen password can queue messages, not reconfigure or wipe the server.
# Extra arguments go to redis-server. Used by docker/compose.yml; tests/portal/test_redis.py
# runs the portal's Celery through exactly these rules.
set -eu
: "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
case $REDIS_PASSWORD in
  *[[:space:]]*) echo "REDIS_PASSWORD must not contain spaces (use e.g. openssl rand -hex 32)" >&2; exit 1 ;;
esac
acl=${REDIS_ACL_FILE:-/tmp/users.acl}
umask 077
printf 'user default off\nuser portal on >%s ~* &* +@all -@admin -flushall -flushdb\n' "$REDIS_PASSWORD" >"$acl"
exec redis-server --aclfile "$acl" "$@"
