"""Champion/challenger per scenario: which model each scenario of a release serves, and how that is judged.

A per-scenario training fits every scenario afresh: the challengers. Before it registers its version it scores
production's model (the champion) on the same hold-out rows and, scenario by scenario, takes the challenger
only where `choose` says so; elsewhere the champion's own pickled model is carried over with its lineage (the
run it came from). The version registered is that composite, so the back-test, promotion, pins and rollback
treat it like any other version. The back-test then judges every scenario of it against production again,
with the same rule, over HTTP (`judge`). Both measure a scenario by its mean WAPE over the back-test windows
(config/backtest.toml), so they agree on the same data.
"""

from __future__ import annotations

import math
import pickle  # nosec B403 # our own fitted pipelines, unpickled only by our own ScenarioModels
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.backtest_record import Policy, ScenarioSummary, ScenarioVerdict
from {{ cookiecutter.package_name }}.contract import TARGET
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.scenario_engines import run_local
from {{ cookiecutter.package_name }}.scenario_models import ScenarioModels, scenario_names

if TYPE_CHECKING:  # fitting (scikit-learn) is imported by the training only: the back-test judges over HTTP
    from mlflow.tracking import MlflowClient

    from {{ cookiecutter.package_name }}.backtest import Replayed
    from {{ cookiecutter.package_name }}.fitting import TrainingResult


@dataclass(frozen=True)
class Choice:
    outcome: str  # one of registry.SCENARIO_OUTCOMES
    reason: str


def choose(challenger: float | None, champion: float | None, policy: Policy) -> Choice:
    """The rule for one scenario, from its mean WAPE over the windows: None where there is no model, NaN
    where there is one but no rows in the windows. A challenger replaces production's model when it meets
    the floor and is better; a scenario production has no model for (new) must meet the floor."""
    floor = policy.scenario_floor
    if champion is None:
        if challenger is None:
            return Choice("untrained", "no model for it, in this version or in production")
        if challenger <= floor:
            return Choice("new", f"new scenario: WAPE {challenger:.4f} meets the floor {floor:g}")
        measured = f"WAPE {challenger:.4f} is above" if not math.isnan(challenger) else "no rows to check"
        return Choice("failed", f"new scenario: {measured} the floor {floor:g}")
    if challenger is None:
        return Choice("kept", "no challenger for it: production's model kept")
    if challenger <= floor and challenger < champion:
        return Choice("improved", f"WAPE {challenger:.4f} vs production's {champion:.4f}")
    why = "above the floor" if challenger > floor else f"not better than production's {champion:.4f}"
    return Choice("kept", f"challenger's WAPE {challenger:.4f} is {why}: production's model kept")


def judge(scenario: str, wape: float | None, champion_wape: float | None, policy: Policy) -> ScenarioVerdict:
    """The back-test's verdict on one scenario of a composite: where the rule keeps production's model, the
    version must serve that very model (the same forecasts), or production changed since it was trained."""
    choice = choose(wape, champion_wape, policy)
    verdict = ScenarioVerdict(scenario, choice.outcome, _finite(wape), _finite(champion_wape), choice.reason)
    if choice.outcome != "kept":
        return verdict
    if wape is not None and champion_wape is not None and math.isnan(wape) and math.isnan(champion_wape):
        return replace(verdict, reason="no rows in the back-test windows: kept as training decided")
    if wape is None:
        return replace(
            verdict, outcome="failed", reason="production serves it; this version has no model for it"
        )
    if champion_wape is not None and math.isclose(wape, champion_wape, rel_tol=1e-9, abs_tol=1e-12):
        return replace(verdict, reason="production's own model (the same forecasts)")
    return replace(
        verdict,
        outcome="failed",
        reason=f"WAPE {wape:.4f} is not better than production's {champion_wape:.4f}, and not production's"
        " model: production changed since this version was trained; train again",
    )


def _finite(wape: float | None) -> float | None:
    """A WAPE as a verdict records it: NaN (a model with no rows to measure it on) is no number at all."""
    return None if wape is None or math.isnan(wape) else wape


