"""scripts/cgroup2-vm.py's pure parts: which wheels install on the guest's Python."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "scripts" / "cgroup2-vm.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("cgroup2_vm", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("wheel, fits", [
    ("sentinel_guard-0.9.0-py3-none-any.whl", True),
    ("psutil-7.0.0-cp36-abi3-manylinux_2_12_x86_64.manylinux2010_x86_64."
     "manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("psutil-7.0.0-cp311-cp311-linux_x86_64.whl", True),  # built here from the sdist
    # another interpreter's ABI: does not import in bookworm's 3.11
    ("PyYAML-6.0.2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
    ("pyyaml-6.0-cp39-cp39-manylinux_2_17_x86_64.whl", False),
    # a newer glibc than bookworm's 2.36, another libc, another machine
    ("psutil-7.0.0-cp36-abi3-manylinux_2_39_x86_64.whl", False),
    ("psutil-7.0.0-cp36-abi3-musllinux_1_2_x86_64.whl", False),
    ("psutil-7.0.0-cp36-abi3-manylinux_2_17_aarch64.whl", False),
    ("not-a-wheel.tar.gz", False),
])
def test_wheel_fits_the_guests_python(runner, wheel, fits):
    assert runner.wheel_fits(wheel, "3.11") is fits
