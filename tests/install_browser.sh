#!/usr/bin/env bash
# The console tests drive Debian's Chromium through Playwright (no browser download). `make test`
# runs this when chromium is missing; without root or apt-get it says so and the tests skip
# (or fail, when ATELIER_REQUIRE_BROWSER=1 as in CI).
set -uo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no root or apt-get here; install Debian's chromium to run the console tests" >&2
  exit 0
fi
echo "install_browser: installing Debian's chromium (about a minute)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
command -v chromium >/dev/null 2>&1 || echo "install_browser: chromium could not be installed" >&2
exit 0
