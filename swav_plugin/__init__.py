"""SwAV for the lightly / PyTorch Lightning ecosystem.

``swav_plugin.host`` is a small, generic host layer (registries, recipes, a runner) that knows
nothing about SwAV; ``swav_plugin.swav`` is the SwAV plugin, registered through the
``swav_plugin.plugins`` entry point group like any third-party plugin; ``swav_plugin.zoo``
holds method-independent components (backbones, data sets).
"""

__version__ = "0.1.0"
