#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/kubernetes offline, against the API schemas of
# every Kubernetes version limiter supports, in strict mode (an unknown or misspelt field is an
# error). Takes about a second. Usage: bash scripts/validate-manifests.sh
#
# 1. The kustomization lists every manifest of the folder, and only files that exist.
# 2. If kubectl is installed, `kubectl kustomize` renders the folder, and the render must be
#    exactly the listed files' resources (the kustomization has no generators or transformers,
#    so a file that passes below is what `kubectl apply -k` sends).
# 3. kubernetes-validate --strict checks every resource of the listed files for each version
#    below; any error, any resource it has no schema for, and any version it does not support
#    fails the run.
#
# kubernetes-validate is installed by scripts/setup.sh (`./x setup`). The semantic checks (the
# ConfigMap is the shipped config, the daemon's paths are mounted, ...) are unit tests:
# limiter-user/src/deploy_tests.rs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/deploy/kubernetes
# Kubernetes 1.30 is the oldest supported: the container's appArmorProfile field is GA there.
VERSIONS=(1.30 1.31 1.32 1.33 1.34 1.35 1.36 1.37)

fail() {
  echo "validate-manifests: FAILED: $*" >&2
  exit 1
}

command -v kubernetes-validate >/dev/null \
  || fail "kubernetes-validate not found; run scripts/setup.sh (or: python3 -m pip install kubernetes-validate)"
# PyYAML comes with kubernetes-validate, which setup.sh installs with `python3 -m pip`.
PYTHON=python3
"$PYTHON" -c 'import yaml' 2>/dev/null || fail "$PYTHON cannot import yaml (PyYAML); run scripts/setup.sh"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# ---- 1. the kustomization and the folder agree -------------------------------------------------

LISTED=$("$PYTHON" - "$DIR" <<'PY'
import os, sys, yaml
d = sys.argv[1]
k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
extra = sorted(set(k) - {"apiVersion", "kind", "resources"})
if extra:
    sys.exit(f"kustomization.yaml: only `resources` is expected (render == files), found {extra}")
listed = k.get("resources") or []
present = sorted(
    os.path.relpath(os.path.join(root, f), d)
    for root, _, files in os.walk(d) for f in files
    if f != "kustomization.yaml")
problems = [f"listed but missing: {f}" for f in listed if f not in present]
problems += [f"not listed in kustomization.yaml resources: {f}" for f in present if f not in listed]
problems += [f"listed twice: {f}" for f in set(listed) if listed.count(f) > 1]
if problems:
    sys.exit("kustomization.yaml: " + "; ".join(problems))
print("\n".join(listed))
PY
) || fail "deploy/kubernetes/kustomization.yaml does not match the folder (above)"
[[ -n $LISTED ]] || fail "deploy/kubernetes/kustomization.yaml lists no resources"
mapfile -t FILES <<<"$LISTED"

# Resources as "kind/namespace/name", one per line, from YAML documents on stdin or in files.
resources() {
  "$PYTHON" -c '
import sys, yaml
docs = []
for f in sys.argv[1:] or ["-"]:
    docs += [d for d in yaml.safe_load_all(sys.stdin if f == "-" else open(f)) if d]
for d in docs:
    m = d.get("metadata") or {}
    print("%s/%s/%s" % (d.get("kind"), m.get("namespace", ""), m.get("name")))
' "$@" | sort
}

(cd "$DIR" && resources "${FILES[@]}") >"$TMP/files.txt"
COUNT=$(wc -l <"$TMP/files.txt")

# ---- 2. kustomize renders exactly those resources -------------------------------------------

if command -v kubectl >/dev/null; then
  kubectl kustomize "$DIR" >"$TMP/rendered.yaml" 2>"$TMP/kustomize.err" \
    || fail "kubectl kustomize deploy/kubernetes: $(cat "$TMP/kustomize.err")"
  resources <"$TMP/rendered.yaml" >"$TMP/rendered.txt"
  diff -u "$TMP/files.txt" "$TMP/rendered.txt" >"$TMP/render.diff" \
    || fail "kubectl kustomize renders other resources than the listed files:
$(cat "$TMP/render.diff")"
  RENDER="kubectl kustomize renders the same $COUNT resources"
else
  RENDER="kubectl not found: rendering not checked"
fi

# ---- 3. schemas, strict, every version ---------------------------------------------------------

ARGS=(--strict)
for v in "${VERSIONS[@]}"; do ARGS+=(-k "$v"); done
rc=0
(cd "$DIR" && kubernetes-validate "${ARGS[@]}" "${FILES[@]}") >"$TMP/validate.out" 2>&1 || rc=$?
# Every line must be a pass: a WARN (no schema for a kind) exits 0 but validated nothing.
BAD=$(grep -v '^INFO .* passed for resource ' "$TMP/validate.out" || true)
PASSED=$(grep -c '^INFO .* passed for resource ' "$TMP/validate.out" || true)
WANT=$((COUNT * ${#VERSIONS[@]}))
if ((rc != 0)) || [[ -n $BAD ]] || ((PASSED != WANT)); then
  echo "$BAD" >&2
  fail "kubernetes-validate --strict (exit $rc): $PASSED of $WANT resource checks passed"
fi

echo "validate-manifests: ok: ${#FILES[@]} files, $COUNT resources, strict schemas of Kubernetes" \
  "${VERSIONS[0]} to ${VERSIONS[-1]} ($PASSED checks, kubernetes-validate" \
  "$(kubernetes-validate --version)); $RENDER"
