"""The shared teacher cache opens safely from many connections at once (parallel sweep jobs)."""

import threading

from sgft_lab.teachers.base import Completion
from sgft_lab.teachers.cache import TeacherCache


def test_concurrent_first_open_never_fails_and_sees_one_store(tmp_path):
    errors = []
    for trial in range(10):
        path = tmp_path / f"c{trial}.sqlite"

        def open_and_write(i):
            try:
                c = TeacherCache(path)
                c.put(f"k{i}", "t", "p", {}, 0, Completion(text=str(i)))
                c.close()
            except Exception as e:  # noqa: BLE001 - the test reports any failure
                errors.append(e)

        threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(TeacherCache(path)) == 6
    assert errors == []
