#!/usr/bin/env bash
# Install what the integration tests and the demo need when it is missing: etcd and PostgreSQL 15 (Debian packages),
# and groff/man/mandoc/zsh/fish for the man page and completion tests.
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql-15)
# tests/integration/test_docs.py: lint the man pages and drive the completion scripts in real shells.
command -v groff >/dev/null 2>&1 || need+=(groff-base)
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v mandoc >/dev/null 2>&1 || need+=(mandoc)
command -v zsh >/dev/null 2>&1 || need+=(zsh)
command -v fish >/dev/null 2>&1 || need+=(fish)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the packages from starting system services: the tests start their own.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
