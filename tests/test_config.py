"""The run configuration: typed fields, saving and reading back, old configurations."""

import json

import pytest

from helpers.config import PROFILE_NAMES, RECIPES, STUDY, Config, load_config, parse_overrides
from helpers.crf import DEEPLAB_CRF_SETTINGS, deeplab_crf_settings


@pytest.mark.parametrize("profile", sorted(PROFILE_NAMES))
def test_config_survives_a_json_round_trip(profile):
    config = load_config(profile, decoder_channels=(64, 32, 16, 16, 8), output_stride=8)
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_configuration_saved_with_an_extra_dict_reads_into_the_typed_fields():
    saved = Config().to_dict()
    del saved["decoder_channels"], saved["output_stride"]
    saved["extra"] = {"decoder_channels": [256, 128, 64, 32, 16], "output_stride": 8}
    config = Config.from_dict(saved)
    assert config.decoder_channels == (256, 128, 64, 32, 16) and config.output_stride == 8
    old_default = {**Config().to_dict(), "extra": {}}
    del old_default["decoder_channels"], old_default["output_stride"]
    assert Config.from_dict(old_default) == Config()


def test_decoder_channels_can_be_set_like_any_field():
    assert parse_overrides(["decoder_channels=256,128,64,32,16", "output_stride=8"]) == {
        "decoder_channels": (256, 128, 64, 32, 16), "output_stride": 8}
    assert parse_overrides(["decoder_channels=none"]) == {"decoder_channels": None}


def test_load_config_is_a_lookup_of_one_row_per_profile_and_model():
    for (profile, model), row in RECIPES.items():
        assert load_config(profile, model) == row
        assert row.model == model and row.profile == profile.removesuffix(f" {STUDY}")
    # A pretrained encoder without a row of its own trains with the transfer U-Net's row.
    lite2 = load_config("quick", "unet-effnet-lite2")
    assert lite2 == RECIPES[("quick", "unet-effnet-lite0")].replace(model="unet-effnet-lite2")
    with pytest.raises(ValueError, match="unknown profile"):
        load_config("medium")
    # What notebook 07 trains DeepLabV3+ for is its row; what it scores, the CRF settings.
    assert load_config("quick", "deeplabv3plus-effnet-lite0").epochs == 5
    assert deeplab_crf_settings(load_config("quick")) is DEEPLAB_CRF_SETTINGS["quick"]


def test_the_label_studys_rows_keep_the_runs_it_recorded():
    """The quick study's runs trained the profile's recipe before the report's changed: their
    rows keep it, so a finished run of results/label_efficiency.json is never trained again."""
    from helpers import study

    config = study.study_config("quick", "unet-effnet-lite0", size=23, seed=0)
    assert config.crop_size == (192, 256) and config.frozen_stages == 0
    assert not config.validate_annealed_only and config.track_test_each_epoch == 0
    assert config.train_minutes is None and config.epochs == config.patience == 3
    scratch = study.study_config("quick", "mini-unet", size=23, seed=0)
    assert scratch.weight_decay == 5e-4 and scratch.width == 16
    assert study.study_config("full", "mini-unet", 23, 0).num_workers == 3
