"""Hostile grid files (issue 10.5): whatever a user writes, the parser returns a `Grid` the
runner can plan and seed, or raises one `GridError` line naming the key or the file; never
another exception. Generated YAML text and mutations of valid grids, then the real CLI.

Examples are derandomized (the same ones on every run, so CI is reproducible) and counted:
at least 500 run when the whole file runs."""

from __future__ import annotations

import copy
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import load_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from gridrun.cli import app
from gridrun.runs import estimate_seconds, lr_at, plan_run, training_runs, trial_info
from gridrun.spec import FACTORS, Grid, GridError, load_grid, parse_grid

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [path.read_text() for path in sorted((ROOT / "grids").glob("*.yaml"))]
MEMBRANE = ROOT / "data" / "membrane"

TEXT_EXAMPLES, MUTATION_EXAMPLES, CLI_EXAMPLES = 400, 400, 20
_ran: Counter[str] = Counter()


def _fuzz(examples: int) -> Callable:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module", autouse=True)
def _at_least_500_examples() -> Iterator[None]:
    yield
    ran = Counter({test: 0 for test in ("text", "mutations", "cli")})
    for outcome, count in _ran.items():
        ran[outcome.split(":")[0]] += count
    if all(ran.values()):
        print(f"hostile grid examples: {dict(_ran)}")
        assert ran.total() >= 500, dict(_ran)


# ---- what every example must come to ------------------------------------------------


