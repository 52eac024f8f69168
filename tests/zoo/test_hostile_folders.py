"""Image folders laid out as a hostile or careless user lays them out: link loops, hidden
entries, folders and files without permissions, nothing readable, decompression bombs."""

import builtins
import errno
import gc
import io
import logging
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from swav_plugin.host.errors import ConfigError, RunError, one_line
from swav_plugin.host.recipe import resolve_component
from swav_plugin.host.registry import DATASETS
from swav_plugin.zoo import image_tree
from swav_plugin.zoo.images import SkippingImageFolder
from swav_plugin.zoo.rgb import MAX_PIXELS, open_image

LOGGERS = ("swav_plugin.zoo.images", "swav_plugin.zoo.image_tree")
# swav_plugin.zoo.rgb silences PIL's bomb warning when imported, a filter pytest drops after
# collecting; test_pils_bomb_warning_is_not_shown_even_when_warnings_are_errors checks it
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def _png(path: Path, value: int = 0, size: tuple[int, int] = (4, 4)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return str(path)


def _tree(root: Path, files: dict[str, int]) -> Path:
    """PNGs at ``root/name``, each a single grey ``value``."""
    for name, value in files.items():
        _png(root / name, value)
    return root


def _folder(root: Path, **kwargs) -> SkippingImageFolder:
    return SkippingImageFolder(str(root), **kwargs)


def _relative(folder: SkippingImageFolder) -> list[tuple[str, int]]:
    return [(os.path.relpath(path, folder.root), target) for path, target in folder.samples]


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in LOGGERS]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(path: Path, width: int, height: int) -> str:
    """A PNG whose header claims ``width × height`` grey pixels, with no pixel data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))
    return str(path)


def _jpeg_header(path: Path, width: int, height: int) -> str:
    """A small JPEG whose frame header (SOF0) is rewritten to claim ``width × height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height, width
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return str(path)


# --- directory links and loops ---------------------------------------------------------------


def _not_followed(root: Path, link: str) -> str:
    return (f"image folder '{root}': not following directory link '{root}/{link}': links below "
            "a class folder are not followed; link the class folder or the image files instead")


def test_a_self_link_in_a_class_is_not_followed(tmp_path, caplog):
    # the case: torchvision follows a/loop -> . until the OS gives up (ELOOP), each
    # level adding the class's files again
    root = _tree(tmp_path / "train", {f"a/{i:02d}.png": i for i in range(64)})
    (root / "a" / "loop").symlink_to(".")
    assert len(torchvision.datasets.ImageFolder(str(root))) > 64
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.image_tree"):
        folder = _folder(root)
    assert len(folder) == 64 and folder.classes == ["a"]
    assert _lines(caplog) == [_not_followed(root, "a/loop")]


def test_a_link_to_the_parent_in_a_class_is_not_followed(tmp_path, caplog):
    root = _tree(tmp_path / "train", {"a/0.png": 0, "b/1.png": 1})
    (root / "a" / "up").symlink_to("..")
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.image_tree"):
        folder = _folder(root)
    # b's image is not pulled into class a through the root
    assert _relative(folder) == [("a/0.png", 0), ("b/1.png", 1)]
    assert _lines(caplog) == [_not_followed(root, "a/up")]


def test_sibling_links_that_loop_through_two_classes_are_not_followed(tmp_path, caplog):
    root = _tree(tmp_path / "train", {"a/0.png": 0, "b/1.png": 1})
    (root / "a" / "to_b").symlink_to("../b")
    (root / "b" / "to_a").symlink_to("../a")
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.image_tree"):
        folder = _folder(root)
    assert _relative(folder) == [("a/0.png", 0), ("b/1.png", 1)]
    assert _lines(caplog) == [_not_followed(root, "a/to_b"), _not_followed(root, "b/to_a")]


@pytest.mark.parametrize("target", [".", "..", "../.."], ids=["root", "parent", "grandparent"])
def test_a_class_folder_link_to_the_root_or_above_is_a_loop_and_not_a_class(tmp_path, caplog,
                                                                             target):
    root = _tree(tmp_path / "data" / "train", {"a/0.png": 0})
    (root / "loop").symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.image_tree"):
        folder = _folder(root)
    assert folder.classes == ["a"] and _relative(folder) == [("a/0.png", 0)]
    resolved = os.path.realpath(root / target)
    assert _lines(caplog) == [
        f"image folder '{root}': not following class folder link '{root}/loop': it leads to "
        f"'{resolved}', the folder itself or one above it (a loop)"
    ]


