#!/usr/bin/env bash
# Java 17 and Maven (to fetch and run Apache Kafka from Maven Central) and
# PostgreSQL's server binaries. Installs what is missing when we may (root with
# apt-get); otherwise says what to install and fails.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
  || missing+=(postgresql)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)   # the AsyncAPI parser
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # promtool checks the alert rules
# The admin UI's browser tests (tests/browser/): Debian's Chromium and its ChromeDriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "flagsched needs: ${missing[*]} (install them with your package manager)" >&2
  exit 1
fi