def _field_names(model: type[BaseModel] = Grid) -> set[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names |= _field_names(field.annotation)
    return names


FIELD_NAMES = sorted(_field_names())
# every setting a grid file can hold, as a path: ("name",), ("train", "lr"), ...
FIELD_PATHS = [
    (name, *sub)
    for name, field in Grid.model_fields.items()
    for sub in (
        [(s,) for s in field.annotation.model_fields]
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        else [()]
    )
]


def _usable(grid: Grid) -> None:
    """What the runner does with a valid grid before any training: plan its runs, estimate
    their time, seed the split and the runs, keep the numbers in int64 table columns, and
    store the resolved grid (which must read back as the same grid)."""
    trials = grid.trials()
    for run in training_runs(grid, trials):
        plan = plan_run(grid, run, 3, grid.eval_size)
        estimate_seconds(plan, True, grid.resources.workers_per_unit)
        lr_at(plan, 0)
        lr_at(plan, plan.epochs * plan.steps_per_epoch - 1)
        for trial in run.trials:
            trial_info(grid, run, trial)
            np.random.default_rng([trial.seed, run.epochs])
    np.random.default_rng(grid.data.split_seed)
    ints = [v for cell in grid.cells() for v in (*cell.factors().values(), cell.steps)]
    np.array([*ints, *grid.seeds, grid.data.split_seed], dtype=np.int64)
    assert parse_grid(yaml.safe_load(grid.resolved_yaml())) == grid


def _names_a_key(rest: str, raw: Any) -> bool:
    """Whether `rest` (the message after the source) starts with a key of the grid (dotted
    keys start with their section) or says the document is not a mapping."""
    if rest.startswith("expected a mapping of keys"):
        return True
    keys = set(FIELD_NAMES)
    if isinstance(raw, dict):
        keys |= {str(k) for k in raw} | {repr(k) for k in raw}
    return any(rest.startswith((f"{key}:", f"{key}.", f"{key}[")) for key in keys)


def _one_line(message: str) -> None:
    assert message.splitlines() == [message], repr(message)


def _outcome(
    read: Callable[[], Grid], prefix: str, raw: Callable[[], Any], yaml_errors: tuple[str, ...]
) -> str | None:
    """read(): None for a usable grid, else its one-line message, which starts with
    `prefix` and names a key of raw() unless it starts with one of `yaml_errors`."""
    try:
        grid = read()
    except GridError as exc:
        message = str(exc)
        _one_line(message)
        assert message.startswith(prefix), message
        rest = message.removeprefix(prefix)
        if not rest.startswith(yaml_errors):
            assert _names_a_key(rest, raw()), message
        return message
    _usable(grid)
    return None


def _parsed(raw: Any) -> str | None:
    """parse_grid(raw): None for a usable grid, else its one-line message."""
    return _outcome(lambda: parse_grid(raw), "grid: ", lambda: raw, ())


def _loaded(path: Path) -> str | None:
    """load_grid(path): None for a usable grid, else its one-line message."""
    return _outcome(
        lambda: load_grid(path),
        f"{path}: ",
        lambda: yaml.safe_load(path.read_bytes()),
        ("line ", "invalid YAML", "cannot read"),
    )


# ---- (a) generated YAML text ---------------------------------------------------------

_KEY_WORDS = [*FIELD_NAMES, "seed", "factor", "epoch", "lrr", "<<", "?", "-", "1", "null"]
# fmt: off
_FRAGMENTS = [
    *(f"{k}:" for k in _KEY_WORDS),
    *(f"{k}: " for k in FACTORS),
    "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}",
    "- ", "? ", ": ", "[", "]", "{", "}", ",", "'", '"', "#", "|", ">", "\\", "\t", "  ",
    "---", "...", "%YAML 1.1", "%YAML 2.0", "%TAG ! tag:x,2000:",
    "&a", "&b ", "*a", "*b", "*zz", "<<: *a", "&a [*a]", "&a {x: *a}",
    "!!int", "!!float", "!!bool", "!!str", "!!null", "!!timestamp", "!!binary", "!!set",
    "!!omap", "!!python/object:os.system", "!!python/name:os.system", "!custom",
    "2024-13-45", "2024-02-30", "2024-01-01", "2024-01-01 25:61:61", "0b_", "0x_", "0o9",
    "1_000", "0x1F", "0b101", "012", "1:30", "190:20:30", "._", "1e400", "-1e400", "9" * 400,
    "-" + "9" * 30, ".inf", "-.inf", ".nan", "~", "null", "yes", "No", "on", "OFF", "true",
    "-0", "-1", "0", "1.5", "1e-9", "ümlaut", "日本", "\u2028", "\x85", "\x00", "\x07",
    "\ufeff", "\ud7ff", "\U0001f600", "\x1b[31m", "[/]", "[bold]",
]
# fmt: on
_SEPARATORS = st.sampled_from(["", " ", "\n", "\n  ", "\n    ", "\n- ", ", ", ": "])
_GARBAGE = st.lists(
    st.tuples(st.sampled_from(_FRAGMENTS) | st.text(max_size=6), _SEPARATORS), max_size=40
).map(lambda parts: "".join(a + b for a, b in parts))


@st.composite
def _deep(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
    inner = f"{opener * depth}1{closer * depth}"
    return f"factors:\n  epochs: {inner}\n" if draw(st.booleans()) else inner


@st.composite
def _alias_bomb(draw: st.DrawFn) -> str:
    """The billion laughs: each anchor repeats the one before, and a key takes the last,
    with the anchors under a key of their own or inside the key's value."""
    levels, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    anchors = [f"&l0 [{', '.join(['1'] * width)}]"]
    for i in range(1, levels):
        anchors.append(f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    key = draw(st.sampled_from(["seeds", "name", "data", "resources", "factors", "unknown"]))
    if draw(st.booleans()):
        head = ["anchors:", *(f"  - {anchor}" for anchor in anchors)]
        value = f"*l{levels - 1}"
    else:
        head, value = [], f"[{', '.join(anchors)}]"
    if key == "factors":
        value = f"{{image_size: {value}, dataset_size: [8], epochs: [1], batch_size: [4]}}"
    else:
        head.append("factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}")
    return "\n".join([*head, f"{key}: {value}"])


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 2, 2**31, 2**63, -(2**63), 10**30, 10**400]),
    st.floats(),
    st.text(max_size=10),
    st.dates(),
    st.datetimes(),
)
_KEYS = st.one_of(
    st.sampled_from(_KEY_WORDS), st.text(max_size=8), st.integers(), st.none(), st.booleans()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


def _dumped(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)


@st.composite
def _edited_shipped(draw: st.DrawFn) -> str:
    """A shipped grid file with a few characters deleted or inserted anywhere."""
    text = draw(st.sampled_from(SHIPPED))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 8))
        insert = draw(st.sampled_from(_FRAGMENTS) | st.text(max_size=3))
        text = text[:at] + insert + text[at + cut :]
    return text


@st.composite
def _duplicated_key(draw: st.DrawFn) -> str:
    """A shipped grid file with one of its keys written again, at any depth and place."""
    lines = draw(st.sampled_from(SHIPPED)).splitlines()
    keys = [line.split(":")[0] for line in lines if ":" in line and not line.startswith("#")]
    again = f"{draw(st.sampled_from(keys))}: {draw(st.sampled_from(_FRAGMENTS))}"
    lines.insert(draw(st.integers(0, len(lines))), again)
    return "\n".join(lines)


