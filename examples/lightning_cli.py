"""SwAV from Lightning's own command line: the method and the data module by class path.

    python examples/lightning_cli.py fit --config examples/lightning_cli.yaml \
        --data.dataset.init_args.root /data/my_images

The same components as a recipe, built by ``LightningCLI`` (jsonargparse) instead of the
runner: ``pip install -e ".[cli]"``. The runner's extras (resumable sampling, verified
checkpoints, the dry run) stay with ``swav-train``.
"""

from pytorch_lightning.cli import LightningCLI

from swav_plugin.host.data import DataModule
from swav_plugin.swav.module import SwAV


def main() -> None:
    """Parse the command line and run the chosen subcommand (``fit``, ``validate``, ...)."""
    LightningCLI(SwAV, DataModule, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
