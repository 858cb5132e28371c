"""PASCAL-Context's paper-profile loader (repro/data/dense_folders.py): the human-parts annotation
decoded from a PASCAL-Part .mat file built here with known parts (scipy.io.savemat), the other
targets of one image in the ASTMT layout, and the mapping lookup by image id."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from repro.data.dense_folders import HUMAN_PARTS, IGNORE, PascalContext, decode_human_parts
from repro.errors import UserError

H, W = 6, 8
PART = [("part_name", "O"), ("mask", "O")]
OBJECT = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]


def box(r0, r1, c0, c1):
    m = np.zeros((H, W), np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


def write_parts_mat(path, objects):
    """A PASCAL-Part annotation: anno = struct(imname, objects(class, class_ind, mask, parts(part_name, mask)))."""
    objs = np.zeros((1, len(objects)), dtype=OBJECT)
    for j, (name, index, mask, parts) in enumerate(objects):
        if parts:
            arr = np.zeros((1, len(parts)), dtype=PART)
            for k, (pname, pmask) in enumerate(parts):
                arr[0, k] = (pname, pmask)
        else:
            arr = np.zeros((0, 0))
        objs[0, j] = (name, np.array([[index]], np.uint8), mask, arr)
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = ("2008_000008", objs)
    scipy.io.savemat(path, {"anno": anno})


def test_parts_grouping_is_the_six_class_one():
    assert sorted(set(HUMAN_PARTS.values())) == [1, 2, 3, 4, 5, 6]
    assert (HUMAN_PARTS["hair"], HUMAN_PARTS["neck"], HUMAN_PARTS["ruarm"], HUMAN_PARTS["lhand"],
            HUMAN_PARTS["luleg"], HUMAN_PARTS["rfoot"]) == (1, 2, 3, 4, 5, 6)


def test_human_parts_decoded_from_a_mat_file_with_known_parts(tmp_path):
    path = tmp_path / "2008_000008.mat"
    write_parts_mat(path, [
        # a person with head (hair + nose), torso (neck) and a lower arm (hand); later parts paint over
        ("person", 15, box(0, 6, 0, 4), [("hair", box(0, 1, 0, 4)), ("nose", box(1, 2, 1, 2)),
                                         ("neck", box(2, 3, 0, 4)), ("lhand", box(3, 4, 0, 2)),
                                         ("rfoot", box(5, 6, 3, 4))]),
        ("person", 15, box(0, 6, 6, 8), []),                       # a person without parts: background
        ("cat", 8, box(0, 6, 4, 6), [("head", box(0, 2, 4, 6))]),  # not a person: ignored
        ("person", 15, box(4, 6, 5, 8), [("ruleg", box(4, 6, 6, 8)), ("llleg", box(5, 6, 7, 8))]),
    ])
    expect = np.zeros((H, W), np.uint8)
    expect[0, 0:4] = 1
    expect[1, 1] = 1
    expect[2, 0:4] = 2
    expect[3, 0:2] = 4
    expect[5, 3] = 6
    expect[4:6, 6:8] = 5
    expect[5, 7] = 6
    np.testing.assert_array_equal(decode_human_parts(path, (H, W)), expect)


def test_an_image_without_a_person_with_parts_is_all_ignore(tmp_path):
    path = tmp_path / "none.mat"
    write_parts_mat(path, [("person", 15, box(0, 6, 0, 4), []), ("dog", 12, box(0, 2, 0, 2), [("head", box(0, 1, 0, 1))])])
    assert (decode_human_parts(path, (H, W)) == IGNORE).all()
    write_parts_mat(path, [("person", 15, box(0, 6, 0, 4), [("wing", box(0, 1, 0, 1))])])
    with pytest.raises(UserError, match="unknown person part 'wing'"):
        decode_human_parts(path, (H, W))
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match="bad.mat"):
        decode_human_parts(tmp_path / "bad.mat", (H, W))


def test_pascal_item_in_the_astmt_layout(tmp_path):
    """One image through every target: padded to the resolution, parts from the .mat, saliency
    binarised, normals kept only on NYUD's classes, edges of the label map; flags by image id."""
    pytest.importorskip("skimage")
    from PIL import Image

    from repro.data.partial_labels import save_pascal_mapping
    from repro.data.registry import check_data, load_dense

    root, i = tmp_path / "PASCAL_MT", "2008_000008"
    for d in ("ImageSets/Context", "JPEGImages", "semseg/pascal-context", "human_parts", "sal_distill",
              "normals_distill", "pascal-context/trainval", "json"):
        (root / d).mkdir(parents=True)
    for split in ("train", "val"):
        (root / "ImageSets/Context" / f"{split}.txt").write_text(f"{i}\n")
    Image.fromarray(np.full((H, W, 3), 200, np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
    Image.fromarray(np.full((H, W), 3, np.uint8)).save(root / "semseg/pascal-context" / f"{i}.png")
    write_parts_mat(root / "human_parts" / f"{i}.mat", [("person", 15, box(0, 6, 0, 4), [("torso", box(1, 3, 0, 2))])])
    Image.fromarray((np.arange(W)[None].repeat(H, 0) * 36).astype(np.uint8)).save(root / "sal_distill" / f"{i}.png")
    Image.fromarray(np.full((H, W, 3), 255, np.uint8)).save(root / "normals_distill" / f"{i}.png")
    labels = np.full((H, W), 7, np.uint16)
    labels[:, 4:] = 9
    scipy.io.savemat(root / "pascal-context/trainval" / f"{i}.mat", {"LabelMap": labels})
    (root / "json/nyu_classes.json").write_text(json.dumps(["wall", "unknown"]))
    (root / "json/context_classes.json").write_text(json.dumps({"wall": 7, "tvmonitor": 427, "floor": 9}))
    save_pascal_mapping(tmp_path / "new_onelabel.pth", {i: [0, 1, 0, 0, 0]})
    save_pascal_mapping(tmp_path / "new_randomlabels.pth", {i: [1, 1, 0, 0, 1]})
    data = {"name": "pascal_context", "root": str(root), "mapping_dir": str(tmp_path), "resolution": 10,
            "setting": "one_label"}
    check_data(data)
    item = load_dense(data, "train")[0]
    assert item["labelled"].tolist() == [False, True, False, False, False]
    top, left = 2, 1                                    # (10 - 6) // 2, (10 - 8) // 2
    inside = (slice(top, top + H), slice(left, left + W))
    assert item["image"].shape == (3, 10, 10) and item["image"][:, 0, 0].tolist() == [0, 0, 0]
    parts = item["human_parts"].numpy()
    assert (parts[0] == IGNORE).all() and parts[inside][1, 0] == 2 and parts[inside][0, 0] == 0
    assert (item["semseg"].numpy()[inside] == 3).all() and item["semseg"][0, 0] == IGNORE
    np.testing.assert_array_equal(item["sal"].numpy()[inside][0], [0, 0, 0, 0, 1, 1, 1, 1])   # 36 j / 255 > 0.5
    normals = item["normals"].numpy()[:, inside[0], inside[1]]
    assert (normals[:, :, :4] == 1).all() and (normals[:, :, 4:] == 0).all()   # class 9 is not NYUD's
    edge = item["edge"].numpy()[inside]
    # the Laplacian marks columns 3 and 4 (both sides of the class boundary); thinning keeps one
    assert not edge[:, :3].any() and not edge[:, 5:].any()
    assert (edge.sum(axis=1) <= 1).all() and edge.sum() >= H - 1
