import gc

import pytest

from harry_realtime.heap import settle_startup_heap


@pytest.fixture
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_startup_heap_is_frozen_and_thresholds_applied(settings, restore_gc):
    settings.GC_THRESHOLDS = (12345, 7, 3)
    survivor = {"long": "lived"}
    settle_startup_heap()
    assert gc.get_threshold() == (12345, 7, 3)
    assert gc.get_freeze_count() > 0
    # Frozen objects are out of every generation the collector walks.
    assert all(obj is not survivor for generation in range(3) for obj in gc.get_objects(generation))
