"""The results of a search: one row per trial, written as results.json, results.csv and
results.md."""

import csv
import io
import json
import os

import keras_tuner

from tfresnet import files, markdown, rundir

RESULTS_COLUMNS = (
    "trial",
    "model",
    "depth",
    "shortcut",
    "preact",
    "learning_rate",
    "weight_decay",
    "epochs",
    "batch_size",
    "label_smoothing",
    "warmup_epochs",
    "width_multiplier",
    "val_error",
    "test_error",
    "params",
    "time_s",
    "status",
)


def trial_rows(tuner: keras_tuner.Tuner, hypermodel: keras_tuner.HyperModel) -> list[dict]:
    """One dict per trial (RESULTS_COLUMNS plus details), in trial order."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        trial_dir = tuner.get_trial_dir(trial_id)
        results = read_json_if_exists(os.path.join(trial_dir, "run", rundir.RESULTS))
        attempts = read_jsonl(os.path.join(trial_dir, "attempts.jsonl"))
        values = trial.hyperparameters.values
        config = hypermodel.trial_config(values)
        schedule = (results or {}).get("schedule", {})
        ran = len((results or {}).get("curves", {}).get("epoch", [])) or None
        rows.append(
            {
                "trial": trial_id,
                "model": config.model,
                "depth": values["depth"],
                "shortcut": config.shortcut,
                "preact": config.preact,
                "learning_rate": schedule.get("learning_rate", config.learning_rate),
                "weight_decay": schedule.get("weight_decay", config.weight_decay),
                "epochs": ran or schedule.get("epochs"),
                # Fewer than planned: the time budget stopped it (--trial_time_budget).
                "planned_epochs": schedule.get("epochs"),
                "batch_size": schedule.get("batch_size", config.batch_size),
                "label_smoothing": config.label_smoothing,
                "warmup_epochs": config.warmup_epochs,
                "width_multiplier": values.get("width_multiplier"),
                "val_error": (results or {}).get("final", {}).get("val_error"),
                "test_error": None,
                "params": (results or {}).get("model", {}).get("params"),
                "time_s": sum(a["seconds"] for a in attempts) if attempts else None,
                "status": trial.status,
                "score": trial.score,
                "tuner_ids": [a["tuner_id"] for a in attempts],
                "message": _last_line(trial.message),
                "run_dir": os.path.join(trial_dir, "run"),
            }
        )
        if hypermodel.target is not None:
            rows[-1]["time_to_s"] = time_to(
                os.path.join(trial_dir, "run", "history.csv"),
                hypermodel.target,
                hypermodel.time_budget,
            )
    return rows


def time_to(history_path: str, target: float, budget: float | None) -> float | None:
    """Seconds of training until val_accuracy first reached `target` within `budget`; None if
    it never did (the trial then scored the budget)."""
    for row in rundir.read_history_rows(history_path):
        seconds, accuracy = row.get("trial_seconds"), row.get("val_accuracy")
        if seconds is None or (budget is not None and seconds > budget):
            return None
        if accuracy is not None and accuracy >= target:
            return seconds
    return None


def write_results(directory: str, results: dict) -> None:
    """results.json (everything), results.csv and results.md (the table)."""
    files.write_json(os.path.join(directory, "results.json"), results)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=RESULTS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in results["trials"]:
        writer.writerow({k: "" if row[k] is None else row[k] for k in RESULTS_COLUMNS})
    files.write_text(os.path.join(directory, "results.csv"), table.getvalue())
    files.write_text(os.path.join(directory, "results.md"), results_markdown(results) + "\n")


def results_markdown(results: dict) -> str:
    """The trials as a markdown table, then a line on the best trial."""
    header = ["trial", "model", "depth", "shortcut", "preact", "lr", "weight decay", "epochs"]
    header += ["batch", "smoothing", "warm-up", "width"]
    header += ["val error", "test error", "params", "time (s)", "status"]
    timed = any("time_to_s" in row for row in results["trials"])
    if timed:
        header.insert(-1, f"time to {results['objective'].partition(':')[2]} (s)")
    best_trial = (results["best"] or {}).get("trial")
    rows = []
    for row in results["trials"]:
        best = row["trial"] == best_trial
        cells = [
            row["trial"] + (" (best)" if best else ""),
            row["model"],
            row["depth"],
            row["shortcut"],
            "yes" if row["preact"] else "no",
            _number(row["learning_rate"]),
            _number(row["weight_decay"]),
            _epochs(row),
            row.get("batch_size") or "-",
            _number(row.get("label_smoothing")),
            _number(row.get("warmup_epochs")),
            _number(row.get("width_multiplier") or 1.0),
            _percent(row["val_error"]),
            _percent(row.get("test_error")),
            f"{row['params']:,}" if row["params"] is not None else "-",
            f"{row['time_s']:.0f}" if row["time_s"] is not None else "-",
            row["status"]
            + (f": {row['message']}" if row["status"] != "COMPLETED" and row["message"] else ""),
        ]
        if timed:
            time_to_s = row.get("time_to_s")
            reached = f"{time_to_s:.0f}" if time_to_s is not None else "not reached (budget)"
            cells.insert(-1, reached if row["status"] == "COMPLETED" else "-")
        rows.append(cells)
    lines = [markdown.table(header, rows)]
    best = results["best"]
    if best:
        lines.append(
            f"\nBest ({results['objective']}): trial {best['trial']}, {best['model']} "
            f"(shortcut {best['shortcut']}), val error {_percent(best['val_error'])}"
            + (
                f", test error {_percent(best['test_error'])}"
                if best.get("test_error") is not None
                else ""
            )
            + (f"; exported to {best['export']}" if best.get("export") else "")
            + "."
        )
    else:
        lines.append("\nNo trial completed.")
    return "\n".join(lines)


def _epochs(row):
    """The epochs a trial ran, and of how many planned when the time budget stopped it."""
    if row["epochs"] is None:
        return "-"
    planned = row.get("planned_epochs")
    if planned and row["epochs"] < planned:
        return f"{row['epochs']} of {planned} (time budget)"
    return row["epochs"]


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _number(value):
    return "recipe" if value is None else f"{value:g}"


def _last_line(message):
    """The error of a failed trial's traceback, without the FailedTrialError wrapper."""
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip().split("FailedTrialError: ", 1)[-1] if lines else None


def read_json_if_exists(path: str):
    return files.read_json(path) if files.exists(path) else None


def read_jsonl(path: str) -> list:
    if not files.exists(path):
        return []
    return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]
