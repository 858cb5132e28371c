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
