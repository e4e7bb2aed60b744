"""pyproject.toml declares version ranges (so tsm can share an environment with other tools); constraints.txt
pins the tested set inside them; what is installed here is inside the ranges."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared() -> dict[str, Requirement]:
    """Every direct dependency, the dev extra's included, by canonical name."""
    meta = project()
    reqs = [Requirement(r) for r in [*meta["dependencies"], *meta["optional-dependencies"]["dev"]]]
    return {canonicalize_name(r.name): r for r in reqs}


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name}: {line} is not an exact pin"
            found[canonicalize_name(req.name)] = spec.version
    return found


def test_dependencies_are_ranges_not_pins():
    for raw in project()["dependencies"]:
        req = Requirement(raw)
        assert req.specifier, f"{raw}: give the lowest version tsm needs"
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{raw}: declare a range, not a pin"


def test_constraints_pin_every_direct_dependency_inside_its_range():
    ranges, tested = declared(), pins("constraints.txt")
    assert set(ranges) <= set(tested), f"not pinned in constraints.txt: {sorted(set(ranges) - set(tested))}"
    for name, pinned in tested.items():
        if name in ranges:
            assert ranges[name].specifier.contains(pinned, prereleases=True), f"{name}=={pinned} outside {ranges[name]}"


def test_lower_bound_constraints_are_inside_the_ranges():
    ranges = declared()
    for name, pinned in pins("constraints-lower.txt").items():
        assert ranges[name].specifier.contains(pinned, prereleases=True), f"{name}=={pinned} outside {ranges[name]}"


def test_installed_versions_are_inside_the_ranges():
    main = {canonicalize_name(Requirement(r).name) for r in project()["dependencies"]}
    for name, req in declared().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            assert name not in main, f"{name} is not installed: pip install -e ."
            continue  # the dev extra, in an install without it
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} installed, tsm needs {req}"