_TEXT = st.one_of(
    _GARBAGE,
    _duplicated_key(),
    _deep(),
    _alias_bomb(),
    _VALUES.map(_dumped),
    st.dictionaries(_KEYS, _VALUES, max_size=6).map(_dumped),
    _edited_shipped(),
)
_CONTENT = st.one_of(
    _TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
    _TEXT.map(lambda text: text.encode("utf-16")),
    _TEXT.map(lambda text: text.encode("latin-1", "replace")),
    st.binary(max_size=64),
)


@_fuzz(TEXT_EXAMPLES)
@given(_CONTENT)
def test_any_yaml_file_is_a_usable_grid_or_one_grid_error_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.yaml"
        path.write_bytes(content)
        _ran["text: a grid" if _loaded(path) is None else "text: an error"] += 1


# ---- (b) mutations of valid grids ----------------------------------------------------

_SMALL = {"image_size": [32], "dataset_size": [8], "epochs": [1], "batch_size": [4]}
BASES: list[dict[str, Any]] = [
    *(yaml.safe_load(text) for text in SHIPPED),
    {"factors": dict(_SMALL)},
    {
        "name": "every-section",
        "data": {"source": "synthetic", "val_size": 4, "num_images": 40, "split_seed": 3},
        "model": {"name": "unet", "base_channels": 8, "depth": 3},
        "train": {"lr": 0.01, "lr_scaling": "linear", "schedule": "poly", "warmup_epochs": 1},
        "factors": {
            "image_size": [32, 64],
            "dataset_size": [8, 16],
            "epochs": [2, 4],
            "batch_size": [2, 4],
        },
        "seeds": [0, 1, 2],
        "resources": {"workers_per_unit": 2, "custom": {"fake_gpu": 1}, "pack": False},
        "tracking": {"tensorboard": False, "overlay_every": 2, "overlay_images": 0},
    },
    {
        "data": {"source": "torchvision", "name": "VOCSegmentation", "root": "voc"},
        "train": {"loss": "ce"},
        "factors": dict(_SMALL),
    },
    {
        "data": {"source": "folder", "path": str(MEMBRANE), "val_size": 6, "num_classes": 1},
        "factors": {"image_size": [64], "dataset_size": [10], "epochs": [1], "batch_size": [2]},
    },
]

