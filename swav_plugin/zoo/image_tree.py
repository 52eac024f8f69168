"""The classes and image files of a ``root/class_name/.../image`` tree, listed as
torchvision's ``find_classes`` and ``make_dataset`` list them, but safe from a hostile tree.

The order is torchvision's: classes sorted by name, each class's files by directory path,
then by file name, kept when their name has one of the extensions. What differs:

- **Hidden entries** (names starting with ``.``: ``.ipynb_checkpoints``, ``.DS_Store``,
  macOS's ``._IMG_0001.jpg``) are ignored at every level, so that they become neither a
  class nor a sample.
- **Directory links.** A class folder may be a link to a directory (a subset made of links to
  another tree's class folders): it is followed, once, unless it leads to the root or a
  directory above it, which would list the root again (a loop). Below a class folder,
  directory links are not followed, so no link can loop or pull another class's images in;
  torchvision follows them all, into loops too. Each link not followed is logged once at
  WARNING. Links to files are read as files.
- **Special files** (FIFOs, sockets, devices) are not samples: opening a FIFO would wait for a
  writer forever. A broken link is kept, so that reading it reports it as an unreadable image.
- **Permissions.** A directory that cannot be listed raises
  :class:`~swav_plugin.host.errors.ConfigError` naming it and "permission denied", where
  torchvision reports a class folder it cannot list as having no valid file.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets.folder import has_file_allowed_extension

from swav_plugin.host.errors import ConfigError, RunError, storage_problem
from swav_plugin.host.quoting import shown_path

logger = logging.getLogger(__name__)


class _Kind(enum.Enum):
    DIRECTORY = enum.auto()
    DIRECTORY_LINK = enum.auto()
    FILE = enum.auto()
    OTHER = enum.auto()


def _kind(entry: os.DirEntry[str]) -> _Kind:
    if entry.is_dir(follow_symlinks=False):
        return _Kind.DIRECTORY
    if not entry.is_symlink():
        return _Kind.FILE if entry.is_file(follow_symlinks=False) else _Kind.OTHER
    try:
        mode = entry.stat().st_mode  # the link's target
    except OSError:  # broken, looping or out of reach: reading it reports why
        return _Kind.FILE
    if stat.S_ISDIR(mode):
        return _Kind.DIRECTORY_LINK
    return _Kind.FILE if stat.S_ISREG(mode) else _Kind.OTHER


def _entries(root: str | Path, directory: str | Path) -> list[tuple[str, str, _Kind]]:
    """``(name, path, kind)`` of the entries of ``directory`` that are not hidden."""
    try:
        with os.scandir(directory) as listing:
            return [(entry.name, entry.path, _kind(entry)) for entry in listing
                    if not entry.name.startswith(".")]
    except PermissionError:  # storage_problem's advice is about writing; this is reading
        raise ConfigError(
            f"image folder {shown_path(root)}: cannot list {shown_path(directory)}: permission "
            "denied; let the user who runs training read and enter it (chmod a+rx)"
        ) from None
    except OSError as exc:
        raise RunError(
            f"image folder {shown_path(root)}: cannot list {storage_problem(exc, directory)}"
        ) from None


def _leads_above(link: str, real_root: str) -> str | None:
    """The target of ``link`` when it is ``real_root`` (a resolved path) or a directory above
    it, else ``None``."""
    target = os.path.realpath(link)
    return target if os.path.commonpath((target, real_root)) == target else None


def find_classes(directory: str | Path) -> tuple[list[str], dict[str, int]]:
    """The class folders of ``directory``, sorted, and their indices.

    Raises ``FileNotFoundError`` (torchvision's message) when there is none.
    """
    classes = []
    real_root = os.path.realpath(directory)
    for name, path, kind in _entries(directory, directory):
        if kind is _Kind.DIRECTORY_LINK:
            target = _leads_above(path, real_root)
            if target is not None:
                logger.warning("image folder '%s': not following class folder link '%s': it "
                               "leads to '%s', the folder itself or one above it (a loop)",
                               directory, path, target)
                continue
        if kind in (_Kind.DIRECTORY, _Kind.DIRECTORY_LINK):
            classes.append(name)
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
    classes.sort()
    return classes, {name: i for i, name in enumerate(classes)}


def _class_files(root: str | Path, class_dir: str) -> list[str]:
    """The files below ``class_dir``, by directory path, then by name; links below it to
    directories are logged and not followed."""
    found: list[tuple[str, list[str]]] = []
    pending = [class_dir]
    while pending:
        directory = pending.pop()
        names = []
        for name, path, kind in _entries(root, directory):
            if kind is _Kind.DIRECTORY:
                pending.append(path)
            elif kind is _Kind.DIRECTORY_LINK:
                logger.warning("image folder '%s': not following directory link '%s': links "
                               "below a class folder are not followed; link the class folder "
                               "or the image files instead", root, path)
            elif kind is _Kind.FILE:
                names.append(name)
        found.append((directory, names))
    return [os.path.join(directory, name) for directory, names in sorted(found)
            for name in sorted(names)]


def make_dataset(
    directory: str | Path,
    class_to_idx: dict[str, int],
    extensions: str | tuple[str, ...] | None = None,
    is_valid_file: Callable[[str], bool] | None = None,
    allow_empty: bool = False,
) -> list[tuple[str, int]]:
    """``(path, class index)`` of every image file of the classes in ``class_to_idx``.

    A file is kept when its name ends with one of ``extensions`` (any case) or, instead,
    when ``is_valid_file(path)``. Raises ``FileNotFoundError`` (torchvision's message)
    for a class without any file, unless ``allow_empty``.
    """
    if (extensions is None) == (is_valid_file is None):
        raise ValueError("give either extensions or is_valid_file")
    if extensions is not None:
        suffixes = extensions

        def is_valid_file(path: str) -> bool:
            return has_file_allowed_extension(path, suffixes)

    samples = []
    empty = []
    for name in sorted(class_to_idx):
        class_dir = os.path.join(directory, name)
        # a class that is not there has no file, as in torchvision
        listed = _class_files(directory, class_dir) if os.path.isdir(class_dir) else []
        files = [path for path in listed if is_valid_file(path)]
        samples += [(path, class_to_idx[name]) for path in files]
        if not files:
            empty.append(name)
    if empty and not allow_empty:
        message = f"Found no valid file for the classes {', '.join(empty)}. "
        if extensions is not None:
            listed = extensions if isinstance(extensions, str) else ", ".join(extensions)
            message += f"Supported extensions are: {listed}"
        raise FileNotFoundError(message)
    return samples