def test_a_class_folder_link_elsewhere_is_followed_once(tmp_path, caplog):
    # a subset built by linking another tree's class folders, as is common for ImageNet
    full = _tree(tmp_path / "full", {"a/0.png": 0, "a/deep/1.png": 1, "b/2.png": 2})
    root = tmp_path / "subset"
    root.mkdir()
    (root / "a").symlink_to(full / "a")
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.image_tree"):
        folder = _folder(root)
    assert folder.classes == ["a"]
    assert _relative(folder) == [("a/0.png", 0), ("a/deep/1.png", 0)]
    assert _lines(caplog) == []


def test_file_links_are_read_and_a_looping_file_link_is_an_unreadable_image(tmp_path, caplog):
    outside = _png(tmp_path / "outside.png", 70)
    root = _tree(tmp_path / "train", {"a/0.png": 10})
    (root / "a" / "1_link.png").symlink_to(outside)
    (root / "a" / "2_self.png").symlink_to("2_self.png")
    folder = _folder(root)
    assert _relative(folder) == [("a/0.png", 0), ("a/1_link.png", 0), ("a/2_self.png", 0)]
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.images"):
        greys = [folder[i][0].getpixel((0, 0))[0] for i in range(3)]
    assert greys == [10, 70, 10]  # the looping link is replaced by the next sample (wrapping)
    assert _lines(caplog) == [
        f"skipped unreadable image {root}/a/2_self.png: OSError: [Errno 40] Too many levels of "
        f"symbolic links: '{root}/a/2_self.png'"
    ]


def test_a_fifo_is_not_a_sample(tmp_path):
    # opening a FIFO waits for a writer: a worker reading it would hang for ever
    root = _tree(tmp_path / "train", {"a/0.png": 0})
    os.mkfifo(root / "a" / "1_fifo.png")
    assert _relative(_folder(root)) == [("a/0.png", 0)]


# --- hidden entries ----------------------------------------------------------------------------


def test_a_hidden_folder_is_not_a_class(tmp_path):
    root = _tree(tmp_path / "train", {"a/0.png": 0, ".ipynb_checkpoints/0-checkpoint.png": 1})
    folder = _folder(root)
    assert folder.classes == ["a"] and _relative(folder) == [("a/0.png", 0)]


def test_hidden_files_are_not_samples(tmp_path):
    root = _tree(tmp_path / "train", {"a/0.png": 0, "a/.1.png": 1})
    (root / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # a macOS AppleDouble file
    assert _relative(_folder(root)) == [("a/0.png", 0)]


def test_hidden_folders_inside_a_class_are_not_read(tmp_path):
    root = _tree(tmp_path / "train", {"a/0.png": 0, "a/.thumbs/1.png": 1,
                                      "a/sub/.cache/2.png": 2, "a/sub/3.png": 3})
    assert _relative(_folder(root)) == [("a/0.png", 0), ("a/sub/3.png", 0)]


def test_a_class_with_only_hidden_files_has_no_valid_file(tmp_path):
    root = _tree(tmp_path / "train", {"a/0.png": 0, "b/.0.png": 1})
    with pytest.raises(ConfigError) as err:
        DATASETS.create("image_folder", root=str(tmp_path))
    assert str(err.value) == (
        f"image folder '{root}': Found no valid file for the classes b. Supported extensions "
        "are: .jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp; the images must be laid "
        f"out as {root}/CLASS/IMAGE (e.g. ImageNet's train/n01440764/*.JPEG)"
    )


# --- permissions ---------------------------------------------------------------------------
# The tests run as root (here and in CI), and root lists and reads whatever its mode bits say:
# chmod 000 would not deny anything. These tests therefore make the listing or the open raise
# PermissionError, as the OS raises it for any other user.


def _deny_listing(monkeypatch, denied: Path, error: type[OSError] = PermissionError,
                  code: int = errno.EACCES) -> None:
    scandir = os.scandir

    def guarded(path="."):
        if os.fspath(path) == str(denied):
            raise error(code, os.strerror(code), str(denied))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)


def _permission_message(root: Path, denied: Path) -> str:
    return (f"image folder '{root}': cannot list '{denied}': permission denied; let the user who "
            "runs training read and enter it (chmod a+rx)")


@pytest.mark.parametrize("denied", [".", "a", "a/sub"], ids=["root", "class", "nested"])
def test_a_folder_that_cannot_be_listed_is_reported_as_permission_denied(tmp_path, monkeypatch,
                                                                         denied):
    root = _tree(tmp_path / "train", {"a/0.png": 0, "a/sub/1.png": 1, "b/2.png": 2})
    denied_path = root if denied == "." else root / denied
    _deny_listing(monkeypatch, denied_path)
    with pytest.raises(ConfigError) as err:
        DATASETS.create("image_folder", root=str(tmp_path))
    assert str(err.value) == _permission_message(root, denied_path)