_HOSTILE = st.one_of(
    _SCALARS,
    st.sampled_from([[], [[]], [[1, 2]], {}, {"a": 1}, "", " ", "8", "auto", "[/x]", [1, 1]]),
    _VALUES,
)
# levels that cannot be read as positive integers
_BAD_LEVEL = st.one_of(
    st.integers(max_value=0),
    st.floats().filter(lambda x: not (x.is_integer() and x > 0)),
    st.text(max_size=6).filter(lambda s: not any(c.isdigit() for c in s)),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_HUGE = st.sampled_from([2**31, 2**63, 10**30, 10**400])
_LEVEL = st.one_of(st.integers(1, 64), st.integers(), _HUGE, _BAD_LEVEL, st.sampled_from([1.0]))
_NEW_KEY = st.sampled_from(["seed", "factor", "lrr", "epoch", "x"]) | st.text(max_size=8)


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key or index path in a parsed YAML document."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _at(raw: Any, path: tuple) -> Any:
    for part in path:
        raw = raw[part]
    return raw


def _model_dicts(raw: dict) -> list[tuple]:
    """Paths of the mappings that are models (a key there must be a field)."""
    sections = [key for key in Grid.model_fields if isinstance(raw.get(key), dict)]
    return [(), *((key,) for key in sections)]


def _dotted(path: tuple) -> str:
    return ".".join(str(part) for part in path)


# each mutation changes raw in place and returns the message it must give when it is the
# only change to a valid grid, or None where that depends on the change
def _drop(data: st.DataObject, raw: dict) -> str | None:
    keys = [p for p in _paths(raw) if isinstance(_at(raw, p[:-1]), dict)]
    if not keys:
        return None
    path = data.draw(st.sampled_from(keys))
    del _at(raw, path[:-1])[path[-1]]
    if path == ("factors",) or (path[0] == "factors" and len(path) == 2):
        return f"{_dotted(path)}: required key is missing"
    return None


def _rename(data: st.DataObject, raw: dict) -> str | None:
    keys = [p for p in _paths(raw) if isinstance(_at(raw, p[:-1]), dict)]
    if keys:
        path = data.draw(st.sampled_from(keys))
        parent = _at(raw, path[:-1])
        new = data.draw(_KEYS | st.just(str(path[-1]) + "s") | st.just(str(path[-1])[1:]))
        if new not in parent:
            parent[new] = parent.pop(path[-1])
    return None


def _retype(data: st.DataObject, raw: dict) -> str | None:
    paths = list(_paths(raw))
    if paths:
        path = data.draw(st.sampled_from(paths))
        _at(raw, path[:-1])[path[-1]] = data.draw(_HOSTILE)
    return None


def _levels(data: st.DataObject, raw: dict) -> str | None:
    if not isinstance(raw.get("factors"), dict):
        return None
    name = data.draw(st.sampled_from(FACTORS))
    bad = data.draw(st.booleans())
    if bad:
        levels = [*data.draw(st.lists(_LEVEL, max_size=4)), data.draw(_BAD_LEVEL)]
    else:
        levels = data.draw(st.lists(st.integers(1, 64) | _HUGE, max_size=4, unique=True))
    raw["factors"][name] = levels
    return f"factors.{name}" if bad or not levels else None


def _unknown_key(data: st.DataObject, raw: dict) -> str | None:
    path = data.draw(st.sampled_from(_model_dicts(raw)))
    # a plain key, shown as written (the quoted ones are in
    # test_unreadable_yaml_odd_keys_and_paths_are_one_grid_error_line)
    plain = _NEW_KEY.filter(lambda k: k.isprintable() and k.strip() == k != "")
    key = data.draw(plain.filter(lambda k: k not in FIELD_NAMES))
    _at(raw, path)[key] = data.draw(_HOSTILE)
    return f"{_dotted((*path, key))}: unknown key"


EXTREMES = [2**31, 2**63, 10**30, 10**400, -1, 0, 0.5, 1e-300, -(2**63), float("inf"), float("nan")]
_EXTREME = st.sampled_from(EXTREMES)


def _number(data: st.DataObject, raw: dict) -> str | None:
    """A number anywhere made huge, negative, zero, fractional or not finite."""
    numbers = [p for p in _paths(raw) if type(_at(raw, p)) in (int, float)]
    if numbers:
        path = data.draw(st.sampled_from(numbers))
        _at(raw, path[:-1])[path[-1]] = data.draw(_EXTREME)
    return None


def _setting(data: st.DataObject, raw: dict) -> str | None:
    """Any setting of the grid, written or not, given an extreme or ill-typed value."""
    path = data.draw(st.sampled_from(FIELD_PATHS))
    if len(path) == 2 and not isinstance(raw.get(path[0]), dict):
        raw[path[0]] = {}
    _at(raw, path[:-1])[path[-1]] = data.draw(_EXTREME | _HOSTILE)
    return None


def _swap(data: st.DataObject, raw: dict) -> str | None:
    keys = list(raw)
    if len(keys) >= 2:
        a, b = data.draw(st.lists(st.sampled_from(keys), min_size=2, max_size=2, unique=True))
        raw[a], raw[b] = raw[b], raw[a]
    return None


MUTATIONS = [_drop, _rename, _retype, _levels, _number, _setting, _unknown_key, _swap]


def _mutated(data: st.DataObject, bases: list[dict]) -> tuple[dict, str | None]:
    raw = copy.deepcopy(data.draw(st.sampled_from(bases)))
    mutations = data.draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3))
    expected = [mutate(data, raw) for mutate in mutations]
    return raw, expected[0] if len(mutations) == 1 else None


def test_the_mutation_bases_are_valid_grids() -> None:
    for raw in BASES:
        assert _parsed(raw) is None, raw


def test_every_setting_at_every_extreme_value_is_usable_or_one_error_line() -> None:
    """Exhaustive where random draws are thin: each setting of the grids that set every
    section, one at a time, at each extreme number (huge, negative, zero, not finite)."""
    for base in (b for b in BASES if b.get("name") in ("every-section", "study")):
        for path in FIELD_PATHS:
            for value in EXTREMES:
                raw = copy.deepcopy(base)
                if len(path) == 2:
                    raw.setdefault(path[0], {})
                _at(raw, path[:-1])[path[-1]] = value
                _parsed(raw)


@_fuzz(MUTATION_EXAMPLES)
@given(st.data())
def test_mutated_grids_are_usable_or_one_grid_error_line_naming_the_key(
    data: st.DataObject,
) -> None:
    raw, expected = _mutated(data, BASES)
    message = _parsed(raw)
    _ran["mutations: a grid" if message is None else "mutations: an error"] += 1
    if expected is not None:
        assert message is not None and message.startswith(f"grid: {expected}"), message
    # the same document through a file gives the same outcome, naming the file instead
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.yaml"
        path.write_text(_dumped(raw))
        from_file = _loaded(path)
    if message is None:
        assert from_file is None
    else:
        assert from_file == f"{path}: " + message.removeprefix("grid: ")


