"""Every number a person can set has a floor: a value below it is one settings line naming the
variable, never a worker that starts with no threads, no partitions or a negative timeout.

Optional numbers (unset: a default behaviour) count too. A property over the settings models, so
a numeric setting added later without a bound fails here."""

from __future__ import annotations

import math
import typing
from collections.abc import Iterator
from types import NoneType

import annotated_types as at
import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from devstack.settings import DevSettings
from mediavec.cli_errors import settings_error
from mediavec.settings import Settings


def numeric_fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from numeric_fields(kind, (*path, name))
        elif kind in (int, float) or set(typing.get_args(kind)) in ({int, NoneType}, {float, NoneType}):
            yield (*path, name), info


def floor(info: FieldInfo) -> tuple[float, bool] | None:
    """The field's lower bound and whether it is strict (gt), or None."""
    for meta in info.metadata:
        if isinstance(meta, at.Ge):
            return float(meta.ge), False  # type: ignore[arg-type]
        if isinstance(meta, at.Gt):
            return float(meta.gt), True  # type: ignore[arg-type]
    return None


FIELDS = sorted(dict(numeric_fields(Settings)) | dict(numeric_fields(DevSettings)))
ALL = dict(numeric_fields(Settings)) | dict(numeric_fields(DevSettings))


def env_name(path: tuple[str, ...]) -> str:
    return "MEDIAVEC_" + "__".join(part.upper() for part in path)


def test_there_are_numeric_settings_to_check() -> None:
    assert len(FIELDS) > 40


@pytest.mark.parametrize("path", FIELDS, ids=".".join)
def test_every_numeric_setting_has_a_floor(path: tuple[str, ...]) -> None:
    assert floor(ALL[path]) is not None, f"{'.'.join(path)}: give it Field(..., ge=...) or gt="


@pytest.mark.parametrize("path", FIELDS, ids=".".join)
def test_a_value_below_the_floor_is_one_line_naming_its_variable(
    path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = floor(ALL[path])
    assert bound is not None
    low, strict = bound
    kind = int if int in (ALL[path].annotation, *typing.get_args(ALL[path].annotation)) else float
    below = low if strict else (low - 1 if kind is int else math.nextafter(low, -math.inf))
    text = str(int(below)) if kind is int else repr(below)
    monkeypatch.setenv(env_name(path), text)
    with pytest.raises(ValidationError) as caught:
        DevSettings() if path[0] == "devstack" else Settings()
    line = settings_error(caught.value)
    assert "\n" not in line
    assert line.startswith(f"{env_name(path)} ({'.'.join(path)}): Input should be greater than"), line
