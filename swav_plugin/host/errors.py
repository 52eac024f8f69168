"""The one exception type for mistakes a user can fix (recipes, arguments, data paths)."""


class ConfigError(ValueError):
    """A user-fixable problem, reported as one line that names the problem and the fix.

    Command-line tools print it without a traceback and exit with status 2.
    """


def missing_extra(component: str, package: str, extra: str) -> ConfigError:
    """The error for ``component`` (e.g. ``"logger 'wandb'"``) when an extra is not installed."""
    return ConfigError(f"{component} needs the {package} package; install it with "
                       f"pip install 'swav-plugin[{extra}]'")
