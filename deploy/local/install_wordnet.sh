#!/usr/bin/env bash
# WordNet 3.0 for the prompt interpreter (worker/wordnet.py): Debian's wordnet-base, about 30 MB
# under /usr/share/wordnet. `make` runs this before building the venv; without root or apt-get it
# says so, and the interpreter reads unlisted product words by similarity alone (the WordNet
# tests then skip, or fail where ATELIER_REQUIRE_WORDNET=1, as in CI).
set -uo pipefail
if [ -f /usr/share/wordnet/data.noun ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_wordnet: no root or apt-get here; install Debian's wordnet-base (or set ATELIER_WORDNET_DIR)" >&2
  exit 0
fi
echo "install_wordnet: installing Debian's wordnet-base" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null; }
[ -f /usr/share/wordnet/data.noun ] || echo "install_wordnet: wordnet-base could not be installed" >&2
exit 0
