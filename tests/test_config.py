from __future__ import annotations

import pytest
import yaml

from nic.config import Config, ConfigError, config_from_dict, load_config, save_config


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["--train.lr=1e-3", "--decoder.dropout=0", "--eval.beam_sizes=[1,3]",
                             "--data.karpathy_json=x.json"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.decoder.dropout, float) and cfg.decoder.dropout == 0.0
    assert cfg.eval.beam_sizes == [1, 3]
    assert cfg.data.karpathy_json == "x.json"
    assert cfg.train.epochs == Config().train.epochs


def test_yaml_roundtrip(tmp_path):
    cfg = load_config(None, ["--train.name=abc"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trian": {}}, r"unknown key\(s\) \['trian'\]"),
        ({"train": {"learning_rate": 1}}, "valid keys"),
        ({"train": {"epochs": "many"}}, r"train.epochs: expected int"),
        ({"encoder": {"freeze": "yes"}}, "expected true/false"),
        ({"data": "coco"}, "expected a mapping"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)
    with pytest.raises(ConfigError, match="--section.key=value"):
        load_config(None, ["--lr=3"])


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml")):
        cfg = load_config(path)
        assert yaml.safe_load(path.read_text())  # non-empty
        assert cfg.decoder.type in ("nic", "attention")
