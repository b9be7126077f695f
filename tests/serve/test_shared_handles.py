"""One rule for the open indexes of a process, a folder's (SharedIndex) and a served one's
(RemoteShared) alike: the first acquire opens, the last release closes, a failed first
acquire leaves nothing open, and a handle given back twice never closes a newer one."""

from __future__ import annotations

import pytest

from agree_core.index import IndexConfigError, PageIndex
from agree_core.index.shared import SharedIndex, open_indexes
from agree_core.index.storage import location_key
from serve.servers import serve_in_thread


@pytest.fixture(params=["folder", "served"])
def location(request, index_copy):
    if request.param == "folder":
        yield str(index_copy)
        return
    with serve_in_thread(index_copy) as url:
        yield url


def test_the_last_release_closes_and_a_second_release_of_a_closed_handle_changes_nothing(location):
    key = location_key(location)
    first = SharedIndex.acquire(location, create=False)
    again = SharedIndex.acquire(location, create=False)
    assert again is first and open_indexes()[key] == 2
    first.release()
    assert open_indexes()[key] == 1
    again.release()
    assert key not in open_indexes()
    newer = SharedIndex.acquire(location, create=False)
    assert newer is not first
    first.release()  # given back twice (a stale handle): the newer one stays open
    assert open_indexes()[key] == 1 and SharedIndex.acquire(location, create=False) is newer
    assert newer.run(PageIndex.info)["pages"] > 0
    newer.release()
    newer.release()
    assert key not in open_indexes()


def test_a_first_acquire_naming_another_encoder_leaves_nothing_open(location):
    with pytest.raises(IndexConfigError, match="built with encoder 'text-layer', not 'colpali'"):
        SharedIndex.acquire(location, "colpali", create=False)
    assert location_key(location) not in open_indexes()
    held = SharedIndex.acquire(location, create=False)
    with pytest.raises(IndexConfigError, match="not 'colpali'"):  # on the open index: its users stay
        SharedIndex.acquire(location, "colpali", create=False)
    assert open_indexes()[location_key(location)] == 1
    held.release()
