"""Method-independent components: backbones, data sets and the evaluation transform.

Importing this package registers them; the host loads it through the ``zoo`` entry point.
"""

from swav_plugin.zoo import backbones, datasets, library_backbones, transforms

__all__ = ["backbones", "datasets", "library_backbones", "transforms"]
