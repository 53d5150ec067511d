"""Shared pytest setup: offline hub, and the `slow` / `gpu` markers skipped unless asked for."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (real weights / data)")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu (needs CUDA)")


def pytest_collection_modifyitems(config, items):
    for marker, flag in (("slow", "--run-slow"), ("gpu", "--run-gpu")):
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: pass {flag} to run it")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