# ---- the CLI on a few generated files ------------------------------------------------

runner = CliRunner()
_CLI_BASES = [b for b in BASES if b.get("name") not in ("study", "membrane")]


@_fuzz(CLI_EXAMPLES)
@given(st.data())
def test_plan_on_a_mutated_grid_exits_0_or_with_one_error_line(data: st.DataObject) -> None:
    raw, _ = _mutated(data, _CLI_BASES)
    text = _dumped(raw)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.yaml"
        path.write_text(text)
        result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code in (0, 2), (text, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    _ran[f"cli: exit {result.exit_code}"] += 1


# ---- crashes the fuzzing found, each with its exact input -----------------------------

_F = "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # ValueError, AttributeError, KeyError, IndexError from PyYAML's constructors
        (b"name: 2024-13-45\n", "line 1 invalid YAML (cannot read '2024-13-45' as timestamp)"),
        (b"a: !!timestamp x\n", "line 1 invalid YAML (cannot read 'x' as timestamp)"),
        (b"seeds: !!bool maybe\n", "line 1 invalid YAML (cannot read 'maybe' as bool)"),
        (b"seeds: [0b_]\n", "line 1 invalid YAML (cannot read '0b_' as int)"),
        (b"\n    \n    !!int\n    ", "line 3 invalid YAML (cannot read '' as int)"),
        # RecursionError in PyYAML's composer
        (b"{a: " * 1000 + b"1" + b"}" * 1000, "invalid YAML (nested too deeply)"),
        # UnicodeDecodeError from read_text
        (b"name: caf\xe9\n" + _F.encode(), "invalid YAML (not utf-8 text, at position 9)"),
        (b"\xff\xfe", "expected a mapping of keys, got NoneType"),  # an empty UTF-16 file
        # a two-line message (PyYAML's own text for a control character)
        (b"name: a\x07\n", "invalid YAML (the character '\\x07' is not allowed, at position 7)"),
        # odd keys and paths; a two-line message: the key was printed as it is
        ('"a\\nb": 1\n' + _F, "'a\\nb': unknown key"),
        ("' name': x\n" + _F, "' name': unknown key (did you mean 'name'?)"),
        ("'': 1\n" + _F, "'': unknown key"),
        # YAML reads `no` as False, which pydantic reported as the key 0
        ("no: 1\n" + _F, "False: a key must be a string, not bool"),
        ("~: 1\n" + _F, "None: a key must be a string, not null"),
        (
            "resources: {custom: {1: 2}}\n" + _F,
            "resources.custom.1: a key must be a string, not int",
        ),
        # ValueError (embedded null byte) when the path was resolved
        (
            'data: {source: folder, path: "a\\0b"}\n' + _F,
            "data.path: a path cannot hold a NUL character",
        ),
    ],
)
def test_unreadable_yaml_odd_keys_and_paths_are_one_grid_error_line(
    tmp_path: Path, content: bytes | str, message: str
) -> None:
    assert load_error(tmp_path / "grid.yaml", content) == message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # valid before; OverflowError in `gridrun plan` (estimate_seconds)
        (
            {"factors": {**yaml.safe_load(_F)["factors"], "image_size": [10**400]}},
            "factors.image_size: levels must be at most 2147483647",
        ),
        # valid before; OverflowError in effective_lr
        (
            {**yaml.safe_load(_F), "train": {"lr_scaling": "linear", "lr_base_batch": 10**400}},
            "train.lr_base_batch: Input should be less than or equal to 2147483647",
        ),
        # valid before; NumPy's ValueError (negative seed) when the split or a run is seeded
        (
            {**yaml.safe_load(_F), "seeds": [0, 1, -1]},
            "seeds: must be from 0 to 4294967295, got [-1]",
        ),
        (
            {**yaml.safe_load(_F), "data": {"split_seed": -1}},
            "data.split_seed: Input should be greater than or equal to 0",
        ),
    ],
)
def test_numbers_the_runner_cannot_use_are_refused(raw: dict, message: str) -> None:
    with pytest.raises(GridError) as info:
        parse_grid(raw)
    assert str(info.value) == f"grid: {message}"


def test_plan_prints_a_message_with_square_brackets_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("model: {name: '[/x]'}\n" + _F)
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.exception
    assert result.output.strip() == f"error: {path}: model.name: unknown model '[/x]'"