def scenario_wapes(
    rows: pd.DataFrame, predictions: np.ndarray, policy: Policy, asked: np.ndarray | None = None
) -> dict[str, float]:
    """Each scenario's mean WAPE over the back-test windows (the newest windows x window_weeks weeks of
    `rows`), each window's WAPE as `forecast_metrics` computes it; only over the rows a model was `asked`
    about, when given (the windows stay those of all `rows`)."""
    weeks = np.sort(rows["week_start"].unique())[-policy.windows * policy.window_weeks :]
    inside = rows["week_start"].isin(weeks).to_numpy()
    if asked is not None:
        inside &= asked
    actual = rows[TARGET].to_numpy(dtype=float)[inside]
    frame = pd.DataFrame(
        {
            "scenario": scenario_names(rows).to_numpy()[inside],
            "window": np.searchsorted(weeks, rows["week_start"].to_numpy()[inside]) // policy.window_weeks,
            "error": np.abs(np.asarray(predictions, dtype=float)[inside] - actual),
            "volume": np.abs(actual),
        }
    )
    sums = frame.groupby(["scenario", "window"])[["error", "volume"]].sum()
    wape = sums["error"] / sums["volume"].where(sums["volume"] > 0, 1.0)
    return {str(name): float(value) for name, value in wape.groupby(level="scenario").mean().items()}


def judge_scenarios(
    rows: pd.DataFrame,
    candidate: Replayed,
    champion: Replayed | None,
    champion_serves: set[str] | None,
    table: list[dict[str, Any]],
    policy: Policy,
) -> list[ScenarioVerdict]:
    """Every scenario of a per-scenario version against production, from the back-test's replayed `rows`
    (the scenarios production serves: `champion_serves`, None for all). A scenario neither serves keeps what
    its training said of it: a new scenario that failed the floor stays failed; one with too little history
    is untrained, with its reason."""
    served = registry.served_scenarios(table) or set()
    wapes = scenario_wapes(rows, candidate.forecasts, policy, candidate.asked)
    champion_wapes = (
        {} if champion is None else scenario_wapes(rows, champion.forecasts, policy, champion.asked)
    )

    def defended(name: str) -> bool:
        return champion is not None and (champion_serves is None or name in champion_serves)

    trained = {row["scenario"]: row for row in table}
    verdicts = []
    for scenario in sorted(set(scenario_names(rows)) | set(trained) | (champion_serves or set())):
        wape = wapes.get(scenario, math.nan) if scenario in served else None
        champion_wape = champion_wapes.get(scenario, math.nan) if defended(scenario) else None
        verdict = judge(scenario, wape, champion_wape, policy)
        row = trained.get(scenario, {})
        if verdict.outcome == "untrained":
            failed = row.get("decision") == "failed"
            why = row.get("decision_reason") if failed else row.get("reason")
            verdict = replace(
                verdict, outcome="failed" if failed else "untrained", reason=why or verdict.reason
            )
        verdicts.append(verdict)
    return verdicts


@dataclass(frozen=True)
class Champion:
    """What production serves: a version's model (one per scenario, or global) and each scenario's lineage."""

    version: str
    model: Any  # ScenarioModels, or one global pipeline
    records: dict[str, dict[str, Any]] | None  # per scenario it serves, its row of the version's table
    run_id: str
    data_fingerprint: str
    global_pickle: bytes = b""  # a global model, pickled once: every scenario that keeps it shares it

    def serves(self, scenario: str) -> bool:
        return self.records is None or scenario in self.records

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """Forecasts for the rows of scenarios it serves; NaN for the others. One model per scenario is
        many small predictions: they run on every core, as the fits do."""
        predictions = np.full(len(rows), np.nan)
        served = scenario_names(rows).map(self.serves).to_numpy(dtype=bool)
        if not served.any():
            return predictions
        if self.records is None:  # one global model: one call
            predictions[served] = self.model.predict(rows[served].drop(columns=TARGET))
            return predictions
        positioned = rows.reset_index(drop=True)[served]
        for share in run_local(positioned, partial(_forecast_scenario, models=self.model)):
            predictions[share["positions"]] = share["forecasts"]
        return predictions

    def pickled(self, scenario: str) -> bytes:
        """The model a composite carries over for a scenario it keeps."""
        return self.global_pickle if self.records is None else self.model.pickled(scenario)

    def lineage(self, scenario: str) -> dict[str, Any]:
        """A kept scenario's row: the run its model came from, its data slice and metrics."""
        if self.records is not None:
            return dict(self.records[scenario])
        from {{ cookiecutter.package_name }}.fitting import METRICS

        unknown = dict.fromkeys(("rows", "weeks", *METRICS))  # a global model has no per-scenario slice
        return {**unknown, "run_id": self.run_id, "data_fingerprint": self.data_fingerprint}


def _forecast_scenario(rows: pd.DataFrame, models: ScenarioModels) -> dict[str, Any]:
    """One scenario's forecasts by production's model for it, by row position (a worker's task)."""
    return {
        "positions": rows.index.to_list(),
        "forecasts": models.predict(rows.drop(columns=TARGET)).tolist(),
    }


