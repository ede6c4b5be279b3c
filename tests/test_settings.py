"""Flat options and ``--set`` overrides reach the nested configs, by field name."""

from __future__ import annotations

import pytest

from xraydebug.flagging import FlagRule
from xraydebug.saliency import IGOSConfig
from xraydebug.settings import build_config, parse_assignments, set_path, set_paths
from xraydebug.stages.clean import CleanConfig, InpaintConfig
from xraydebug.stages.scan import ScanConfig
from xraydebug.stages.text import TextConfig
from xraydebug.text import CraftGlobalConfig, detector_config


def test_options_reach_their_nested_fields():
    config = ScanConfig.from_options(
        {"iterations": 3, "ig_steps": 2, "mask_size": 28, "seed": 5, "batch_size": 4}
    )
    assert config.saliency == IGOSConfig.preset(
        "balanced", mask_size=28, iterations=3, ig_steps=2, seed=5
    )
    assert config.batch_size == 4 and config.saliency.batch_size is None  # the scan's, not IGOS's
    assert ScanConfig.from_options({"text": False}).detector is None
    assert ScanConfig.from_options({"method": "gradcam"}).saliency.layer is None
    clean = CleanConfig.from_options({"dilate": 5, "detector": "craft-global", "long_side": 640})
    assert clean.inpaint == InpaintConfig(dilate=5)
    assert clean.detector == CraftGlobalConfig(long_side=640)
    text = TextConfig.from_options({"detector": "craft-global", "batch_size": 3})
    assert text.batch_size == 3 and text.detector == CraftGlobalConfig()  # the stage's first


def test_options_a_config_does_not_have_are_refused():
    with pytest.raises(ValueError, match="long_side: not a setting of ScanConfig"):
        ScanConfig.from_options({"long_side": 640})  # ppocr / craft have no long side
    with pytest.raises(TypeError, match="preset"):
        ScanConfig.from_options({"method": "gradcam", "preset": "fast"})
    with pytest.raises(ValueError, match="nope: not a setting of FlagRule"):
        build_config(FlagRule, {"nope": 1})


def test_set_reaches_any_nested_field_with_its_type():
    config = set_paths(
        ScanConfig(),
        parse_assignments(
            [
                "flags.min_mass=0.1",
                "second_look.min_window_px=128",
                "saliency.tol=0",
                "detector.proposals.min_contrast=0.05",
                "limit=none",
                "shard=1/3",
            ]
        ),
    )
    assert config.flags.min_mass == 0.1 and config.second_look.min_window_px == 128
    assert config.saliency.tol == 0.0 and config.limit is None and config.shard == (1, 3)
    assert config.detector.proposals.min_contrast == 0.05
    assert set_path(ScanConfig(), "second_look", "none").second_look is None
    assert set_path(ScanConfig(), "detector.side_letters", "false").detector.side_letters is False
    assert detector_config("craft").crop_gain == 1.0  # the defaults themselves are untouched


def test_set_errors_name_the_setting():
    with pytest.raises(ValueError, match="unknown setting 'min_mas' of FlagRule; valid: "):
        set_path(ScanConfig(), "flags.min_mas", "1")
    with pytest.raises(ValueError, match="flags is a group of settings"):
        set_path(ScanConfig(), "flags", "1")
    with pytest.raises(ValueError, match="min_mass: expected float"):
        set_path(ScanConfig(), "flags.min_mass", "lots")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignments(["flags.min_mass"])