def test_a_storage_error_while_listing_is_a_run_error(tmp_path, monkeypatch):
    root = _tree(tmp_path / "train", {"a/0.png": 0})
    _deny_listing(monkeypatch, root / "a", OSError, errno.EIO)
    with pytest.raises(RunError) as err:
        _folder(root)
    assert str(err.value) == (f"image folder '{root}': cannot list '{root}/a': Input/output "
                              "error; check the storage there")


def _deny_opening(monkeypatch, denied: str) -> None:
    opener = builtins.open

    def guarded(file, *args, **kwargs):
        if os.fspath(file) == denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
        return opener(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)  # PIL opens with it
    monkeypatch.setattr(io, "open", guarded)  # pathlib reads with it


@pytest.mark.parametrize("encoded", [False, True], ids=["decoded", "encoded"])
def test_a_file_that_cannot_be_opened_is_skipped_as_permission_denied(tmp_path, monkeypatch,
                                                                      caplog, encoded):
    root = _tree(tmp_path / "train", {"a/0.png": 0, "a/1.png": 10})
    _deny_opening(monkeypatch, str(root / "a" / "0.png"))
    folder = _folder(root)
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.images"):
        if encoded:
            assert folder.encoded()[0][0].index == 1
        else:
            assert folder[0][0].getpixel((0, 0)) == (10, 10, 10)
    assert _lines(caplog) == [f"skipped unreadable image {root}/a/0.png: permission denied"]
    assert folder.skipped_paths() == [str(root / "a" / "0.png")]


# --- a folder with nothing readable ---------------------------------------------------------------


def _all_bad(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "train"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"")
    (root / "a" / "y.png").write_text("text")
    _png_header(root / "a" / "z.png", 20_000, 20_000)
    return root, (f"image folder '{root}': none of its 3 image files can be read; see the "
                  "logged 'skipped unreadable image' lines")


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("encoded", [False, True], ids=["decoded", "encoded"])
def test_a_folder_with_nothing_readable_is_one_line_with_or_without_workers(tmp_path, workers,
                                                                            encoded):
    root, message = _all_bad(tmp_path)
    folder = _folder(root)
    dataset = folder.encoded() if encoded else folder
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=list)
    with pytest.raises(ConfigError) as err:
        next(iter(loader))
    kind, text = type(err.value), one_line(err.value)  # the line the command-line tools print
    del err  # its traceback holds the iterator: shut the workers down here, not in a later test
    gc.collect()
    assert kind is ConfigError
    assert text == message


def test_the_one_line_survives_a_worker_traceback():
    line = "image folder 'x': none of its 2 image files can be read; see the logs"
    wrapped = ("Caught ConfigError in DataLoader worker process 1.\n"
               "Original Traceback (most recent call last):\n"
               '  File "images.py", line 1, in read\n    raise ConfigError(\n'
               f"swav_plugin.host.errors.ConfigError: {line}\n")
    assert one_line(ConfigError(wrapped)) == line
    assert one_line(ConfigError(line)) == line


# --- decompression bombs: max_pixels ---------------------------------------------------------


def _bomb_reason(width: int, height: int, limit: int) -> str:
    return (f"DecompressionBombError: {width}x{height} = {width * height} pixels, over "
            f"max_pixels = {limit}; raise the data set's max_pixels to read it")


@pytest.mark.parametrize("encoded", [False, True], ids=["decoded", "encoded"])
@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_an_image_over_max_pixels_is_skipped_and_one_at_it_is_read(tmp_path, caplog, suffix,
                                                                   encoded):
    root = tmp_path / "train"
    fits, over = root / f"a/0_fits.{suffix}", root / f"a/1_over.{suffix}"
    for path, width in ((fits, 10), (over, 11)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, 10), (width * 10,) * 3).save(path)
    folder = _folder(root, max_pixels=100)
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.images"):
        if encoded:
            samples = [folder.encoded()[i][0] for i in range(2)]
            assert [(image.index, image.width) for image in samples] == [(0, 10), (0, 10)]
        else:
            assert [folder[i][0].size for i in range(2)] == [(10, 10), (10, 10)]
    assert _lines(caplog) == [f"skipped unreadable image {over}: {_bomb_reason(11, 10, 100)}"]
    assert folder.skipped_count == 1


