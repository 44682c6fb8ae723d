from __future__ import annotations

import pickle

import pytest
import torch

from nic.checkpoint import load_checkpoint, save_checkpoint


def test_roundtrip_weights_only(tmp_path):
    payload = {"decoder": {"w": torch.randn(3, 2)}, "config": {"train": {"lr": 0.1}}, "vocab": {"itos": ["a"]},
               "training": {"step": 7, "rng": {"torch": torch.get_rng_state(), "python": [1, 2, 3]}}}
    save_checkpoint(tmp_path / "c.pt", payload)
    data = load_checkpoint(tmp_path / "c.pt")
    assert data["format"] == "nic-checkpoint" and data["training"]["step"] == 7
    torch.testing.assert_close(data["decoder"]["w"], payload["decoder"]["w"])
    assert not list(tmp_path.glob("*.partial-*"))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_untrusted_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "nic-checkpoint", "version": 1, "x": Evil()}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match="cannot be loaded as a nic checkpoint"):
        load_checkpoint(path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a nic checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_interrupted_save_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"training": {"step": 1}})

    def crash(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"training": {"step": 2}})
    monkeypatch.undo()
    assert load_checkpoint(path)["training"]["step"] == 1
    assert not list(tmp_path.glob("*.partial-*"))


def test_refusals_never_advise_an_unsafe_load(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "nic-checkpoint", "version": 1, "x": Evil()}, path, pickle_module=pickle)
    with pytest.raises(ValueError) as refused:
        load_checkpoint(path)
    assert "weights_only" not in str(refused.value) and "pickled objects" in str(refused.value)


def test_export_keeps_only_what_inference_needs(tmp_path, capsys):
    from nic.checkpoint import export_model, main

    payload = {"decoder": {"w": torch.randn(3, 2)}, "encoder": None, "encoder_name": "efficientnet_lite0",
               "config": {"train": {"lr": 0.1}}, "vocab": {"itos": ["a"]},
               "training": {"state": {"epoch": 4, "step": 70}, "optimizer": {"state": {}}}}
    save_checkpoint(tmp_path / "best.pt", payload)
    data = load_checkpoint(export_model(tmp_path / "best.pt", tmp_path / "model.pt", note={"test_bleu4": 0.1}))
    assert "training" not in data
    assert data["export"] == {"source": "best.pt", "epoch": 4, "step": 70, "test_bleu4": 0.1}
    torch.testing.assert_close(data["decoder"]["w"], payload["decoder"]["w"])
    assert main(["export", str(tmp_path / "none.pt"), str(tmp_path / "x.pt")]) == 1
    assert "none.pt: checkpoint not found" in capsys.readouterr().err


def test_fp16_export_halves_the_weights_and_loads_into_a_float32_model(tmp_path):
    from torch import nn

    from nic.checkpoint import export_model, load_weights, main

    net = nn.Sequential(nn.Embedding(10, 8), nn.BatchNorm1d(8))
    payload = {"decoder": net.state_dict(), "encoder": None, "encoder_name": "efficientnet_lite0",
               "config": {}, "vocab": {"itos": ["a"]}, "training": {"state": {"epoch": 1, "step": 2}}}
    save_checkpoint(tmp_path / "best.pt", payload)
    assert main(["export", str(tmp_path / "best.pt"), str(tmp_path / "model.pt"), "--fp16"]) == 0
    data = load_checkpoint(tmp_path / "model.pt")
    assert data["export"]["weights_dtype"] == "float16"
    assert data["decoder"]["0.weight"].dtype == torch.float16
    assert data["decoder"]["1.num_batches_tracked"].dtype == torch.long  # integers stay as they are
    fresh = nn.Sequential(nn.Embedding(10, 8), nn.BatchNorm1d(8))
    load_weights(fresh, data["decoder"], source=tmp_path / "model.pt", part="decoder")
    assert fresh[0].weight.dtype == torch.float32
    torch.testing.assert_close(fresh[0].weight, net[0].weight.half().float(), rtol=0, atol=0)
    assert "weights_dtype" not in load_checkpoint(export_model(tmp_path / "best.pt", tmp_path / "full.pt"))["export"]


def test_int8_weights_round_trip_within_half_a_step_per_row():
    from nic.checkpoint import compact_weights, restore_weights

    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(5, 7, generator=g) * torch.arange(1, 6).float()[:, None],  # rows of different scale
             "conv": torch.randn(3, 2, 2, 2, generator=g), "bias": torch.randn(7, generator=g),
             "steps": torch.tensor(3), "zero": torch.zeros(2, 3)}
    small = compact_weights(state, "int8")
    assert small["w"]["int8"].dtype == torch.int8 and small["w"]["scale"].shape == (5, 1)
    assert small["bias"].dtype == torch.float16 and small["steps"].dtype == torch.long
    back = restore_weights(small)
    for k in ("w", "conv"):
        rows = state[k].reshape(state[k].shape[0], -1)
        step = rows.abs().amax(1, keepdim=True) / 127  # one int8 step of each row
        assert back[k].shape == state[k].shape
        assert ((back[k].reshape_as(rows) - rows).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(back["zero"], state["zero"]) and torch.equal(back["steps"], state["steps"])
    with pytest.raises(ValueError, match="int4"):
        compact_weights(state, "int4")
