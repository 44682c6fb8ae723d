from __future__ import annotations

from pathlib import Path

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
        # impossible values: the key with its section, the value, what is legal
        ({"train": {"batch_size": 0}}, r"^config: train.batch_size=0: must be 1 or more$"),
        ({"eval": {"beam_sizes": [20, 0]}}, r"eval.beam_sizes=\[20, 0\]: element 1 \(0\) must be 1 or more"),
        ({"train": {"lr": float("nan")}}, r"train.lr=nan: must be a finite number \(greater than 0\)"),
        ({"train": {"best": "val"}}, "train.best='val': invalid choice; valid: bleu, cider, last"),
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
    for path in sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml")):
        cfg = load_config(path)
        assert yaml.safe_load(path.read_text())  # non-empty
        assert cfg.decoder.type in ("nic", "attention")


# ---------------------------------------------------------------------------- per-decoder sections
SHAPES = Path(__file__).resolve().parents[1] / "configs" / "attention_shapes.yaml"
LEGACY = {"attention_dim": 512, "alpha_c": 1.0, "grid_coords": False, "grid_coords_scale": 1.0,
          "grid_coords_gated": True, "attention_query": "previous", "deep_output": False}  # every old checkpoint's


def test_nested_decoder_section_round_trips(tmp_path):
    cfg = load_config(SHAPES)
    assert cfg.decoder.options["attention"] == {
        "attention_dim": 256, "alpha_c": 0.0, "grid_coords": True, "grid_coords_scale": 6.0,
        "grid_coords_gated": False, "attention_query": "current", "deep_output": True}
    d = cfg.to_dict()["decoder"]  # the YAML form: the section under the decoder's name, no "options" key
    assert list(d) == ["type", "embed_dim", "hidden_dim", "num_layers", "dropout", "attention"]
    assert config_from_dict(cfg.to_dict()) == cfg
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["decoder"]["attention"]["grid_coords_scale"] == 6.0
    # the chosen decoder's section is filled with its defaults (checkpoints record every option)
    assert load_config(None, ["--decoder.type=attention"]).decoder.options == {"attention": LEGACY}
    assert Config().to_dict()["decoder"] == {"type": "nic", "embed_dim": 512, "hidden_dim": 512, "num_layers": 1,
                                             "dropout": 0.5}


def test_legacy_flat_decoder_keys_migrate_to_the_attention_section():
    # an old checkpoint's config: every flat key, whatever the type
    old = config_from_dict({"decoder": {"type": "nic", "embed_dim": 16, "hidden_dim": 16, "num_layers": 1,
                                        "dropout": 0.5, **LEGACY}})
    assert old.decoder.options == {"attention": LEGACY} and old.decoder.embed_dim == 16
    assert config_from_dict(old.to_dict()) == old
    # an old attention config (flat) == the same config written the new way
    flat = {"type": "attention", "attention_dim": 256, "alpha_c": 0, "attention_query": "current", "deep_output": True}
    nested = {"type": "attention", "attention": {k: v for k, v in flat.items() if k != "type"}}
    assert config_from_dict({"decoder": flat}) == config_from_dict({"decoder": nested})
    assert config_from_dict({"decoder": flat}).decoder.options["attention"]["alpha_c"] == 0.0  # typed: a float
    # flat keys and a nested section that gives other keys merge
    mixed = config_from_dict({"decoder": {"alpha_c": 0.5, "attention": {"attention_dim": 8}}}).decoder.options
    assert mixed["attention"] == {**LEGACY, "alpha_c": 0.5, "attention_dim": 8}
    # the shipped recipes were flat before: the same config
    old_shapes = yaml.safe_load(SHAPES.read_text())
    old_shapes["decoder"] = {**{k: v for k, v in old_shapes["decoder"].items() if k != "attention"},
                             **old_shapes["decoder"]["attention"]}
    assert config_from_dict(old_shapes) == load_config(SHAPES)


@pytest.mark.parametrize(
    "decoder, message",
    [
        ({"alpha_c": 0.5, "attention": {"alpha_c": 0.1}}, "decoder.alpha_c and decoder.attention.alpha_c are both"),
        ({"type": "attention", "attention": {"alpah_c": 1}}, r"decoder.attention: unknown key\(s\) \['alpah_c'\]"),
        ({"type": "attention", "attention": {"alpha_c": "x"}}, "decoder.attention.alpha_c: expected float"),
        ({"attention": {"grid_coords": "yes"}}, "decoder.attention.grid_coords: expected true/false"),
        ({"attention": 3}, "decoder.attention: expected a mapping"),
        ({"deep_output": True, "attention": 3}, "decoder.attention: expected a mapping"),
        ({"type": "attention", "atention": {"alpha_c": 1}}, r"unknown key\(s\) \['atention'\] in DecoderConfig"),
        ({"options": {"attention": {}}}, r"unknown key\(s\) \['options'\]"),
        ({"nic": {}}, "decoder.nic: the 'nic' decoder takes no options"),
        ({"embed_dim": "big"}, "decoder.embed_dim: expected int"),
        ({"dropout": -0.1}, r"decoder.dropout=-0.1: must be in \[0, 1\)"),
        ({"num_layers": 0}, "decoder.num_layers=0: must be 1 or more"),
        ({"attention": {"grid_coords_scale": float("inf")}}, "decoder.attention.grid_coords_scale=inf: must be"),
    ],
)
def test_bad_decoder_sections_name_the_key(decoder, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"decoder": decoder})


def test_an_unregistered_type_keeps_its_section_for_build_decoder():
    cfg = config_from_dict({"decoder": {"type": "someday", "someday": {"width": 3}}})
    assert cfg.decoder.options == {"someday": {"width": 3}} and config_from_dict(cfg.to_dict()) == cfg


def test_nested_overrides(tmp_path):
    cfg = load_config(SHAPES, ["--decoder.attention.alpha_c=0.5", "--decoder.attention.attention_query=previous",
                               "--decoder.dropout=0.1"])
    assert cfg.decoder.options["attention"]["alpha_c"] == 0.5 and cfg.decoder.dropout == 0.1
    assert cfg.decoder.options["attention"]["attention_query"] == "previous"
    assert cfg.decoder.options["attention"]["grid_coords_scale"] == 6.0  # the rest of the file's section stays
    # old flat overrides still work, on new (nested) and old (flat) files alike, and win over the file
    assert load_config(SHAPES, ["--decoder.alpha_c=2"]).decoder.options["attention"]["alpha_c"] == 2.0
    old = tmp_path / "old.yaml"
    old.write_text("decoder:\n  type: attention\n  alpha_c: 0.0\n  deep_output: true\n")
    for override in ("--decoder.alpha_c=2", "--decoder.attention.alpha_c=2"):
        section = load_config(old, [override]).decoder.options["attention"]
        assert (section["alpha_c"], section["deep_output"]) == (2.0, True)
    assert load_config(None, ["--decoder.attention={alpha_c: 0.5}"]).decoder.options["attention"]["alpha_c"] == 0.5
    with pytest.raises(ConfigError, match="decoder.attention.alpha_c: expected float"):
        load_config(None, ["--decoder.attention.alpha_c=lots"])
    with pytest.raises(ConfigError, match="'decoder.dropout' is not a mapping"):
        load_config(None, ["--decoder.dropout=0.1", "--decoder.dropout.x=1"])
