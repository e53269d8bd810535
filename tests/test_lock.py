"""requirements.lock is what every machine installs (`make install`, CI): the versions installed here are its pins,
and its pins satisfy pyproject.toml's ranges, so `make lock` was run after the last change of a dependency."""

import re
from importlib.metadata import PackageNotFoundError, version

import tomllib
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def pins() -> dict[str, Version]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (REPO / "requirements.lock").read_text(), flags=re.M)
    return {canonicalize_name(name): Version(v) for name, v in found}


def test_the_installed_versions_are_the_locks():
    locked = pins()
    assert len(locked) > 100 and "torch" in locked and "transformers" in locked and "kernels" in locked
    wrong = {}
    for name, want in locked.items():
        try:
            got = Version(version(name))
        except PackageNotFoundError:
            got = None
        # the lock pins torch's version; its build (+cpu, +cu128) is TORCH_SPEC's choice
        if got is None or Version(got.public) != want:
            wrong[name] = (str(want), str(got))
    assert not wrong, f"installed differs from requirements.lock (pin, installed): {wrong}; run make install"


def test_the_lock_satisfies_pyprojects_ranges():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    locked = pins()
    unmet = [str(r) for r in wanted
             if canonicalize_name(r.name) not in locked or not r.specifier.contains(locked[canonicalize_name(r.name)])]
    assert not unmet, f"requirements.lock does not satisfy {unmet}: run make lock"
