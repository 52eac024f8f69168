"""Image folders read for training without a bad file ending a run.

:class:`SkippingImageFolder` replaces the samples whose files cannot be read by the next
readable ones, logs each such file once and keeps a count that DataLoader worker processes
share with the main process; :meth:`SkippingImageFolder.encoded` reads the same folder as
undecoded files, for batches decoded on the training device (:mod:`.encoded`). The folder is
listed by :mod:`.image_tree`, which ignores hidden entries, follows no directory link into a
loop and reports a directory it may not list.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import shown, shown_path
from swav_plugin.zoo import image_tree
from swav_plugin.zoo.encoded import (
    EncodedBatch,
    EncodedImage,
    collate_encoded,
    decode_resized,
    read_encoded,
)
from swav_plugin.zoo.rgb import MAX_PIXELS, load_rgb, unreadable_reason

logger = logging.getLogger(__name__)
#: Errors of the storage rather than of the file (I/O error, too many open files, a stale or
#: timed-out network file system, an interrupted call): the file is tried again next time.
_TRANSIENT = {errno.EIO, errno.EMFILE, errno.ENFILE, errno.ESTALE, errno.ETIMEDOUT,
              errno.EAGAIN, errno.EINTR}


class SkippingImageFolder(torchvision.datasets.ImageFolder):
    """An ImageFolder (``root/class_name/image``) read with :func:`load_rgb`, where a file that
    cannot be read does not stop the run.

    Such a sample is replaced by the next readable one (index + 1, + 2, …, wrapping round), so
    batches keep their size (SwAV's Sinkhorn needs equal batches). Its file is logged once at
    WARNING on the ``swav_plugin.zoo.images`` logger as ``skipped unreadable image PATH:
    REASON`` and flagged in shared memory, so it is not decoded again and the flags set in
    DataLoader worker processes (fork or spawn) are seen by the process that built the data set.

    An image whose header gives it more than ``max_pixels`` pixels (width × height) is
    skipped in the same way, before any of its pixels is decoded (a decompression bomb: a PNG
    of a few kilobytes can decode to gigabytes). ``max_pixels`` defaults to PIL's own
    ``Image.MAX_IMAGE_PIXELS`` (:data:`~swav_plugin.zoo.rgb.MAX_PIXELS`, 89,478,485: 256 MiB
    of 8-bit RGB); ``None`` sets no limit of ours, though PIL still refuses more than twice
    its own. Such an image is skipped rather than refused with an error because it is met as
    any bad file is, by the worker that reads it, mid-run, where one file in a million should
    not end the run; the run's summary counts it.

    The folder is listed as torchvision's ImageFolder lists it, but by
    :mod:`~swav_plugin.zoo.image_tree`: hidden entries are ignored, directory links are
    followed only as class folders and never into a loop, and a directory that cannot be
    listed raises :class:`~swav_plugin.host.errors.ConfigError` naming it.

    For a run's summary, in the main process: :attr:`skipped_count` (files found unreadable so
    far, each counted once) and :meth:`skipped_paths`. ``__getitem__`` raises
    :class:`~swav_plugin.host.errors.ConfigError` when no file in the folder can be read.
    """

    def __init__(
        self,
        root: str,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        # a recipe's value is type-checked (int or None) before it comes here
        if max_pixels is not None and max_pixels < 1:
            raise ConfigError(
                f"image folder {shown_path(root)}: max_pixels must be a positive whole number of "
                f"pixels or null (no limit), got {shown(max_pixels)}; e.g. max_pixels: "
                f"{MAX_PIXELS}"
            )
        self.max_pixels = max_pixels
        super().__init__(
            root, transform=transform, target_transform=target_transform,
            loader=functools.partial(load_rgb, max_pixels=max_pixels),
        )
        # One flag per sample rather than a counter: setting a flag is idempotent, so workers
        # need no lock and a file drawn again (next epoch, another worker) is not counted twice.
        self._unreadable = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    def encoded(self) -> EncodedImageFolder:
        """This folder's samples as undecoded files (:class:`EncodedImageFolder`), sharing its
        unreadable-file flags: a file found unreadable through either is skipped by both."""
        return EncodedImageFolder(self)

    #: The class folders (:func:`~swav_plugin.zoo.image_tree.find_classes`).
    find_classes = staticmethod(image_tree.find_classes)
    #: The samples (:func:`~swav_plugin.zoo.image_tree.make_dataset`).
    make_dataset = staticmethod(image_tree.make_dataset)

    def mark_unreadable(self, index: int, reason: str) -> None:
        """Flag sample ``index`` as unreadable (logged once, then skipped): for a file whose
        header read but whose pixels could not be decoded later, where the batch went."""
        if not self._unreadable[index]:
            self._unreadable[index] = True
            logger.warning("skipped unreadable image %s: %s", self.samples[index][0], reason)

    @property
    def skipped_count(self) -> int:
        """How many files have been found unreadable, in any process using this data set."""
        return int(self._unreadable.sum())

    def skipped_paths(self) -> list[str]:
        """The paths of the files found unreadable, in sample order."""
        return [self.samples[i][0] for i in self._unreadable.nonzero().flatten().tolist()]

    def read(self, index: int, loader: Callable[[str], Any]) -> tuple[Any, int, int]:
        """``(image, target, sample index)`` of the first readable sample from ``index`` on
        (wrapping round), its file read with ``loader``; neither transform applied."""
        count = len(self.samples)
        start = range(count)[index]  # IndexError past the end, which ends plain iteration
        for step in range(count):
            i = (start + step) % count
            if self._unreadable[i]:
                continue
            path, target = self.samples[i]
            try:
                return loader(path), target, i
            # PIL's decoders raise many types (OSError, SyntaxError, ValueError, struct.error,
            # DecompressionBombError, ...), varying with the format and the Pillow version.
            except Exception as exc:
                reason = unreadable_reason(exc)
                if isinstance(exc, OSError) and exc.errno in _TRANSIENT:
                    # the storage failed, not the file: skip it this time only
                    logger.warning("could not read image %s this time: %s", path, reason)
                    continue
                self.mark_unreadable(i, reason)
        raise ConfigError(
            f"image folder {shown_path(self.root)}: none of its {count} image files can be read; "
            "see the logged 'skipped unreadable image' lines"
        )

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target, _ = self.read(index, self.loader)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


class EncodedImageFolder(Dataset):
    """A :class:`SkippingImageFolder` read as undecoded files, for ``data.augment: gpu``.

    Samples are ``(EncodedImage, label)``: the file's bytes and header size
    (:func:`~swav_plugin.zoo.encoded.read_encoded`), with the sample's index; a file whose
    header cannot be read is skipped as the folder skips it. The training process packs a
    batch (:meth:`collate`) and decodes it on the training device (:meth:`decode`), where a
    file whose pixels cannot be decoded is flagged in the folder, logged and replaced.
    """

    def __init__(self, folder: SkippingImageFolder) -> None:
        self.folder = folder
        self._read = functools.partial(read_encoded, max_pixels=folder.max_pixels)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[EncodedImage, Any]:
        image, target, i = self.folder.read(index, self._read)
        if self.folder.target_transform is not None:
            target = self.folder.target_transform(target)
        return image._replace(index=i), target

    @staticmethod
    def image_size(image: EncodedImage) -> tuple[int, int]:
        """``(height, width)`` as the file's header gives them."""
        return image.height, image.width

    @staticmethod
    def collate(images: Sequence[EncodedImage], heights: Tensor, widths: Tensor) -> EncodedBatch:
        """A batch of samples' images, to be resized to ``heights × widths`` once decoded."""
        return collate_encoded(images, heights, widths)

    def decode(self, batch: EncodedBatch, device: torch.device) -> list[Tensor]:
        """The batch's images decoded on ``device``, each resized to its size
        (:func:`~swav_plugin.zoo.encoded.decode_resized`)."""
        return decode_resized(batch, device, self.folder.mark_unreadable)
