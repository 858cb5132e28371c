"""The partial-label mapping loader: reads the authors' formats, never runs code from a file."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from repro.data.partial_labels import (
    PASCAL_TASKS,
    load_nyud_mapping,
    load_pascal_mapping,
    safe_load,
    save_nyud_mapping,
    save_pascal_mapping,
)
from repro.errors import UserError


def _authors_dict() -> dict:
    # As the authors' new_onelabel.pth: numpy.str_ ids -> lists of 5 python ints.
    return {np.str_("2008_000008"): [1, 0, 0, 0, 0], np.str_("2008_000015"): [0, 0, 0, 1, 1],
            np.str_("2010_005993"): [0, 1, 1, 1, 1]}


def test_reads_authors_pascal_format_built_with_torch_save(tmp_path):
    path = tmp_path / "new_onelabel.pth"
    torch.save(_authors_dict(), path)
    # The reason the loader exists: torch's default refuses the numpy keys.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    got = load_pascal_mapping(path)
    assert set(got) == {"2008_000008", "2008_000015", "2010_005993"}
    assert all(type(k) is str for k in got)
    np.testing.assert_array_equal(got["2008_000015"], [False, False, False, True, True])
    np.testing.assert_array_equal(got["2010_005993"], [False, True, True, True, True])


def test_reads_numpy1_spelling_and_plain_pickle(tmp_path):
    # numpy 1.x (the authors' environment) pickles the key rebuilder as numpy.core.multiarray.
    src = tmp_path / "new.pth"
    torch.save(_authors_dict(), src)
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    assert b"numpy._core.multiarray" in members[pkl]
    members[pkl] = members[pkl].replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    old = tmp_path / "old.pth"
    with zipfile.ZipFile(old, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    assert load_pascal_mapping(old)["2008_000015"].tolist() == [False, False, False, True, True]
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_authors_dict(), protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert load_pascal_mapping(plain)["2008_000008"].tolist() == [True, False, False, False, False]


def test_round_trip_writer_matches_reader(tmp_path):
    flags = {"a": np.array([1, 0, 1, 0, 0], bool), "b": np.array([0, 1, 0, 0, 0], bool)}
    path = save_pascal_mapping(tmp_path / "m.pth", flags)
    raw = torch.load(path, weights_only=False)  # the writer uses the authors' key type
    assert all(type(k) is np.str_ for k in raw) and raw[np.str_("a")] == [1, 0, 1, 0, 0]
    got = load_pascal_mapping(path)
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in flags.items()}


def test_nyud_mtpsl_format_rows_by_index(tmp_path):
    w = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    path = tmp_path / "onelabel.pth"
    torch.save({"labels_weights": torch.tensor(w, dtype=torch.float32)}, path)
    np.testing.assert_array_equal(load_nyud_mapping(path, n_samples=3), w.astype(bool))
    with pytest.raises(UserError, match="3 rows but the training split has 4"):
        load_nyud_mapping(path, n_samples=4)
    save_nyud_mapping(tmp_path / "w.pth", w.astype(bool))
    np.testing.assert_array_equal(load_nyud_mapping(tmp_path / "w.pth"), w.astype(bool))


class _Payload:
    """Unpickling this creates a directory: the side effect a refused file must not have."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


class _EvalPayload:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (eval, (f"__import__('os').mkdir({self.target!r})",))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
@pytest.mark.parametrize("container", ["torch", "pickle"])
def test_refuses_a_file_that_would_execute_code(tmp_path, payload, container):
    target = tmp_path / "pwned"
    evil = {np.str_("2008_000008"): [1, 0, 0, 0, 0], np.str_("x"): payload(str(target))}
    path = tmp_path / "new_onelabel.pth"
    if container == "torch":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil))
    with pytest.raises(UserError, match="refusing to read partial-label mapping .*new_onelabel.pth"):
        load_pascal_mapping(path)
    assert not target.exists()
    # Control: the same file does run the payload when loaded without restriction.
    with open(path, "rb") as f:
        torch.load(f, weights_only=False) if container == "torch" else pickle.load(f)
    assert target.exists()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        safe_load(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({np.str_("a"): [1, 0, 2, 0, 0]}, bad)
    with pytest.raises(UserError, match="expected 5 flags"):
        load_pascal_mapping(bad)
    torch.save({np.str_("a"): [1, 0]}, bad)
    with pytest.raises(UserError, match=", ".join(PASCAL_TASKS)):
        load_pascal_mapping(bad)
    torch.save([1, 2], bad)
    with pytest.raises(UserError, match="holds a list"):
        load_pascal_mapping(bad)
