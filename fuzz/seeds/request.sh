#!/usr/bin/env bash
# Makes a seed corpus for the request fuzz target: the shipped example request,
# and variants of it that reach the validation paths (an exception, an allowlist
# entry, specific users, a quoted and an unquoted version, anchors and aliases).
# Idempotent. Usage: fuzz/seeds/request.sh [DIR]   (default fuzz/corpus/request)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../corpus/request}
mkdir -p "$dir"
example="$here/../../rules/request.example.yaml"
cp "$example" "$dir/example.yaml"
# Without comments: shorter inputs mutate faster.
grep -v '^ *#' "$example" | grep -v '^$' > "$dir/bare.yaml"
cat > "$dir/small.yaml" <<'YAML'
version: 1
kind: request
name: Lab-Image
description: "Rocky 9 with the lab's tools \u00e9"
installed_software:
  - {name: tool, version: 1.10, path: /opt/tool}
exceptions: [{rule: hosts, reason: mirror}]
visibility: private
YAML
cat > "$dir/anchors.yaml" <<'YAML'
version: 1
name: &n Lab
description: *n
tags: [&t a, *t, *t]
users: [x]
visibility: specific-users
YAML
printf 'version: 1\nname: "a\\0b"\ndescription: x\n' > "$dir/nul.yaml"
