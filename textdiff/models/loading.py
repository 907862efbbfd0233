"""Reading model folders safely: where a name points, and the tensors and JSON inside.

Every loader in textdiff goes through these functions, so the rules hold everywhere:

* :func:`resolve_model_path`: an existing folder is used as it is; a name that looks like a local
  path but does not exist is a one-line "no such folder" error (a typo never reaches the hub); only
  a bare hub id (``name`` or ``owner/name`` whose first part is no local folder) is downloaded, and
  then only data files (JSON, safetensors, tokenizer files), never a ``.py`` file.
* :func:`read_state_dict` / :func:`iter_tensors`: safetensors (one file or shards with an index,
  every shard checked to exist); pickle files (``*.bin``, ``*.pt``, ``*.pth``) are refused unless
  the caller passes ``allow_pickle=True``, and then read with ``torch.load(weights_only=True)``.
* :func:`read_json`: a damaged JSON file is a one-line error naming it.
* :func:`check_state_dict`: the tensors a network expects, present with the expected shapes.

Nothing here imports or runs a file from a folder, and no file in a folder can ask for that.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from ..errors import ConfigError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# what a hub download may bring: data only (no modeling code, no pickles unless asked)
DATA_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*", "*.jinja", "README.md"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_local(name: str) -> bool:
    """True when ``name`` reads as a file-system path rather than a hub id ``owner/name``."""
    if not _HUB_ID.match(name) or name.endswith((".json", ".safetensors", ".bin")):
        return True
    first = name.split("/")[0]
    return "/" in name and Path(first).expanduser().is_dir()  # runs/quickstrat: runs/ is a local folder


def resolve_model_path(name_or_path: Union[str, Path], revision: Optional[str] = None, allow_pickle: bool = False,
                       what: str = "model folder") -> Path:
    """A local folder for ``name_or_path``: the folder itself, or a hub snapshot of data files."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{what} {name!r} is a file, not a folder; pass the folder that holds config.json")
    if isinstance(name_or_path, Path) or looks_local(name):
        raise ConfigError(f"no such {what}: {name!r} does not exist (check the path; hub ids look like owner/name)")
    patterns = DATA_PATTERNS + ([f"*{s}" for s in PICKLE_SUFFIXES] if allow_pickle else [])
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - offline, unknown repository, no access
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ConfigError(f"{name!r} is not a local folder and could not be downloaded from the hub ({why}); "
                          "pass a local folder or check the hub id and your network") from None


def read_json(path: Union[str, Path]) -> dict:
    """A JSON object from ``path``; a missing or damaged file is a one-line error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{str(path)!r} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON ({str(e).splitlines()[0][:80]}); the file is damaged, "
                          "restore or re-download it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object; the file is damaged")
    return data


def weight_files(folder: Union[str, Path], allow_pickle: bool = False) -> list[Path]:
    """The weight files of a folder, in load order: sharded safetensors (every shard of the index
    present), one safetensors file, or (only with ``allow_pickle``) pickle files."""
    folder = Path(folder)
    for index_name, kind in (("model.safetensors.index.json", "safetensors"), ("pytorch_model.bin.index.json", "pickle")):
        index = folder / index_name
        if index.is_file():
            if kind == "pickle" and not allow_pickle:
                break
            weight_map = read_json(index).get("weight_map")
            shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
            if not shards:
                raise ConfigError(f"{str(index)!r} has no weight_map; the index is damaged")
            outside = [s for s in shards if not isinstance(s, str) or not _inside(folder, s)]
            if outside:  # "../x.safetensors", "/abs/path": an index may only name files in its own folder
                raise ConfigError(f"{str(index)!r} names {outside[0]!r}, which is not a file name inside the folder; "
                                  "the index is damaged or was edited, re-download it")
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ConfigError(f"{str(folder)!r} lacks {len(missing)} of {len(shards)} weight shards "
                                  f"({', '.join(missing[:3])}); download the missing files")
            return [folder / s for s in shards]
    if (folder / "model.safetensors").is_file():  # one file, as transformers names it: other files are not weights
        return [folder / "model.safetensors"]
    safes = sorted(folder.glob("*.safetensors"))
    if safes:
        return safes
    pickles = sorted(p for s in PICKLE_SUFFIXES for p in folder.glob(f"*{s}") if p.name != "training_args.bin")
    if pickles and allow_pickle:
        return pickles
    if pickles:
        raise ConfigError(
            f"{str(folder)!r} holds only pickle weights ({pickles[0].name}), which textdiff does not open by default; "
            f"convert them once with `textdiff convert {folder} OUT --allow-pickle` (read with torch.load(weights_only=True))"
        )
    raise ConfigError(f"{str(folder)!r} holds no weights (no *.safetensors file); is the download complete?")


def _inside(folder: Path, name: str) -> bool:
    """True when ``name`` (from an index) stays inside ``folder`` (no absolute path, no "..")."""
    root = folder.resolve()
    return not Path(name).is_absolute() and (root / name).resolve().is_relative_to(root)


def _pickle_tensors(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - refused globals, truncated file
        raise ConfigError(f"cannot read {str(path)!r} with torch.load(weights_only=True) "
                          f"({str(e).splitlines()[0][:100]}); the file is damaged or not plain tensors") from None
    for key in ("state_dict", "model", "module"):  # training checkpoints nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{str(path)!r} does not hold a flat mapping of tensors")
    return obj


def iter_tensors(folder: Union[str, Path], allow_pickle: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight of a folder, one file at a time (low memory)."""
    from safetensors import SafetensorError, safe_open

    for path in weight_files(folder, allow_pickle):
        if path.suffix != ".safetensors":
            yield from _pickle_tensors(path).items()
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise ConfigError(f"{str(path)!r} is damaged ({str(e).splitlines()[0][:100]}); restore or re-download it") from None


def read_state_dict(folder: Union[str, Path], allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Every weight of a folder in one mapping (see :func:`iter_tensors`)."""
    return dict(iter_tensors(folder, allow_pickle))


def check_state_dict(expected: dict[str, tuple], state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a one-line error unless ``state`` holds exactly the ``expected`` names and shapes.

    expected: name -> shape (e.g. ``{k: tuple(v.shape) for k, v in model.state_dict().items()}``)."""
    missing = [k for k in expected if k not in state]
    if missing:
        raise ConfigError(f"{source} lacks {len(missing)} tensor(s) ({', '.join(missing[:3])}); "
                          "the folder is incomplete or of another architecture")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ConfigError(f"{source} has {len(extra)} unexpected tensor(s) ({', '.join(extra[:3])}); "
                          "the folder's config does not describe its weights")
    for k, shape in expected.items():
        if tuple(state[k].shape) != tuple(shape):
            raise ConfigError(f"{source}: tensor {k!r} has shape {list(state[k].shape)} but the config gives "
                              f"{list(shape)}; config.json does not match the weights")
