#!/usr/bin/env bash
# Back-test a registry version in an ephemeral namespace of the current kube context:
#   VERSION=N infra/backtest/run.sh        (or `make backtest-cluster VERSION=N`)
# Applies infra/backtest with the image tag v<N> and MODEL_VERSION=N, waits for the replay Job, writes the
# logs to reports/, and deletes the namespace whatever happens. Exit status: the Job's (0 = completed).
# Environment: MLFLOW_TRACKING_URI (a server the cluster reaches; required) and the optional
# MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN and DATA_URI go into the Job's
# Secret; IMAGE_REPOSITORY, IMAGE_DIGEST, BACKTEST_TIMEOUT (seconds), KUBECTL, REPORTS_DIR.
set -euo pipefail

version="${VERSION:-}"
if [[ ! "$version" =~ ^[1-9][0-9]{0,8}$ ]]; then
  echo "VERSION must be a registry version number (e.g. the output of \`make candidate\`): usage VERSION=N $0" >&2
  exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
kubectl="${KUBECTL:-kubectl}"
namespace="{{ cookiecutter.k8s_namespace }}-backtest"
image_repository="${IMAGE_REPOSITORY:-{{ cookiecutter.container_registry }}/{{ cookiecutter.project_slug }}}"
timeout="${BACKTEST_TIMEOUT:-3600}"
reports="${REPORTS_DIR:-$root/reports}"
secret_vars=(MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN DATA_URI)

case "${MLFLOW_TRACKING_URI:-}" in
  http://* | https://* | databricks*) ;;
  *)
    echo "MLFLOW_TRACKING_URI must name an MLflow server the cluster can reach (got '${MLFLOW_TRACKING_URI:-}');" \
      "a local store back-tests on loopback instead: make backtest VERSION=$version" >&2
    exit 2
    ;;
esac

mkdir -p "$root/build" "$reports"
# A throwaway overlay inside the repo, so it can refer to infra/backtest by a relative path.
work="$(mktemp -d "$root/build/backtest.XXXXXX")"
cleanup() {
  local status=$?
  echo "Deleting namespace $namespace"
  "$kubectl" delete namespace "$namespace" --ignore-not-found --wait=false || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

umask 077
for name in "${secret_vars[@]}"; do
  if [[ -n "${!name:-}" ]]; then printf '%s=%s\n' "$name" "${!name}"; fi
done > "$work/mlflow.env"
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - ../../infra/backtest"
  echo "images:"
  echo "  - name: {{ cookiecutter.container_registry }}/{{ cookiecutter.project_slug }}"
  echo "    newName: $image_repository"
  echo "    newTag: \"v$version\""
  if [[ -n "${IMAGE_DIGEST:-}" ]]; then echo "    digest: $IMAGE_DIGEST"; fi
  echo "configMapGenerator:"
  echo "  - name: model"
  echo "    behavior: merge"
  echo "    literals:"
  echo "      - MODEL_VERSION=$version"
  echo "secretGenerator:"
  echo "  - name: mlflow"
  echo "    envs:"
  echo "      - mlflow.env"
} > "$work/kustomization.yaml"

echo "Back-testing version $version ($image_repository:v$version) in namespace $namespace"
"$kubectl" apply -k "$work"

deadline=$((SECONDS + timeout))
result=""
while [[ -z "$result" ]]; do
  conditions="$("$kubectl" -n "$namespace" get job backtest \
    -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')"
  case " $conditions " in
    *" Complete "*) result=passed ;;
    *" Failed "*) result=failed ;;
    *)
      if ((SECONDS >= deadline)); then
        result=timeout
      else
        sleep 10
      fi
      ;;
  esac
done

log="$reports/backtest-cluster-v$version.log"
{
  echo "# job/backtest ($result)"
  "$kubectl" -n "$namespace" logs job/backtest --all-containers || true
  echo "# candidate"
  "$kubectl" -n "$namespace" logs deployment/{{ cookiecutter.project_slug }} --all-containers --tail=200 || true
} > "$log" 2>&1
echo "Back-test of version $version: $result; logs in $log"
[[ "$result" == passed ]]
