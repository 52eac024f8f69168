"""The one exception type for mistakes a user can fix (recipes, arguments, data paths)."""


class ConfigError(ValueError):
    """A user-fixable problem, reported as one line that names the problem and the fix.

    Command-line tools print it without a traceback and exit with status 2.
    """
