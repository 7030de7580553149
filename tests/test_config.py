"""The run configuration: typed fields, saving and reading back, old configurations."""

import json

import pytest

from helpers import train
from helpers.config import PROFILES, Config, deeplab_crf_settings, load_config


@pytest.mark.parametrize("profile", sorted(PROFILES))
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
    assert train.parse_overrides(["decoder_channels=256,128,64,32,16", "output_stride=8"]) == {
        "decoder_channels": (256, 128, 64, 32, 16), "output_stride": 8}
    assert train.parse_overrides(["decoder_channels=none"]) == {"decoder_channels": None}


def test_deeplab_crf_settings_fill_in_the_profiles_epochs():
    assert deeplab_crf_settings(load_config("smoke")).deeplab_epochs == load_config("smoke").epochs
    assert deeplab_crf_settings(load_config("quick")).deeplab_epochs == 5
