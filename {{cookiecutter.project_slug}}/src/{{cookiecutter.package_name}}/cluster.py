"""What the cluster actually rolls out: the canary target Deployment's serving image and the model variables
its pods get, read from the Kubernetes API with the gate pod's own service-account token.

The Canary's webhook metadata is pinned from git, so a `kubectl set image` or an edited ConfigMap does not
change it; the gate judges what this module reads instead. Standard library only (urllib, ssl), one short
timeout per request, no proxy and no redirect (the token goes to the API server and nowhere else).

Environment (defaults are the standard in-cluster ones; tests point them at a stand-in API):
  GATE_KUBERNETES_API         API base URL (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT_HTTPS);
                              plain http is accepted for a loopback address only
  GATE_KUBERNETES_TOKEN_FILE  bearer token (default /var/run/secrets/kubernetes.io/serviceaccount/token)
  GATE_KUBERNETES_CA_FILE     CA bundle of the API server (default .../serviceaccount/ca.crt)
"""

from __future__ import annotations

import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_VARIABLE = "GATE_KUBERNETES_API"
TOKEN_VARIABLE = "GATE_KUBERNETES_TOKEN_FILE"  # nosec B105 # the name of a variable, not a token
CA_VARIABLE = "GATE_KUBERNETES_CA_FILE"
TIMEOUT_SECONDS = 5
MAX_RESPONSE_BYTES = 4 << 20  # a Deployment or ConfigMap is a few kB
SERVING_CONTAINER = "serving"
# The variables that say which model the serving pods load (serving.py: MODEL_VERSIONS, else MODEL_VERSION).
MODEL_VARIABLES = ("MODEL_NAME", "MODEL_VERSION", "MODEL_VERSIONS")
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS label
OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS subdomain
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ClusterError(Exception):
    """The cluster could not tell what is being rolled out; the gate refuses. The message says what to fix."""


@dataclass(frozen=True)
class Workload:
    """The serving container of a Deployment as its pods get it: image, model variables and their source."""

    deployment: str  # namespace/name
    image: str
    environment: Mapping[str, str]  # the MODEL_VARIABLES that are set
    sources: Mapping[str, str] = field(default_factory=dict)  # variable -> where it came from


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The API server never redirects a GET of an object: a redirect would carry the token elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


