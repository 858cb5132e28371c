"""repro.weights: every pretrained file the paper profile reads, checked with one message."""
import pytest

from repro.errors import UserError
from repro.weights import WEIGHTS, check_weights, weight_file


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_missing_file_names_path_file_source_and_key(tmp_path, name):
    w = WEIGHTS[name]
    where = tmp_path / "somewhere" / "x.pt"
    with pytest.raises(UserError) as err:
        check_weights(name, where)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{w.what} {where} not found: {w.file} comes from {w.source}")
    assert msg.endswith(f"set {w.key}=/path/to/{w.file}")
    where.parent.mkdir()
    where.write_bytes(b"0")
    assert check_weights(name, where) == where
    # A directory will not do, except where a diffusers folder is a valid form of the weights.
    if w.directory_ok:
        assert check_weights(name, where.parent) == where.parent
    else:
        with pytest.raises(UserError, match="not found"):
            check_weights(name, where.parent)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_path_says_who_needs_it(value):
    with pytest.raises(UserError) as err:
        check_weights("adm_128_diffusion", value, needed_by="model 'adm_star'")
    assert str(err.value) == ("model 'adm_star' needs the released guided-diffusion checkpoint 128x128_diffusion.pt "
                              f"({WEIGHTS['adm_128_diffusion'].source}): set weights.adm_128_diffusion=/path/to/128x128_diffusion.pt")


def test_home_is_expanded_and_unknown_keys_get_a_plain_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"0")
    assert check_weights("lpips_alexnet", "~/alexnet-owt-7be5be79.pth") == tmp_path / "alexnet-owt-7be5be79.pth"
    assert weight_file("adm_256_diffusion").key == "weights.adm_256_diffusion"
    with pytest.raises(UserError, match="set weights.adm_256_diffusion="):
        check_weights("adm_256_diffusion", tmp_path / "256x256_diffusion.pt")


def test_metric_modules_use_the_registry_names():
    from repro.metrics import ALEXNET_FILE, INCEPTION_FILE

    assert ALEXNET_FILE == "alexnet-owt-7be5be79.pth" and INCEPTION_FILE == "weights-inception-2015-12-05-6726825d.pth"


def test_state_dict_check_reads_keys_and_shapes_and_refuses_code(tmp_path):
    import pickle

    import torch

    from repro.weights import check_state_dict

    good = {"features.0.weight": torch.zeros(64, 3, 11, 11), "classifier.6.weight": torch.zeros(1000, 4096)}
    torch.save(good, tmp_path / "good.pth")
    assert check_state_dict("lpips_alexnet", tmp_path / "good.pth") == tmp_path / "good.pth"
    torch.save({**good, "classifier.6.weight": torch.zeros(10, 4096)}, tmp_path / "shape.pth")
    with pytest.raises(UserError, match=r"classifier.6.weight is \(10, 4096\) \(expected \(1000, 4096\)\)"):
        check_state_dict("lpips_alexnet", tmp_path / "shape.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="features.0.weight is missing"):
        check_state_dict("lpips_alexnet", tmp_path / "other.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(UserError, match="holds a list, not a state dict"):
        check_state_dict("lpips_alexnet", tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"LPIPS AlexNet weights .*junk.pth"):   # one line, no traceback
        check_state_dict("lpips_alexnet", tmp_path / "junk.pth")

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    torch.save({"x": Boom()}, tmp_path / "crafted.pth", pickle_module=pickle)
    with pytest.raises(UserError, match="refused to load"):
        check_state_dict("lpips_alexnet", tmp_path / "crafted.pth")
    assert not (tmp_path / "ran").exists()
