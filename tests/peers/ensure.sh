#!/usr/bin/env bash
# Installs the Debian peers the tests drive (only when missing) and starts the local
# PostgreSQL, Redis and RabbitMQ when they are down. Idempotent; safe to run every time.
set -uo pipefail

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v linphonec >/dev/null 2>&1 || need+=(linphone-cli)
command -v rtpengine >/dev/null 2>&1 || need+=(rtpengine-daemon)
# SIP capture's real readers: sngrep opens the edge's pcap files and listens for its HEP.
command -v sngrep >/dev/null 2>&1 || need+=(sngrep)
# The web console's tests drive Debian's Chromium through its chromedriver (selenium).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# Kamailio's PostgreSQL driver: the dialog benchmark's peer writes its CDRs there (acc).
ls /usr/lib/*/kamailio/modules/db_postgres.so >/dev/null 2>&1 || need+=(kamailio-postgres-modules)
# Kamailio's presence modules: the presence benchmark's peer (presence + presence_xml).
ls /usr/lib/*/kamailio/modules/presence.so >/dev/null 2>&1 || need+=(kamailio-presence-modules)
for extra in ${SIPMESH_EXTRA_PEERS:-}; do need+=("$extra"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  # A failed install must stop here with its reason, not surface later as odd test failures.
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "ensure.sh: could not install ${need[*]}" >&2; exit 1; }
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! port_open 6379; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if ! port_open 3306; then
  # MariaDB: `sipmesh import opensips` is tested against a real OpenSIPS 2.4 MySQL schema.
  echo "starting MariaDB"
  (service mariadb start || service mysql start) >/dev/null 2>&1 || true
fi
if ! port_open 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached || true
  rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
exit 0