@dataclass(frozen=True)
class Api:
    """Where the Kubernetes API is and how the gate proves who it is."""

    base: str
    token_file: Path
    ca_file: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Api:
        """The in-cluster API, or the one GATE_KUBERNETES_API names; ClusterError outside a cluster."""
        base = env.get(API_VARIABLE, "").strip()
        if not base:
            host = env.get("KUBERNETES_SERVICE_HOST", "")
            port = env.get("KUBERNETES_SERVICE_PORT_HTTPS", "443")
            if not host:
                raise ClusterError(
                    "no Kubernetes API to read the rollout from (KUBERNETES_SERVICE_HOST is unset): run the"
                    f" gate in the cluster with its service account, or set {API_VARIABLE}"
                )
            base = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        parts = urllib.parse.urlsplit(base)
        if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)):
            raise ClusterError(
                f"{API_VARIABLE}={base!r} is not an https URL: the service-account token is only sent over"
                " TLS (plain http only to a loopback address, for tests)"
            )
        token = env.get(TOKEN_VARIABLE) or str(SERVICE_ACCOUNT / "token")
        ca = env.get(CA_VARIABLE) or str(SERVICE_ACCOUNT / "ca.crt")
        return cls(base=base.rstrip("/"), token_file=Path(token), ca_file=Path(ca))

    def _opener(self) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), _NoRedirect()]
        if self.base.startswith("https://"):
            try:
                context = ssl.create_default_context(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as error:
                raise ClusterError(
                    f"the Kubernetes API's CA bundle {self.ca_file} cannot be read ({error}): mount the"
                    f" service account (automountServiceAccountToken: true) or set {CA_VARIABLE}"
                ) from None
            handlers.append(urllib.request.HTTPSHandler(context=context))
        return urllib.request.build_opener(*handlers)

    def _token(self) -> str:
        try:  # read on every call: the kubelet rotates projected tokens
            token = self.token_file.read_text().strip()
        except OSError as error:
            raise ClusterError(
                f"the service-account token {self.token_file} cannot be read ({error.strerror or error}):"
                f" mount it (automountServiceAccountToken: true) or set {TOKEN_VARIABLE}"
            ) from None
        if not token or not token.isprintable():
            raise ClusterError(f"the service-account token {self.token_file} is empty or not text")
        return token

    def get(self, path: str) -> dict[str, Any]:
        """One object from the API as a JSON object; ClusterError for anything but a readable 200."""
        request = urllib.request.Request(
            self.base + path,
            headers={"Authorization": f"Bearer {self._token()}", "Accept": "application/json"},
        )
        try:
            # The scheme is checked in from_env: https, or http to a loopback address.
            with self._opener().open(request, timeout=TIMEOUT_SECONDS) as response:  # nosec B310 # see from_env
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            hint = {
                401: "the service-account token was not accepted",
                403: "the gate's Role must allow `get` on it (deploy/gate/rbac.yaml)",
                404: "it does not exist",
            }.get(error.code, "the API server refused it")
            raise ClusterError(f"the Kubernetes API answered {error.code} to GET {path}: {hint}") from None
        except (OSError, ValueError) as error:  # URLError, timeouts, TLS failures
            reason = getattr(error, "reason", None) or error
            raise ClusterError(f"the Kubernetes API at {self.base} cannot be reached ({reason})") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise ClusterError(f"the Kubernetes API's answer to GET {path} is larger than any object")
        try:
            document = json.loads(body)
        except ValueError:
            raise ClusterError(f"the Kubernetes API's answer to GET {path} is not JSON") from None
        if not isinstance(document, dict):
            raise ClusterError(f"the Kubernetes API's answer to GET {path} is not an object")
        return document


def _name(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ClusterError(f"{what} {value!r} is not a Kubernetes name: check the Canary")
    return value


def _deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def _configmap(api: Api, namespace: str, name: str) -> Mapping[str, Any]:
    _name(name, OBJECT_NAME, "ConfigMap")
    data = api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}").get("data") or {}
    if not isinstance(data, dict):
        raise ClusterError(f"ConfigMap {namespace}/{name} has no readable data")
    return data


def _serving_container(deployment: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The serving container; any other container or init container in the pod template is refused."""
    try:
        pod = deployment["spec"]["template"]["spec"]
        containers = [*pod["containers"], *(pod.get("initContainers") or [])]
        names = [container["name"] for container in containers]
    except (KeyError, TypeError):
        raise ClusterError(f"Deployment {where} has no pod template with named containers") from None
    if names != [SERVING_CONTAINER]:
        raise ClusterError(
            f"Deployment {where}'s pods run the containers {names}, not only {SERVING_CONTAINER!r}: the gate"
            " approves the serving image alone; remove the others (or revert the hand edit)"
        )
    return containers[0]


def _environment(api: Api, namespace: str, container: Mapping[str, Any], where: str) -> tuple[dict, dict]:
    """The MODEL_VARIABLES as the pods get them: envFrom in order (the last source wins), then env over it."""
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "") if isinstance(source, dict) else ""
        if isinstance(source, dict) and isinstance(source.get("configMapRef"), dict):
            name = str(source["configMapRef"].get("name", ""))
            for key, value in _configmap(api, namespace, name).items():
                if f"{prefix}{key}" in MODEL_VARIABLES:
                    values[f"{prefix}{key}"], sources[f"{prefix}{key}"] = str(value), f"ConfigMap {name}"
        else:
            raise ClusterError(
                f"Deployment {where}'s serving container takes its environment from {source!r}, which the"
                " gate cannot read (only ConfigMaps): it cannot tell which model version the pods get"
            )
    for variable in container.get("env") or []:
        key = variable.get("name") if isinstance(variable, dict) else None
        if key not in MODEL_VARIABLES:
            continue
        if "value" in variable:
            values[key], sources[key] = str(variable["value"]), "the Deployment's env"
            continue
        reference = (variable.get("valueFrom") or {}).get("configMapKeyRef")
        if not isinstance(reference, dict) or variable.get("valueFrom", {}).keys() != {"configMapKeyRef"}:
            raise ClusterError(
                f"Deployment {where} sets {key} from {variable.get('valueFrom')!r}, which the gate cannot"
                " read (only ConfigMaps): it cannot tell which model version the pods get"
            )
        name = str(reference.get("name", ""))
        data = _configmap(api, namespace, name)
        if reference.get("key") not in data:
            raise ClusterError(f"ConfigMap {namespace}/{name} has no key {reference.get('key')!r} for {key}")
        values[key], sources[key] = str(data[reference["key"]]), f"ConfigMap {name}"
    return values, sources


def rolled_out(api: Api, namespace: str, name: str) -> Workload:
    """The serving container of Deployment namespace/name (the Canary's target) as its pods get it."""
    namespace = _name(namespace, NAMESPACE, "namespace")
    name = _name(name, OBJECT_NAME, "Deployment")
    where = f"{namespace}/{name}"
    container = _serving_container(api.get(_deployment_path(namespace, name)), where)
    image = container.get("image")
    if not isinstance(image, str) or not image:
        raise ClusterError(f"Deployment {where}'s serving container has no image")
    values, sources = _environment(api, namespace, container, where)
    return Workload(deployment=where, image=image, environment=values, sources=sources)
