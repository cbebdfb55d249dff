"""Saving and loading models: ``<name>.safetensors`` + ``<name>.json`` card + ``<name>.md``.

Weights are a plain safetensors file (tensors and a JSON header; never a pickle, so
loading cannot run code). The header's metadata repeats the architecture, so a weights
file alone says what network it fits. The card records the file's SHA-256; loading
hashes the exact bytes it is about to parse and refuses any mismatch before touching
them, then builds the network from the card and loads the state dict strictly.

Writing order: weights, Markdown, card. Each file is replaced atomically, and the card
comes last, so a model appears in :func:`model_names` only once its weights are complete;
a reader that catches an overwrite half way gets a checksum refusal, never wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save_file

from ..errors import InputError
from ..io.atomic import atomic_output, write_json, write_text
from ..networks import MultilevelNet
from .card import (
    architecture_of,
    build_network,
    check_architecture,
    check_card,
    complete_card,
    render_card_markdown,
)

MODEL_DIR = Path(__file__).resolve().parent
WEIGHTS_SUFFIX, CARD_SUFFIX, MARKDOWN_SUFFIX = ".safetensors", ".json", ".md"
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelFiles:
    """The three files of one stored model."""

    name: str
    weights: Path
    card: Path
    markdown: Path

    @classmethod
    def at(cls, stem: Path) -> ModelFiles:
        """Files of the model whose paths are ``stem`` plus the three suffixes."""
        return cls(stem.name, *(stem.parent / f"{stem.name}{suffix}"
                                for suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX, MARKDOWN_SUFFIX)))


def model_names(directory: str | Path = MODEL_DIR) -> list[str]:
    """Names of the models whose cards are in ``directory``, sorted."""
    return sorted(path.stem for path in Path(directory).glob(f"*{CARD_SUFFIX}"))


def check_name(name: str) -> str:
    """A model name is a plain file stem: letters, digits, ``.``, ``_`` and ``-``."""
    if not _NAME.match(name) or name.endswith((WEIGHTS_SUFFIX, CARD_SUFFIX, MARKDOWN_SUFFIX)):
        raise ValueError(f"invalid model name {name!r} (letters, digits, '.', '_', '-'; "
                         f"no suffix)")
    return name


def _stem(path: Path) -> Path:
    for suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX, MARKDOWN_SUFFIX):
        if path.name.endswith(suffix):
            return path.with_name(path.name.removesuffix(suffix))
    return path


def is_model_path(value: str | Path) -> bool:
    """Whether ``value`` names a model by a file path (else by a name in the model folder)."""
    text = str(value)
    return isinstance(value, Path) or "/" in text or "\\" in text \
        or text.endswith((WEIGHTS_SUFFIX, CARD_SUFFIX, MARKDOWN_SUFFIX))


def resolve_model(name_or_path: str | Path, directory: str | Path = MODEL_DIR) -> ModelFiles:
    """Files of a model given by name (a card in ``directory``) or by the path of its
    ``.safetensors``/``.json``/``.md`` file. Both weights and card must exist."""
    directory = Path(directory)
    if is_model_path(name_or_path):
        files = ModelFiles.at(_stem(Path(name_or_path)).expanduser())
        if not files.card.exists() and Path(name_or_path).parent == Path("."):
            files = ModelFiles.at(directory / files.name)  # a bare file name: look there too
    else:
        files = ModelFiles.at(directory / str(name_or_path))
        if not files.card.is_file():
            names = model_names(directory) if directory.is_dir() else []
            listing = ", ".join(names) if names else "none"
            raise InputError(name_or_path, f"unknown model; available in {directory}: "
                                           f"{listing}")
    if not files.weights.is_file():
        raise InputError(files.weights, "model weights file not found")
    if not files.card.is_file():
        raise InputError(files.weights, f"no model card {files.card.name} beside the "
                                        f"weights (the card holds architecture and sha256)")
    return files


# ------------------------------------------------------------------------ checksums
def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_mismatch(path: str | Path, expected: str, found: str) -> None:
    if found != expected.lower():
        raise InputError(path, f"checksum mismatch: the model card expects sha256 {expected}, "
                               f"the file has {found} (corrupt, truncated or replaced file; "
                               f"refusing to load it)")


def verify_checksum(path: str | Path, expected: str) -> str:
    """Raise :class:`InputError` unless the file's SHA-256 is ``expected``; return it."""
    try:
        found = file_sha256(path)
    except OSError as error:
        raise InputError(path, f"cannot read model weights: {error}") from error
    _refuse_mismatch(path, expected, found)
    return found


