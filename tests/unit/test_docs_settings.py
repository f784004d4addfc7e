"""Every setting of every service is documented in the README, and nothing documented is stale."""

import re
from pathlib import Path

from services.aggregator.settings import AggregatorSettings
from services.hospital_node.settings import NodeSettings
from services.inference_api.settings import InferenceSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_and_every_documented_one_exists():
    names = {
        cls.model_config["env_prefix"] + field.upper()
        for cls in (AggregatorSettings, NodeSettings, InferenceSettings)
        for field in cls.model_fields
    }
    documented = set(re.findall(r"\| `(FEDMEDCLIP_[A-Z_]+)` \|", README))
    assert names - documented == set(), "settings missing from the README"
    assert documented - names == set(), "README documents settings that do not exist"
