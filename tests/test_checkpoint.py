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
