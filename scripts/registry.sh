#!/usr/bin/env bash
# A real OCI registry (Debian's docker-registry, the CNCF distribution server) on loopback,
# for the OCI tests and benchmarks. Never used by pyro itself.
#
#   scripts/registry.sh install                     apt packages (docker-registry, apache2-utils)
#   scripts/registry.sh start DIR [--htpasswd FILE]  start one in DIR; prints 127.0.0.1:PORT
#   scripts/registry.sh stop DIR                    stop the one in DIR
#
# DIR gets config.yml, storage/ (blobs at storage/docker/registry/v2/blobs/sha256/..),
# registry.log (one access-log line per request, which tests count) and registry.pid.
set -euo pipefail
cmd="${1:-}"
case "$cmd" in
  install)
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    for p in docker-registry apache2-utils; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null
    done
    # The package enables a system-wide instance on :5000; the tests start their own.
    if [ "$(id -u)" -eq 0 ] && command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
      systemctl stop docker-registry || true
    fi
    ;;
  start)
    dir="$(realpath -m "${2:?usage: registry.sh start DIR [--htpasswd FILE]}")"
    htpasswd=""
    if [ "${3:-}" = "--htpasswd" ]; then htpasswd="$(realpath "${4:?--htpasswd needs a file}")"; fi
    mkdir -p "$dir/storage"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    {
      echo "version: 0.1"
      echo "log:"
      echo "  level: info"
      echo "  formatter: text"
      echo "storage:"
      echo "  filesystem:"
      echo "    rootdirectory: $dir/storage"
      echo "  delete:"
      echo "    enabled: true"
      echo "http:"
      echo "  addr: 127.0.0.1:$port"
      if [ -n "$htpasswd" ]; then
        echo "auth:"
        echo "  htpasswd:"
        echo "    realm: pyro-test"
        echo "    path: $htpasswd"
      fi
    } >"$dir/config.yml"
    setsid /usr/bin/docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
    echo $! >"$dir/registry.pid"
    for _ in $(seq 1 100); do
      code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)"
      if [ "$code" = 200 ] || [ "$code" = 401 ]; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null || break
      sleep 0.1
    done
    echo "registry in $dir did not come up; log:" >&2
    tail -20 "$dir/registry.log" >&2
    exit 1
    ;;
  stop)
    dir="${2:?usage: registry.sh stop DIR}"
    if [ -f "$dir/registry.pid" ]; then
      kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
      rm -f "$dir/registry.pid"
    fi
    ;;
  *)
    echo "usage: registry.sh install | start DIR [--htpasswd FILE] | stop DIR" >&2
    exit 2
    ;;
esac
