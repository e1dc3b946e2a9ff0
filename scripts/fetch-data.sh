#!/usr/bin/env bash
# Fetches, when missing, the data files the edge reads to know its visitors, into DIR
# (default ./data). Nothing of them is committed; both come from package registries:
#   GeoLite2-City.mmdb  MaxMind's GeoLite2 City database (2018 edition), from PyPI's
#                       maxminddb-geolite2 package
#   regexes.yaml        the ua-parser project's uap-core user-agent rules, from npm's uap-core
# Usage: scripts/fetch-data.sh [DIR]
set -euo pipefail
dir="${1:-data}"
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ ! -s "$dir/GeoLite2-City.mmdb" ]; then
  pkg=maxminddb-geolite2-2018.703
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "maxminddb-geolite2==2018.703" -d "$tmp"
  tar xzf "$tmp/$pkg.tar.gz" --no-same-owner -C "$tmp" "$pkg/_maxminddb_geolite2/GeoLite2-City.mmdb"
  mv "$tmp/$pkg/_maxminddb_geolite2/GeoLite2-City.mmdb" "$dir/GeoLite2-City.mmdb.$$.part"
  mv "$dir/GeoLite2-City.mmdb.$$.part" "$dir/GeoLite2-City.mmdb"
  echo "fetched $dir/GeoLite2-City.mmdb" >&2
fi

if [ ! -s "$dir/regexes.yaml" ]; then
  (cd "$tmp" && npm pack --silent uap-core >/dev/null)
  tar xzf "$tmp"/uap-core-*.tgz --no-same-owner -C "$tmp" package/regexes.yaml
  mv "$tmp/package/regexes.yaml" "$dir/regexes.yaml.$$.part"
  mv "$dir/regexes.yaml.$$.part" "$dir/regexes.yaml"
  echo "fetched $dir/regexes.yaml" >&2
fi
