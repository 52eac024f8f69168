"""Helpers of the eval tools' tests: each tool's ``main`` in this process, a small checkpoint,
and a failing run checked for its one error line."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
#: Results of an earlier evaluation in RUN/eval: a failing tool must leave them as they are.
EARLIER = {"knn.json": b'{"pretrained": {}}', "linear.json": b"{}", "prototypes.json": b"{}",
           "prototypes_umap.png": b"\x89PNG", "cache/0123abcd.pt": b"features"}


def _tool(name: str) -> Callable[[list[str]], int]:
    spec = importlib.util.spec_from_file_location(f"eval_{name}", ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


TOOLS = {name: _tool(name) for name in ("knn", "linear", "prototypes", "finetune")}


def save(content: dict[str, Any], tmp_path: Path, name: str = "last.ckpt") -> Path:
    """``content`` saved as RUN/checkpoints/``name`` under ``tmp_path``."""
    path = tmp_path / "run" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run(capsys, tool: str, checkpoint: Path, *args: Any) -> tuple[int, str, str]:
    """``tool``'s ``main`` on ``checkpoint`` in this process: (status, stdout, stderr)."""
    capsys.readouterr()
    status = TOOLS[tool]([str(checkpoint), *(str(a) for a in args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_line(capsys, tool: str, checkpoint: Path, *args: Any, status: int = 2,
               alone: bool = False) -> str:
    """The one error line of a run of ``tool`` that must end with ``status``, without its
    ``TOOL: error:`` prefix; progress bars before it are ignored unless ``alone`` (then it
    must be all of stderr)."""
    got, _, err = run(capsys, tool, checkpoint, *args)
    assert got == status, err[-3000:]
    assert "Traceback" not in err and err.count(": error: ") == 1, err[-3000:]
    lines = err.rstrip("\n").splitlines()
    assert not alone or len(lines) == 1, err[-3000:]
    assert lines[-1].startswith(f"{tool}: error: "), err[-3000:]
    return lines[-1].removeprefix(f"{tool}: error: ")


def fails(capsys, tool: str, checkpoint: Path, *args: str) -> str:
    """Run ``tool`` on ``checkpoint`` beside earlier results; its one error line, all of
    stderr (exit status 2)."""
    eval_dir = checkpoint.parent.parent / "eval"
    for name, data in EARLIER.items():
        (eval_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (eval_dir / name).write_bytes(data)
    line = error_line(capsys, tool, checkpoint, *args, alone=True)
    assert snapshot(eval_dir) == EARLIER  # nothing replaced, added or half-written
    return f"{tool}: error: {line}"
