"""The per-test seeding in tests/conftest.py: every test, and every fixture wider than a test, starts
from generators seeded by its own name, whatever ran before it (so a random test order cannot
change what a test draws, and `--randomly-seed` replays a run)."""

import random
import zlib

import numpy as np
import pytest
import torch

from conftest import base_seed


def expected_seed(config, key: str) -> int:
    return (base_seed(config) or 0) + zlib.crc32(key.encode())


def assert_fresh_generators(seed: int):
    """random, numpy and torch in the state `seed` gives them, nothing drawn yet."""
    assert random.getstate() == random.Random(seed).getstate()
    state, fresh = np.random.get_state(), np.random.RandomState(seed % 2 ** 32).get_state()
    assert state[0] == fresh[0] and np.array_equal(state[1], fresh[1]) and state[2:] == fresh[2:]
    assert torch.initial_seed() == seed % 2 ** 32
    assert torch.equal(torch.get_rng_state(), torch.Generator().manual_seed(seed % 2 ** 32).get_state())


@pytest.fixture(scope="module")
def module_draw(request):
    """(its seed, what it draws): a module-scoped fixture starts from its own name's seed."""
    seed = expected_seed(request.config, f"{request.node.nodeid}::module_draw")  # the module's node id
    assert_fresh_generators(seed)
    return seed, torch.rand(3)


def test_a_test_starts_from_its_node_id(request):
    assert_fresh_generators(expected_seed(request.config, request.node.nodeid))


@pytest.mark.parametrize("draws_before", [0, 5])
def test_what_ran_before_does_not_change_a_draw(request, draws_before):
    """Draw, then reseed as the next test would be: the draw is the same whatever came before."""
    from conftest import seed_everything

    torch.rand(draws_before)
    np.random.rand(draws_before)
    random.sample(range(10), draws_before)
    seed_everything(request.config, "some/test.py::test_x")
    first = torch.rand(4), np.random.rand(4), random.random()
    seed_everything(request.config, "some/test.py::test_x")
    assert torch.equal(torch.rand(4), first[0]) and np.array_equal(np.random.rand(4), first[1])
    assert random.random() == first[2]


def test_a_module_fixture_is_seeded_from_its_own_name(request, module_draw):
    """Set up by whichever test of this module needs it first; the same draw either way."""
    seed, draw = module_draw
    assert torch.equal(draw, torch.rand(3, generator=torch.Generator().manual_seed(seed % 2 ** 32)))
    assert_fresh_generators(expected_seed(request.config, request.node.nodeid))  # this test's own, after it


def test_a_second_user_of_the_module_fixture(module_draw):
    seed, draw = module_draw
    assert torch.equal(draw, torch.rand(3, generator=torch.Generator().manual_seed(seed % 2 ** 32)))
