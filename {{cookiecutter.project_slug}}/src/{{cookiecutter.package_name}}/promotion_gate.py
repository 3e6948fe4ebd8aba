"""The cluster's own promotion gate: may the version and image Flagger is rolling out reach full traffic?

A pin merged to `deploy/production/`, a `kubectl set image` or an edited `model` ConfigMap skips
`make promote`; the Canary then asks this gate (its confirm-promotion webhook) before promoting. The gate
reads what is actually rolled out from the Kubernetes API (cluster.py: the target Deployment's serving image
and the model version its pods get), not from the webhook's metadata (pinned from git, blind to hand changes;
when present it must agree), and answers from the registry: yes only when production's registered model holds
a release of exactly that version whose copy carries a complete approval (training and back-test evidence,
four-eyes, approved for production) bound to that image digest. Anything else, including a registry or a
cluster it cannot read, is a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from {{ cookiecutter.package_name }} import ci, cluster, registry
from {{ cookiecutter.package_name }}.promote import PromotionRefused, check_four_eyes, check_training_evidence

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

GATED_ENVIRONMENT = "production"
IMAGE_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})")
MAX_FIELD = 512  # longer values are not what Flagger sends


class GateRefusal(Exception):
    """Not approved for full traffic; the message is the one line Flagger logs and the event shows."""


@dataclass(frozen=True)
class Request:
    """Flagger's question: which Canary, and what its webhook metadata claims (pinned from git; optional)."""

    namespace: str
    name: str
    version: str | None
    image: str | None

    @property
    def canary(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Rollout:
    """What the Canary is rolling out, as the cluster runs it."""

    canary: str
    version: str
    image: str
    digest: str


def _text(fields: Mapping[str, Any], key: str, where: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD or not value.isprintable():
        raise GateRefusal(
            f"{where}{key} is missing or not a short printable string: check the Canary webhook"
        )
    return value


def parse_request(payload: object) -> Request:
    """Flagger's webhook payload (name, namespace, phase, checksum, metadata), checked field by field."""
    if not isinstance(payload, dict) or not isinstance(payload.get("metadata", {}), dict):
        raise GateRefusal("the request is not Flagger's webhook payload (a JSON object with metadata)")
    metadata = payload.get("metadata", {})
    version = _text(metadata, "model_version", "metadata.") if "model_version" in metadata else None
    image = _text(metadata, "image", "metadata.") if "image" in metadata else None
    return Request(_text(payload, "namespace", ""), _text(payload, "name", ""), version, image)


def _digest(image: str, where: str) -> str:
    digest = IMAGE_DIGEST.fullmatch(image[image.find("@") :]) if "@" in image else None
    if digest is None:
        raise GateRefusal(
            f"{where} image {image!r} is not pinned by digest (name@sha256:<64 hex>): push the image with"
            " `make image` before promoting, so the promotion commit pins its digest"
        )
    return digest.group(1)


def observed_rollout(request: Request, workload: cluster.Workload, name: str) -> Rollout:
    """The rollout as the cluster runs it; the webhook metadata, where present, must say the same."""
    where = f"Deployment {workload.deployment}"
    env, sources = workload.environment, workload.sources
    if env.get("MODEL_NAME", name) != name:
        raise GateRefusal(
            f"{where}'s pods get MODEL_NAME={env['MODEL_NAME']!r} ({sources.get('MODEL_NAME')}), but this"
            f" gate guards {name!r}: revert the hand edit"
        )
    variable = "MODEL_VERSIONS" if env.get("MODEL_VERSIONS") else "MODEL_VERSION"
    try:
        version = registry.parse_version(env.get(variable), variable)
    except registry.RegistryError as error:
        origin = f" ({sources[variable]})" if variable in sources else ""
        raise GateRefusal(f"{where}'s pods: {error}{origin}; the gate approves one version") from None
    digest = _digest(workload.image, f"{where}'s serving")
    claims = (("model_version", request.version, version), ("image", request.image, workload.image))
    for what, claim, actual in claims:
        if claim is not None and claim != actual:
            raise GateRefusal(
                f"the Canary's webhook says {what} {claim!r} but {where} rolls out {actual!r}: the cluster"
                " was changed by hand (kubectl set image/edit); revert it, or release it with `make promote`"
            )
    return Rollout(canary=request.canary, version=version, image=workload.image, digest=digest)


def check_rollout(client: MlflowClient, name: str, rollout: Rollout) -> str:
    """The approval that lets this rollout through, as one line; GateRefusal with the reason otherwise."""
    environment, number = GATED_ENVIRONMENT, rollout.version
    try:
        copy = registry.environment_copy(client, name, environment)
        held = registry.source_of(copy, name) if copy is not None else None
    except registry.RegistryError as error:
        raise GateRefusal(str(error)) from None
    if copy is None or held != number:
        now = f"v{held}" if held else "nothing"
        raise GateRefusal(
            f"the registry's {environment} release is {now}, not v{number}: this rollout bypassed the gate;"
            f" release v{number} with `make promote` (or revert the pin)"
        )
    tags = copy.tags
    approvers = [who for who in tags.get(f"approved_by_{environment}", "").split(",") if who.strip()]
    if not approvers:
        raise GateRefusal(f"v{number} has no {environment} approval on record: promote it through the gate")
    try:
        check_four_eyes(approvers, number, tags)
        check_four_eyes(tags.get(registry.RELEASED_BY, "").split(","), number, tags)
        check_training_evidence(number, tags, environment)
    except PromotionRefused as refusal:
        raise GateRefusal(str(refusal)) from None
    except ci.ApprovalError as error:  # a look-alike or malformed name on record: no approval can be read
        raise GateRefusal(
            f"v{number}'s approvals on record cannot be checked ({error}): release it again with"
            " `make promote`, approved under exact account names"
        ) from None
    if tags.get("backtest_verdict") != "passed":
        raise GateRefusal(
            f"v{number} has no passed back-test on record (backtest_verdict="
            f"{tags.get('backtest_verdict', 'missing')})"
        )
    approved_digest = tags.get("image_digest", "")
    if not approved_digest:
        raise GateRefusal(
            f"v{number} was approved without an image digest: build and push it with `make image`, then"
            " release a version whose image digest is on record"
        )
    if approved_digest != rollout.digest:
        raise GateRefusal(
            f"image {rollout.digest} is not the image approved for v{number} ({approved_digest}): only the"
            " approved image may reach full traffic"
        )
    return (
        f"v{number} {rollout.digest} approved for {environment} by {', '.join(approvers)} at"
        f" {tags.get(f'approved_at_{environment}', '?')}"
    )


def decide(
    client: MlflowClient, name: str, payload: object, api: cluster.Api | None = None
) -> tuple[int, str]:
    """Flagger's answer: 200 lets the Canary promote, 403 halts it; the line says why either way."""
    try:
        request = parse_request(payload)
        try:
            workload = cluster.rolled_out(api or cluster.Api.from_env(), request.namespace, request.name)
        except cluster.ClusterError as error:
            raise GateRefusal(f"the cluster cannot tell what is rolled out: {error}") from None
        rollout = observed_rollout(request, workload, name)
        return 200, f"approved: {rollout.canary} {check_rollout(client, name, rollout)}"
    except GateRefusal as refusal:
        return 403, f"refused: {refusal}"
    except Exception as error:  # a registry that cannot be read must never read as approved
        reason = " ".join(str(error).split())[:200]
        return 403, f"refused: the registry cannot be read ({type(error).__name__}: {reason})"