def champion_of(client: MlflowClient, name: str) -> Champion | None:
    """Production's version of `name` with its model loaded, or None before the first release."""
    import mlflow

    version = registry.running_in(client, name, registry.CHAMPION_ENVIRONMENT)
    if version is None:
        return None
    model_version = registry.get_version(client, name, version)
    model = mlflow.sklearn.load_model(registry.model_uri(name, version))
    table = registry.scenario_table(model_version.version, model_version.run_id, model_version.tags)
    records = None
    if table is not None:
        serves = set(model.scenarios)
        records = {row["scenario"]: row for row in table if row["scenario"] in serves}
    return Champion(
        version=version,
        model=model,
        records=records,
        run_id=model_version.run_id,
        data_fingerprint=model_version.tags.get("data_fingerprint", ""),
        global_pickle=b"" if table is not None else pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL),
    )


def compose(result: TrainingResult, champion: Champion | None, policy: Policy) -> TrainingResult:
    """The release candidate of a per-scenario training: per scenario, the challenger or production's model
    as `choose` decides. Its table gains each scenario's decision and both WAPEs; a kept scenario's row is
    production's (its run, slice and metrics), so lineage names the run each model came from, and
    `fit_status`/`fit_reason` keep what this run's own fit did."""
    fitted = {row["scenario"]: row for row in result.scenarios.to_dict(orient="records")}
    test = result.test.reset_index(drop=True)
    challenger_wapes = scenario_wapes(test, result.predictions, policy)
    champion_forecasts = champion.predict(test) if champion else np.full(len(test), np.nan)
    champion_wapes = scenario_wapes(test, champion_forecasts, policy) if champion else {}
    known = set(fitted) | (set(champion.records or {}) if champion else set())
    rows, served = [], {}
    for scenario in sorted(known):
        row = fitted.get(scenario, {"scenario": scenario, "status": "skipped", "reason": "not in the data"})
        challenger = challenger_wapes.get(scenario, math.nan) if row["status"] == "trained" else None
        defended = champion is not None and champion.serves(scenario)
        choice = choose(challenger, champion_wapes.get(scenario, math.nan) if defended else None, policy)
        fit = {"fit_status": row["status"], "fit_reason": row["reason"]}  # this run's fit, whatever is kept
        if choice.outcome in registry.CHALLENGER_OUTCOMES:
            served[scenario] = result.pipeline.pickled(scenario)
        elif choice.outcome == "kept":
            served[scenario] = champion.pickled(scenario)
            row = {**row, **champion.lineage(scenario), "status": "trained", "reason": ""}
            if challenger is None:
                choice = Choice(
                    "kept", f"not trained this time ({fit['fit_reason']}): production's model kept"
                )
        rows.append(
            {
                **row,
                **fit,
                "decision": choice.outcome,
                "decision_reason": choice.reason,
                "challenger_wape": challenger,
                "champion_wape": champion_wapes.get(scenario) if defended else None,
                "champion_version": champion.version if defended else None,
            }
        )
    if not served:
        from {{ cookiecutter.package_name }}.fitting import ScenarioFitsFailed

        raise ScenarioFitsFailed("no scenario has a model that meets the floor (config/backtest.toml)")
    taken = [row["scenario"] for row in rows if row["decision"] in registry.CHALLENGER_OUTCOMES]
    names = scenario_names(test).to_numpy()
    keeps = np.isin(names, list(served))
    from_champion = keeps & ~np.isin(names, taken)
    predictions = np.where(from_champion, champion_forecasts, result.predictions)[keeps]
    kept_test = test[keeps].reset_index(drop=True)
    return replace(
        result,
        pipeline=ScenarioModels(served),
        test=kept_test,
        predictions=predictions,
        metrics=forecast_metrics(kept_test[TARGET], predictions),
        scenarios=pd.DataFrame(rows),
    )


def release_candidate(
    result: TrainingResult, client: MlflowClient, name: str, policy: Policy
) -> TrainingResult:
    """`compose` against what production serves now, under the back-test's policy; prints what it decided."""
    champion = champion_of(client, name)
    composite = compose(result, champion, policy)
    decisions = composite.scenarios["decision"].value_counts()
    counts = {outcome: int(decisions.get(outcome, 0)) for outcome in registry.SCENARIO_OUTCOMES}
    against = f"production's v{champion.version}" if champion else "no production model (first release)"
    print(f"Champion/challenger per scenario against {against}: {ScenarioSummary(counts, []).describe()}")
    return composite