@pytest.mark.parametrize("encoded", [False, True], ids=["decoded", "encoded"])
@pytest.mark.parametrize("write", [_png_header, _jpeg_header], ids=["png", "jpeg"])
def test_a_bomb_is_refused_by_its_header_at_the_default_limit(tmp_path, caplog, write, encoded):
    # headers claiming 100 megapixels over a few bytes of data: refused by the size, not by
    # the missing data, so nothing was decoded
    root = _tree(tmp_path / "train", {"a/1.png": 30})
    bomb = write(root / "a" / f"0_bomb.{'png' if write is _png_header else 'jpg'}", 10_000, 10_000)
    folder = _folder(root)
    assert folder.max_pixels == MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.images"):
        index = folder.encoded()[0][0].index if encoded else folder.read(0, folder.loader)[2]
    assert index == 1
    assert _lines(caplog) == [
        f"skipped unreadable image {bomb}: {_bomb_reason(10_000, 10_000, MAX_PIXELS)}"]


def test_pils_bomb_warning_is_not_shown_even_when_warnings_are_errors(tmp_path):
    # in a process of its own: pytest drops the warning filters a module sets on import
    bomb = _png_header(tmp_path / "bomb.png", 10_000, 10_000)
    code = textwrap.dedent(f"""
        import warnings
        from PIL import Image
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        from swav_plugin.zoo.rgb import open_image
        try:
            open_image({bomb!r})
        except Image.DecompressionBombError as exc:
            print(f"DecompressionBombError: {{exc}}")
        with open_image({bomb!r}, max_pixels=None) as image:
            print(image.size)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [_bomb_reason(10_000, 10_000, MAX_PIXELS),
                                        "(10000, 10000)"]


def test_the_default_limit_lets_its_own_size_through_and_refuses_one_pixel_more(tmp_path):
    at = _png_header(tmp_path / "at.png", MAX_PIXELS, 1)
    over = _png_header(tmp_path / "over.png", MAX_PIXELS + 1, 1)
    with open_image(at) as image:
        assert image.size == (MAX_PIXELS, 1)
    with pytest.raises(Image.DecompressionBombError) as err:
        open_image(over)
    assert f"DecompressionBombError: {err.value}" == _bomb_reason(MAX_PIXELS + 1, 1, MAX_PIXELS)


def test_max_pixels_none_sets_no_limit_and_comes_through_the_registry(tmp_path):
    root = tmp_path / "train"
    _png(root / "a" / "0.png", 5, size=(11, 10))
    assert DATASETS.create("image_folder", root=str(tmp_path), max_pixels=100).max_pixels == 100
    assert _folder(root, max_pixels=None)[0][0].size == (11, 10)
    assert _folder(root, max_pixels=110)[0][0].size == (11, 10)
    with pytest.raises(ConfigError, match="none of its 1 image files can be read"):
        _folder(root, max_pixels=109)[0]


@pytest.mark.parametrize("value", [0, -5])
def test_max_pixels_must_be_a_positive_whole_number(tmp_path, value):
    root = _tree(tmp_path / "train", {"a/0.png": 0})
    with pytest.raises(ConfigError) as err:
        _folder(root, max_pixels=value)
    assert str(err.value) == (
        f"image folder '{root}': max_pixels must be a positive whole number of pixels or null "
        f"(no limit), got {value!r}; e.g. max_pixels: 89478485"
    )


@pytest.mark.parametrize("value, kind", [(True, "bool"), (1.5, "float"), ("big", "str")])
def test_a_recipe_max_pixels_that_is_no_whole_number_is_refused_naming_it(tmp_path, value,
                                                                          kind):
    _tree(tmp_path / "train", {"a/0.png": 0})
    node = {"name": "image_folder", "root": str(tmp_path), "max_pixels": value}
    with pytest.raises(ConfigError) as err:
        resolve_component(node, "dataset", "data.dataset")
    assert str(err.value) == (
        f"data.dataset.max_pixels: expected int or None, got {value!r} ({kind})")


def test_the_listing_keeps_torchvisions_order(tmp_path):
    root = _tree(tmp_path / "train", {"b/z.png": 0, "b/a/y.png": 0, "b/a.png": 0, "a/B.PNG": 0,
                                      "b/a b/k.jpg": 0})
    (root / "a" / "x.txt").write_text("not an image")
    ours = image_tree.make_dataset(str(root), image_tree.find_classes(str(root))[1],
                                   extensions=(".png", ".jpg"))
    theirs = torchvision.datasets.folder.make_dataset(str(root), extensions=(".png", ".jpg"))
    assert ours == theirs
    assert [(os.path.relpath(path, root), target) for path, target in ours] == [
        ("a/B.PNG", 0), ("b/a.png", 1), ("b/z.png", 1), ("b/a/y.png", 1), ("b/a b/k.jpg", 1)]