# --------------------------------------------------------------- safetensors header
def _data_end(entry: object, source: str | Path) -> int:
    """Where one tensor's bytes end in the data section (after the header)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(n, int) and n >= 0 for n in offsets)):
        raise InputError(source, f"safetensors header has an invalid tensor entry {entry!r}")
    return offsets[1]


def parse_header(data: bytes, source: str | Path, file_size: int | None = None) -> dict:
    """The safetensors header of ``data`` (8-byte little-endian length + JSON), checked
    against the file's size: ``{tensor name: {dtype, shape, data_offsets}, "__metadata__"}``.
    ``data`` may be just the header's bytes when ``file_size`` gives the whole size."""
    size = len(data) if file_size is None else file_size
    if len(data) < 8:
        raise InputError(source, "not a safetensors file (shorter than its 8-byte header)")
    length = int.from_bytes(data[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise InputError(source, f"not a safetensors file or truncated: header of {length} "
                                 f"bytes in a file of {size}")
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(source, f"safetensors header is not valid JSON: {error}") from error
    if not isinstance(header, dict):
        raise InputError(source, "safetensors header is not a JSON object")
    ends = [_data_end(entry, source) for key, entry in header.items() if key != "__metadata__"]
    needed = 8 + length + max(ends, default=0)
    if needed != size:
        raise InputError(source, f"safetensors file is truncated or padded: the header "
                                 f"describes {needed} bytes, the file has {size}")
    return header


def read_header(path: str | Path) -> dict:
    """The checked safetensors header of the file at ``path`` (reads only the header)."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else 0
            head += stream.read(min(length, MAX_HEADER_BYTES + 1))
        size = path.stat().st_size
    except OSError as error:
        raise InputError(path, f"cannot read model weights: {error}") from error
    return parse_header(head, path, size)


def weights_architecture(header: dict, source: str | Path) -> dict[str, Any] | None:
    """The architecture recorded in a header's metadata (``None`` if there is none)."""
    text = (header.get("__metadata__") or {}).get("architecture")
    if text is None:
        return None
    try:
        return check_architecture(json.loads(text), source)
    except json.JSONDecodeError as error:
        raise InputError(source, f"weights metadata 'architecture' is not JSON: {error}") \
            from error


# ----------------------------------------------------------------------- model card
def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"cannot read model card: {error}") from error
    return check_card(card, path)


def model_card(name_or_path: str | Path, directory: str | Path = MODEL_DIR) -> dict[str, Any]:
    """The checked model card of a model given by name or path."""
    return _read_card(resolve_model(name_or_path, directory).card)


# ----------------------------------------------------------------------- save / load
def save_model(model: MultilevelNet, directory: str | Path, name: str,
               card: dict[str, Any]) -> Path:
    """Write ``<name>.safetensors``, ``<name>.md`` and ``<name>.json`` into ``directory``.

    ``card`` is the caller's part of the model card (version, input, training, metrics,
    license, ...); name, architecture, sha256 and defaults are filled in here. Returns
    the path of the weights file.
    """
    files = ModelFiles.at(Path(directory) / check_name(name))
    architecture = architecture_of(model)
    full = complete_card(card, name, architecture)
    tensors = {key: value.detach().to("cpu", copy=True).contiguous()
               for key, value in model.state_dict().items()}
    metadata = {"format": "pt", "name": name, "version": full["version"],
                "architecture": json.dumps(architecture, sort_keys=True)}
    with atomic_output(files.weights) as temporary:
        save_file(tensors, temporary, metadata=metadata)
        full["sha256"] = file_sha256(temporary)
    write_text(files.markdown, render_card_markdown(full))
    write_json(files.card, full)
    return files.weights


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _state_dict_problems(expected: dict[str, torch.Tensor],
                         found: dict[str, torch.Tensor]) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches between two state dicts."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    shapes = [f"{key} {tuple(found[key].shape)} (network needs {tuple(expected[key].shape)})"
              for key in sorted(expected.keys() & found.keys())
              if expected[key].shape != found[key].shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            problems.append(f"{len(items)} {label}: {_few(items)}")
    return problems


def _load_strict(model: MultilevelNet, tensors: dict[str, torch.Tensor], source: Path,
                 card_arch: dict, file_arch: dict | None) -> None:
    """Load ``tensors`` into ``model`` or explain why they do not fit the card."""
    problems = _state_dict_problems(model.state_dict(), tensors)
    if file_arch is not None and file_arch != card_arch:
        problems.append(f"the weights' metadata gives architecture {file_arch}")
    if problems:
        raise InputError(source, f"weights do not fit the card's architecture {card_arch}: "
                                 + "; ".join(problems))
    model.load_state_dict(tensors, strict=True)


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu",
               directory: str | Path = MODEL_DIR) -> tuple[MultilevelNet, dict[str, Any]]:
    """Load a stored model (by name from ``directory`` or by path) in eval mode.

    The weights' SHA-256 is checked against the card before the bytes are parsed; the
    network is built from the card's architecture and the state dict loaded strictly.
    Any problem raises :class:`InputError` naming the file and what was expected.
    """
    files = resolve_model(name_or_path, directory)
    card = _read_card(files.card)
    try:
        data = files.weights.read_bytes()
    except OSError as error:
        raise InputError(files.weights, f"cannot read model weights: {error}") from error
    _refuse_mismatch(files.weights, card["sha256"], sha256_of(data))
    file_arch = weights_architecture(parse_header(data, files.weights), files.weights)
    try:
        tensors = tensors_from_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise InputError(files.weights, f"cannot parse safetensors weights: {error}") \
            from error
    model = build_network(card["architecture"])
    _load_strict(model, tensors, files.weights, card["architecture"], file_arch)
    return model.to(device).eval(), card
