"""Experiment trackers beside metrics.csv: what each writes, and that a resume continues it."""

import copy

import pytest
import wandb
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from swav_plugin.host import trackers
from swav_plugin.host.checkpoint_files import read_checkpoint
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run
from swav_plugin.host.trackers import IDS_KEY


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """W&B with no network and no files outside the test's directory."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")


def train(recipe, epochs):
    recipe = copy.deepcopy(recipe)
    recipe["trainer"].update(max_epochs=epochs, limit_train_batches=2)
    return run(resolve(recipe))


def loss_steps(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return [event.step for event in events.Scalars("train/loss")]


def test_the_trackers_receive_the_metrics_and_a_resume_continues_their_runs(
        tiny_recipe, tmp_path, offline):
    out = tmp_path / "run"
    tiny_recipe["loggers"] = [{"name": "tensorboard"}, {"name": "mlflow"},
                              {"name": "wandb", "project": "test", "mode": "offline"}]
    first = train(tiny_recipe, 1)
    assert loss_steps(out / "tensorboard") == [0, 1]
    mlflow_run, wandb_id = first.loggers[2].run_id, first.loggers[3].version
    saved = read_checkpoint(out / "checkpoints" / "last.ckpt")[IDS_KEY]
    assert saved == {"tensorboard": None, "mlflow": mlflow_run, "wandb": wandb_id}
    wandb.finish()  # as the process's end would: the resumed run must find its id itself
    second = train(tiny_recipe, 2)  # resumes from the first run's last checkpoint
    assert second.loggers[3].version == wandb_id and second.loggers[2].run_id == mlflow_run

    assert loss_steps(out / "tensorboard") == [0, 1, 2, 3]  # the same directory, continued
    client = MlflowClient((out / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "swav"]
    (only,) = client.search_runs([experiment.experiment_id])
    assert only.info.run_id == mlflow_run
    assert [m.step for m in client.get_metric_history(mlflow_run, "train/loss")] == [0, 1, 2, 3]
    runs = [p.name for p in (out / "wandb").iterdir() if p.name.startswith("offline-run")]
    assert runs and all(name.endswith(f"-{wandb_id}") for name in runs)
    wandb.finish()


def test_a_listed_tracker_whose_package_is_missing_names_the_extra(tiny_recipe, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(ConfigError, match=r"^loggers\[0\]: logger 'mlflow' needs the mlflow "
                       r"package; install it with pip install 'swav-plugin\[mlflow\]'$"):
        train({**tiny_recipe, "loggers": [{"name": "mlflow"}]}, 1)


def test_a_tracker_listed_twice_or_set_as_the_trainers_logger(tiny_recipe):
    with pytest.raises(ConfigError, match="'tensorboard' is listed twice; list each logger once"):
        train({**tiny_recipe, "loggers": ["tensorboard", {"name": "tensorboard"}]}, 1)
    tiny_recipe["trainer"]["logger"] = True
    with pytest.raises(ConfigError, match="list TensorBoard, W&B or MLflow in the recipe's "
                       "top-level 'loggers' section"):
        resolve(tiny_recipe)


def test_options_the_runner_sets_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^logger 'wandb': 'id' is set by the runner \(the run "
                       r"directory and the resumed run decide it\); remove it$"):
        trackers.WandB(id="abc")
    with pytest.raises(ConfigError, match=r"^logger 'mlflow': log_model uploads the files of "
                       r"Lightning's ModelCheckpoint"):
        trackers.MLflow(log_model=True)


def test_trackers_get_each_row_once_and_a_killed_runs_extra_steps_are_purged(
        tiny_recipe, tmp_path):
    out = tmp_path / "run"
    tiny_recipe["loggers"] = [{"name": "tensorboard"}, {"name": "mlflow"}]
    tiny_recipe["run"]["checkpoint_every_n_steps"] = 1  # each step's row is logged early
    first = train(tiny_recipe, 1)
    mlflow_run = first.loggers[2].run_id
    client = MlflowClient((out / "mlruns").as_uri())
    assert [m.step for m in client.get_metric_history(mlflow_run, "train/loss")] == [0, 1]
    assert loss_steps(out / "tensorboard") == [0, 1]
    # as if killed after step 2 was logged but before its checkpoint was written
    for path in (out / "checkpoints").glob("step=000000002.ckpt*"):
        path.unlink()
    (out / "checkpoints" / "last.ckpt").unlink(missing_ok=True)
    train(tiny_recipe, 1)  # resumes from step 1 and trains step 2 again
    assert loss_steps(out / "tensorboard") == [0, 1]  # the killed run's step 1 is purged
