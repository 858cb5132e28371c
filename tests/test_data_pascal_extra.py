"""scikit-image is the `pascal` extra: PASCAL-Context's edges need it, and without it the check
says which extra to install (exit 2 through every CLI, repro.errors.UserError)."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from repro.data.dense_folders import context_edges
from repro.errors import UserError


def test_without_scikit_image_the_edges_name_the_pascal_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.morphology", None)   # `from skimage.morphology import thin` fails
    with pytest.raises(UserError, match=r"pip install -e '\.\[pascal\]'"):
        context_edges(np.zeros((4, 4), np.uint16))


def test_the_pascal_extra_holds_scikit_image_and_the_tests_install_it():
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(r.startswith("scikit-image") for r in extras["pascal"])
    assert any(r.startswith("scikit-image") for r in extras["test"])


def test_edges_of_a_two_class_map_are_one_pixel_thick():
    """A vertical class boundary between columns 2 and 3 of a 5 x 6 map: the Laplacian is non-zero
    in both columns (hand-computed: +1 and -1); thinning keeps one pixel per row (it may shorten
    the line by its end pixel)."""
    pytest.importorskip("skimage")
    labels = np.zeros((5, 6), np.uint16)
    labels[:, 3:] = 1
    edge = context_edges(labels)
    assert edge.dtype == np.uint8 and set(np.unique(edge)) <= {0, 1}
    assert not edge[:, :2].any() and not edge[:, 4:].any()
    assert (edge.sum(axis=1) <= 1).all() and edge.sum() >= 4
