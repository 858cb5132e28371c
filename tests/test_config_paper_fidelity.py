"""Paper-profile fidelity to the released guided-diffusion checkpoints the profiles load."""

import pytest

from repro.config import compose


def test_table3_paper_profile_uses_the_released_models_linear_schedule():
    cfg = compose("3", "paper")
    # the released 128x128 diffusion model and classifier (guided-diffusion README:
    # --noise_schedule linear) are what ADM*, ADM (continued) and the _g rows use
    assert cfg.models.adm_star.released == "adm_128_diffusion"
    assert cfg.classifiers.adm.source == "released"
    assert cfg.diffusion.schedule == "linear"
    assert cfg.diffusion.T == 1000


@pytest.mark.parametrize("table", ["1", "2"])
def test_other_paper_tables_keep_the_papers_cosine_schedule(table):
    # ImageNet-64 (and the released 64x64 classifier of Figure 6: --noise_schedule cosine)
    assert compose(table, "paper").diffusion.schedule == "cosine"


def test_smaller_profiles_of_table3_are_unchanged():
    assert compose("3", "smoke").diffusion.schedule == compose("1", "smoke").diffusion.schedule
