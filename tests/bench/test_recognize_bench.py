"""bench.recognize's cast: held-out LFW people, each with a photo to enrol and a different one to send."""

from __future__ import annotations

import pytest

from bench.recognize import people


def test_the_cast_is_held_out_people_with_two_different_photos(shared_data):
    cast = people(5)
    assert len({name for name, _, _ in cast}) == 5
    for name, enrolled, probe in cast:
        assert enrolled != probe and enrolled.parent == probe.parent and enrolled.parent.name == name
        assert enrolled.is_file() and probe.is_file()


@pytest.mark.parametrize("count", [1, 3])
def test_the_cast_has_the_size_asked_for(shared_data, count):
    assert len(people(count)) == count
