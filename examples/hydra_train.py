"""SwAV from a Hydra config: method, data module and trainer by ``_target_``.

    python examples/hydra_train.py                          # examples/hydra/swav_digits.yaml
    python examples/hydra_train.py trainer.max_epochs=2 data.batch_size=128

Hydra builds the same components the runner's recipes name (``pip install -e ".[hydra]"``);
outputs go to Hydra's run directory (``outputs/DATE/TIME``; ``hydra.run.dir=...`` moves it).
"""

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig


@hydra.main(config_path="hydra", config_name="swav_digits", version_base="1.3")
def main(config: DictConfig) -> None:
    """Instantiate the config's method, data and trainer, and train."""
    # _convert_="all": the components receive plain lists and dicts, as from a recipe
    method = instantiate(config.method, _convert_="all")
    data = instantiate(config.data, _convert_="all")
    trainer = instantiate(config.trainer, _convert_="all")
    trainer.fit(method, datamodule=data)


if __name__ == "__main__":
    main()
