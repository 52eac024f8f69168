import copy
import csv

from swav_plugin.host.progress import LoggingStepProgressBar
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run


def test_the_bar_shows_each_logging_steps_own_losses(tiny_recipe, tmp_path, monkeypatch):
    shown = []
    get_metrics = LoggingStepProgressBar.get_metrics

    def recording(self, trainer, pl_module):
        metrics = get_metrics(self, trainer, pl_module)
        shown.append((trainer.global_step, metrics.get("train/loss")))
        return metrics

    monkeypatch.setattr(LoggingStepProgressBar, "get_metrics", recording)
    recipe = copy.deepcopy(tiny_recipe)
    recipe["trainer"].update(max_epochs=2, limit_train_batches=5, log_every_n_steps=2,
                             enable_progress_bar=True)
    trainer = run(resolve(recipe))
    assert isinstance(trainer.progress_bar_callback, LoggingStepProgressBar)
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f)
                  if r.get("train/loss")}
    assert sorted(logged) == [1, 3, 5, 7, 9]
    # each redraw after a logging step (step g - 1, counted as g) shows that step's loss
    after_logging = [(g, loss) for g, loss in shown if g % 2 == 0]
    assert [g for g, _ in after_logging] == [2, 4, 6, 8, 10]
    for g, loss in after_logging:
        assert abs(loss - logged[g - 1]) < 1e-6, (g, loss, logged)
