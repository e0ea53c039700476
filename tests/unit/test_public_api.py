"""`custate`'s public face: `__all__` is exactly what the package offers, every name in it
imports, every error it names is a `custate.Error` that keeps its built-in base, and
`import custate` loads no database library until a store name is used."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import custate

ERRORS = {
    "ActivityError": ValueError,
    "QueryError": ValueError,
    "ChangesPrunedError": ValueError,
    "ForwardError": Exception,
    "UnknownCustomerError": LookupError,
    "SourceError": OSError,
    "StoreError": Exception,
    "StaleReadError": TimeoutError,
    "VoucherifyError": Exception,
    "ConfigError": Exception,
}


def test_all_is_exactly_the_public_names() -> None:
    offered = {
        n
        for n in dir(custate)
        if not n.startswith("_") and not isinstance(getattr(custate, n), types.ModuleType)
    }
    assert offered | {"__version__"} == set(custate.__all__)
    assert len(custate.__all__) == len(set(custate.__all__))


@pytest.mark.parametrize("name", custate.__all__)
def test_each_name_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from custate import {name}", namespace)
    assert namespace[name] is getattr(custate, name)


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from custate import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(custate.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = custate.nope


@pytest.mark.parametrize(("name", "builtin"), ERRORS.items())
def test_every_error_is_a_custate_error_and_keeps_its_base(
    name: str, builtin: type[Exception]
) -> None:
    cls = getattr(custate, name)
    assert issubclass(cls, custate.Error)
    assert issubclass(cls, builtin)


def test_every_exception_class_in_all_is_listed_here() -> None:
    named = {
        n
        for n in custate.__all__
        if isinstance(getattr(custate, n), type) and issubclass(getattr(custate, n), Exception)
    }
    assert named == set(ERRORS) | {"Error"}


def test_a_bad_store_url_is_a_custate_error() -> None:
    with pytest.raises(custate.Error, match="needs a file path"):
        custate.open("sqlite:///:memory:")


def test_import_custate_loads_no_database_library() -> None:
    code = (
        "import sys, custate, custate.domain\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy'\n"
        "custate.ActivityError\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy after a domain name'\n"
        "custate.open\n"
        "assert 'sqlalchemy' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
