"""The restricted unpickler: numpy arrays load, any other global is refused before it runs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from slimkit.data.safe_pickle import safe_load
from slimkit.errors import FileFormatError


class RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_and_arrays_load(protocol):
    payload = {
        "data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "floats": np.linspace(0, 1, 5),
        "labels": [1, 2, 3],
        b"raw": b"\x00\xff",
        "name": "batch",
        "nested": ({"x": 1.5}, None, True),
    }
    loaded = safe_load(pickle.dumps(payload, protocol=protocol))
    assert loaded.keys() == payload.keys()
    np.testing.assert_array_equal(loaded["data"], payload["data"])
    np.testing.assert_array_equal(loaded["floats"], payload["floats"])
    assert loaded[b"raw"] == b"\x00\xff" and loaded["nested"] == payload["nested"]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_os_system_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"data": RunsCommand(marker)}, protocol=protocol))
    with pytest.raises(FileFormatError) as exc:
        safe_load(path)
    message = str(exc.value)
    assert "refusing to load" in message and "system" in message and str(path) in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "blob",
    [
        pickle.dumps(CallsEval()),
        b"cbuiltins\nexec\n(S'import os'\ntR.",
        b"cnumpy\nload\n(S'x.npy'\ntR.",  # numpy, but not one of the reconstruction globals
        b"csubprocess\nPopen\n(S'ls'\ntR.",
        b"c_codecs\nencode\n(S'abc'\nS'rot13'\ntR.",  # _codecs.encode only for latin-1
    ],
)
def test_other_globals_are_refused(blob):
    with pytest.raises(FileFormatError, match="refusing"):
        safe_load(blob)


def test_truncated_or_garbage_pickles(tmp_path):
    data = pickle.dumps({"data": np.zeros(100, np.uint8)}, protocol=2)
    with pytest.raises(FileFormatError, match="not a valid pickle"):
        safe_load(data[:-20])
    with pytest.raises(FileFormatError, match="not a valid pickle"):
        safe_load(b"hello world")
    with pytest.raises(FileFormatError, match="cannot read"):
        safe_load(tmp_path / "missing.pkl")


def test_pickle_is_imported_only_by_safe_pickle():
    import slimkit.data

    package = os.path.dirname(slimkit.data.__file__)
    importers = []
    for dirpath, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    if any(line.strip().startswith(("import pickle", "from pickle")) for line in f):
                        importers.append(name)
    assert importers == ["safe_pickle.py"]
