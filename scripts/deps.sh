#!/usr/bin/env bash
# Installs the system packages fastpm's run and tests need, when they are missing:
#   run : php-cgi (the default config serves php-examples/ through it)
#   test: nginx, apache2, lighttpd (the web servers tests/webservers.rs puts in front), php-cgi,
#         php-fpm (the benchmark and comparison peer), cgi-fcgi (libfcgi-bin), ss (iproute2),
#         unshare/sysctl (util-linux, procps), libfaketime (the wall-clock step test),
#         python3-prometheus-client (the OpenMetrics parser that reads /metrics in a test),
#         chromium (the dashboard test, headless), tmux (the `status --watch` terminal test),
#         redis-server (tests/redis_broker.rs starts one: the Redis broker of held requests, §8),
#         php8.2-dev + libphp8.2-embed (PHP's headers to build the embedded-PHP SAPI, and libphp
#         for php_children = "embedded"; installed before cargo builds, see build.rs)
# Usage: scripts/deps.sh run|test
set -euo pipefail
want=${1:-test}
missing=()
# need NAME-OR-PATH PACKAGE: a command on PATH, or a file (program or library) at that path.
need() { command -v "$1" >/dev/null 2>&1 || [ -e "$1" ] || missing+=("$2"); }
need php-cgi php8.2-cgi
if [ "$want" = test ]; then
  need nginx nginx
  need /usr/sbin/apache2 apache2
  need /usr/sbin/lighttpd lighttpd
  need cgi-fcgi libfcgi-bin
  need /usr/sbin/php-fpm8.2 php8.2-fpm
  need ss iproute2
  need sysctl procps
  need unshare util-linux
  need curl curl
  need /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 libfaketime
  need /usr/lib/python3/dist-packages/prometheus_client/openmetrics/parser.py python3-prometheus-client
  need chromium chromium
  need tmux tmux
  need redis-server redis-server
  need php-config8.2 php8.2-dev
  need /usr/lib/libphp8.2.so libphp8.2-embed
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "scripts/deps.sh: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
