"""A user's code named by import path ("module:function"), as Hydra's `_target_`: the
model builder (`model.target`) and the augmentation builder (`augment.target`) are both
resolved here. Torch-free, so a grid validates without torch."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TargetError", "module_file", "resolve_target"]

_LOADED: dict[Path, Any] = {}


class TargetError(ValueError):
    """A target that cannot be resolved; the message starts with the grid key."""


def module_file(module: str, folder: Path) -> Path | None:
    """The file of `module` inside `folder` (a module or a package), if it is there."""
    base = folder.joinpath(*module.split("."))
    for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _load_file(path: Path, folder: Path) -> Any:
    if path not in _LOADED:
        # note: a name of its own per file, so two grids' my_models.py never meet in
        # sys.modules; the folder is on the path while it runs, for its own imports
        name = f"_gridrun_target_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(folder))
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        finally:
            sys.path.remove(str(folder))
        _LOADED[path] = module
    return _LOADED[path]


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]


def resolve_target(target: str, folder: str | Path | None, key: str) -> Callable[..., Any]:
    """The callable `target` ("module:function", or "module.function") names: the module
    from `folder` when it holds it (a grid file's folder), else from the Python path (a
    Ray job's working_dir is on it). Raises TargetError starting with `key`."""
    module_name, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
    file = module_file(module_name, Path(folder)) if folder is not None else None
    try:
        if file is not None:
            module = _load_file(file, Path(folder))  # type: ignore[arg-type]
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and module_name.split(".")[0] == missing.split(".")[0]:
            where = f"{folder} or " if folder else ""
            failed = f"no module {missing!r} in {where}the Python path"
        else:
            failed = f"importing {module_name} failed: {_one_line(exc)}"
        raise TargetError(f"{key}: {failed}") from None
    found: Any = module
    for part in attr.split("."):
        if not hasattr(found, part):
            names = [n for n in dir(found) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TargetError(f"{key}: {module_name} has no {attr!r}{hint}")
        found = getattr(found, part)
    if not callable(found):
        raise TargetError(f"{key}: {target} is a {type(found).__name__}, not a function")
    return found
