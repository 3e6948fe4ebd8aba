"""The exact files each option combination renders: a table, so a change to the tree is a visible diff."""

from __future__ import annotations

COMMON = {
    ".gitignore",
    ".pre-commit-config.yaml",
    "Makefile",
    "README.md",
    "pyproject.toml",
    "src/{package}/__init__.py",
    "src/{package}/__main__.py",
    "src/{package}/cli.py",
    "src/{package}/settings.py",
    "src/{package}/inputs.py",
    "src/{package}/registry.py",
    "tests/test_cli.py",
}

# Data gate, training, tracking and lineage.
ML_CORE = {
    "config/train.toml",
    "config/train-worse.toml",
    "src/{package}/contract.py",
    "src/{package}/data.py",
    "src/{package}/validation.py",
    "src/{package}/features.py",
    "src/{package}/evaluate.py",
    "src/{package}/snapshot.py",
    "src/{package}/provenance.py",
    "src/{package}/train.py",
    "src/{package}/lineage.py",
    "src/{package}/reproduce.py",
    "tests/conftest.py",
    "tests/test_data_gate.py",
    "tests/test_training.py",
}

# Many models: one model per store x category, trained on local processes or Spark, released as one version.
MANY_MODELS = {
    "src/{package}/fitting.py",
    "src/{package}/scenario_models.py",
    "src/{package}/scenario_engines.py",
    "src/{package}/scenario_release.py",
    "src/{package}/spark_engine.py",
    "tests/test_scenarios.py",
    "tests/test_scenario_release.py",
    "bench/scenarios.py",
}

# Serving, back-test and its evidence report, promotion with GitOps pins, rollback and the local release flow.
RELEASE = {
    "config/backtest.toml",
    "src/{package}/serve.py",
    "src/{package}/serving.py",
    "src/{package}/backtest.py",
    "src/{package}/backtest_record.py",
    "src/{package}/evidence.py",
    "src/{package}/evidence_report.py",
    "src/{package}/gitops.py",
    "src/{package}/promote.py",
    "src/{package}/release_demo.py",
    "tests/test_backtest.py",
    "tests/test_evidence.py",
    "tests/test_light_commands.py",
    "tests/test_serving.py",
    "tests/test_gitops.py",
    "tests/test_promote.py",
    "tests/test_bench_serve.py",
    "bench/__init__.py",
    "bench/workspace.py",
    "bench/train_log_register.py",
    "bench/serving_throughput.py",
    "bench/wrk.py",
    "bench/mlflow_server.py",
    "bench/release_commands.py",
}

# Serving image, GitOps manifests and back-test infrastructure-as-code.
DEPLOY = {
    ".dockerignore",
    "docker/Dockerfile",
    "src/{package}/image.py",
    "tests/test_image.py",
    "deploy/README.md",
    "deploy/base/kustomization.yaml",
    "deploy/base/deployment.yaml",
    "deploy/base/service.yaml",
    "deploy/base/poddisruptionbudget.yaml",
    "deploy/base/networkpolicy.yaml",
    "deploy/staging/kustomization.yaml",
    "deploy/staging/model.env",
    "deploy/staging/namespace.yaml",
    "deploy/production/kustomization.yaml",
    "deploy/production/model.env",
    "deploy/production/namespace.yaml",
    "deploy/flux/staging/kustomization.yaml",
    "deploy/flux/staging/source.yaml",
    "deploy/flux/staging/sync.yaml",
    "deploy/flux/production/kustomization.yaml",
    "deploy/flux/production/source.yaml",
    "deploy/flux/production/sync.yaml",
    "infra/backtest/README.md",
    "infra/backtest/kustomization.yaml",
    "infra/backtest/model.env",
    "infra/backtest/namespace.yaml",
    "infra/backtest/job.yaml",
    "infra/backtest/networkpolicy.yaml",
    "infra/backtest/run.sh",
}

# Identities from the CI system (trainer, approver, run), promotions as pull requests (every provider).
CI_RELEASE = {
    "src/{package}/ci.py",
    "src/{package}/release_pr.py",
    "tests/test_ci.py",
    "tests/test_release_pr.py",
}

# Closing the loop: batch forecasts (also a CronJob), monitoring with Evidently, the retraining trigger.
PRODUCTION_LOOP = {
    "config/monitor.toml",
    "deploy/base/cronjob-forecast.yaml",
    "src/{package}/forecast.py",
    "src/{package}/monitor_config.py",
    "src/{package}/monitoring.py",
    "src/{package}/retrain_trigger.py",
    "tests/test_forecast.py",
    "tests/test_monitoring.py",
    "tests/test_retrain_trigger.py",
}

# Template updates: the scheduled pipeline's steps (every provider).
TEMPLATE_UPDATE = {
    "src/{package}/template_update.py",
    "tests/test_template_update.py",
}

# Separation of duties: the cluster's promotion gate (Flagger Canary), registry events, registry permissions.
SEPARATION_OF_DUTIES = {
    "deploy/flux/production/gate.yaml",
    "deploy/gate/kustomization.yaml",
    "deploy/gate/gate.yaml",
    "deploy/gate/rbac.yaml",
    "deploy/production/canary.yaml",
    "deploy/production/autoscaler.yaml",
    "deploy/production/ingress.yaml",
    "src/{package}/adopt_releases.py",
    "src/{package}/cluster.py",
    "src/{package}/gate_server.py",
    "src/{package}/promotion_gate.py",
    "src/{package}/registry_events.py",
    "src/{package}/registry_permissions.py",
    "tests/test_adopt_releases.py",
    "tests/test_gate.py",
    "tests/test_registry_events.py",
    "tests/test_registry_permissions.py",
}

# A short guide per role, linked from the README's "Guides".
GUIDES = {
    "docs/data-scientist.md",
    "docs/ml-engineer.md",
    "docs/reviewer.md",
    "docs/platform-team.md",
}

BY_PROVIDER = {
    "github": {
        ".github/dependabot.yml",
        ".github/workflows/pr.yml",
        ".github/workflows/train.yml",
        ".github/workflows/rollback.yml",
        ".github/workflows/template-update.yml",
        ".github/workflows/monitor.yml",
        "docs/ci-github.md",
    },
    "azure": {
        "azure-pipelines/pr.yml",
        "azure-pipelines/train-release.yml",
        "azure-pipelines/rollback.yml",
        "azure-pipelines/template-update.yml",
        "azure-pipelines/monitor.yml",
        "docs/ci-azure.md",
        "renovate.json",
    },
    "jenkins": {
        "Jenkinsfile",
        "Jenkinsfile.template-update",
        "Jenkinsfile.monitor",
        "docs/ci-jenkins.md",
        "renovate.json",
    },
}


def expected_files(ci_provider: str, package: str) -> set[str]:
    """Files a render must contain, no more and no fewer."""
    return {
        path.format(package=package)
        for group in (
            COMMON,
            ML_CORE,
            MANY_MODELS,
            RELEASE,
            DEPLOY,
            CI_RELEASE,
            PRODUCTION_LOOP,
            TEMPLATE_UPDATE,
            SEPARATION_OF_DUTIES,
            GUIDES,
            BY_PROVIDER[ci_provider],
        )
        for path in group
    }
