"""Fine-tuning the encoder's top stages on a cached trunk: the split, the cache, the batches, training."""

from __future__ import annotations

import h5py
import pytest
import torch

from nic.captioner import Captioner
from nic.checkpoint import load_checkpoint
from nic.config import load_config
from nic.data import ImageCaptionsDataset, make_loader
from nic.encoders import ENCODERS, TrunkView, build_encoder, unflatten_trunk
from nic.evaluation import decode_split
from nic.features import FeatureReader, encoder_digest, feature_path
from nic.store import StoreReader, store_path
from tests.test_training import (  # noqa: F401  (data_root is a fixture)
    data_root,
    read_jsonl,
    tiny_config,
    train,  # with the stores built first, as train.py does
)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_head_of_trunk_equals_the_whole_forward_pass(name):
    enc = build_encoder(name, pretrained=name == "efficientnet_lite0").eval()
    side = enc.spec.input_size
    images = torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8)
    with torch.no_grad():
        pooled, grid = enc(images)
        for top in (1, 2):
            view = TrunkView(enc, top)
            _, trunk_grid = view(images)  # (B, P', C): what the cache stores
            assert trunk_grid.shape[1:] == (view.grid_side ** 2, view.feature_dim)
            p2, g2 = enc.forward_head(unflatten_trunk(trunk_grid), top)
            assert torch.equal(pooled, p2) and torch.equal(grid, g2)


def test_trunk_view_state_and_digest_exclude_the_head():
    enc = build_encoder("efficientnet_lite0", pretrained=False)
    view = TrunkView(enc, 2)  # blocks.6 and conv_head/bn2 are the head
    assert len(view.trunk) == 8 and view.trunk[-1] is enc.backbone.blocks[5]  # conv_stem, bn1, blocks.0-5
    assert len(view.state_dict()) < len(enc.state_dict())
    digest = encoder_digest(view)
    with torch.no_grad():
        enc.backbone.conv_head.weight.add_(1.0)  # the head changes (fine-tuning): the trunk cache stays valid
        assert encoder_digest(view) == digest
        enc.backbone.blocks[5][0].conv_pw.weight.add_(1.0)  # the trunk changes: it does not
        assert encoder_digest(view) != digest


def test_split_limits_and_message():
    enc = build_encoder("efficientnet_lite0", pretrained=False)
    for top in (0, enc.num_blocks):
        with pytest.raises(ValueError, match="trunk/head split needs 1 <= top stages"):
            TrunkView(enc, top)


def test_image_batches_hold_every_caption_of_each_image(data_root):  # noqa: F811
    train(tiny_config(data_root, "stores_only", "--train.epochs=1", "--train.max_steps=1"), progress=False)
    store = StoreReader(store_path(data_root / "stores", "train"))
    dataset = ImageCaptionsDataset(store)
    assert len(dataset) == store.num_images
    seen = []
    for batch in make_loader(dataset, batch_size=3, shuffle=False):
        m = len(batch["lengths"])
        assert batch["captions"].shape[0] == m and batch["caption_image"].shape == (m,)
        assert batch["captions"].shape[1] == int(batch["lengths"].max())
        for row, img in zip(batch["captions"], batch["caption_image"]):
            seen.append((int(batch["index"][img]), row[row != 0].tolist()))
    expected = [(int(store.caption_image[i]), store.captions[i][store.captions[i] != 0].tolist())
                for i in range(store.num_captions)]
    assert sorted(seen) == sorted(expected)  # every caption once, with its own image


FT = ("--encoder.finetune_blocks=2", "--encoder.finetune_after=1", "--encoder.finetune_lr=0.001",
      "--train.group_captions=true")


@pytest.mark.parametrize("group", [True, False])
def test_finetuning_on_a_cached_trunk_trains_only_the_head(data_root, group):  # noqa: F811
    run_dir = train(tiny_config(data_root, f"trunk_ft_{group}", *FT, "--train.epochs=2",
                                f"--train.group_captions={str(group).lower()}"), progress=False)
    cache = feature_path(store_path(data_root / "stores", "train"), "efficientnet_lite0.trunk2")
    with h5py.File(cache, "r") as f:
        assert f.attrs["trunk_top"] == 2 and f["grid"].shape[1:] == (49, 192)  # blocks.5 output, 7x7x192
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["training"]["state"]["finetuning"]
    pretrained = build_encoder("efficientnet_lite0").state_dict()
    tuned = ckpt["encoder"]
    head = [k for k in tuned if k.startswith(("backbone.blocks.6.", "backbone.conv_head."))]
    trunk = [k for k in tuned if k.startswith(("backbone.blocks.5.", "backbone.conv_stem."))]
    assert head and trunk
    assert any(not torch.equal(tuned[k], pretrained[k]) for k in head)
    assert all(torch.equal(tuned[k], pretrained[k]) for k in trunk)
    bn = "backbone.bn2.running_mean"  # BatchNorm statistics stay frozen
    assert torch.equal(tuned[bn], pretrained[bn])

    # decoding from the trunk cache == decoding the images with the checkpoint's whole encoder
    captioner = Captioner.from_checkpoint(run_dir / "last.pt")
    store = StoreReader(store_path(data_root / "stores", "val"))
    reader = FeatureReader(feature_path(store.path, "efficientnet_lite0.trunk2"), grid=True)
    via_trunk = decode_split(captioner, store, reader, captioner.settings.replace(beam_size=3, max_len=6))
    via_images = decode_split(captioner, store, None, captioner.settings.replace(beam_size=3, max_len=6))
    assert [c[0].words for c in via_trunk.captions] == [c[0].words for c in via_images.captions]
    for a, b in zip(via_trunk.captions, via_images.captions):
        assert a[0].logprob == pytest.approx(b[0].logprob, abs=1e-4)
    if group:
        check_export_keeps_only_the_changed_encoder_tensors(run_dir, tuned)
        # a frozen-CNN run (SCST, say) started from the exported model keeps its fine-tuned CNN in every checkpoint
        follow = train(tiny_config(data_root, "trunk_ft_init", "--train.epochs=1",
                                   f"--train.init_from={run_dir / 'model.pt'}"), progress=False)
        kept = load_checkpoint(follow / "last.pt")["encoder"]
        assert kept is not None and all(torch.equal(kept[k], tuned[k]) for k in tuned)


def check_export_keeps_only_the_changed_encoder_tensors(run_dir, tuned):
    """An exported fine-tuned model holds the tensors that moved, not the packaged rest; it loads whole."""
    from nic.checkpoint import export_model

    data = load_checkpoint(export_model(run_dir / "last.pt", run_dir / "model.pt"))
    assert data["encoder"] is None
    changed = set(data["encoder_changes"])
    pretrained = build_encoder("efficientnet_lite0").state_dict()
    assert changed == {k for k in tuned if not torch.equal(tuned[k], pretrained[k])}
    head = ("backbone.blocks.6.", "backbone.conv_head.", "backbone.bn2.")  # bn2: affine only, statistics frozen
    assert changed and all(k.startswith(head) for k in changed)
    captioner = Captioner.from_checkpoint(run_dir / "model.pt")
    assert captioner.encoder_trained
    for key, value in captioner.encoder.state_dict().items():
        assert torch.equal(value, tuned[key]), key
    from nic.checkpoint import save_checkpoint

    data["encoder_changes"]["backbone.no_such.weight"] = torch.zeros(1)  # a file put together from elsewhere
    save_checkpoint(run_dir / "bad.pt", data)
    with pytest.raises(ValueError, match=r"bad\.pt: the encoder weights do not fit.*backbone\.no_such\.weight"):
        Captioner.from_checkpoint(run_dir / "bad.pt")


def test_resume_while_finetuning_on_a_trunk_equals_uninterrupted_run(data_root):  # noqa: F811
    # 8 images x 2 captions, batch_size 4 captions -> 2 images per step, 4 steps per epoch
    full = train(tiny_config(data_root, "trunk_full", *FT), progress=False)
    killed = train(tiny_config(data_root, "trunk_killed", *FT, "--train.max_steps=7"), progress=False)
    state = load_checkpoint(killed / "last.pt")["training"]["state"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"], state["finetuning"]) == (7, 1, 3, True)
    resumed = train(load_config(killed / "config.yaml", ["--train.max_steps=0"]), resume=killed, progress=False)
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["training"]["state"]["step"] == b["training"]["state"]["step"] == 12
    for part in ("decoder", "encoder"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert read_jsonl(full / "metrics.jsonl") == read_jsonl(resumed / "metrics.jsonl")


def test_an_impossible_finetune_blocks_fails_at_setup(data_root):  # noqa: F811
    with pytest.raises(ValueError, match=r"encoder.finetune_blocks=12: efficientnet_lite0 has 9 stages"):
        train(tiny_config(data_root, "bad_blocks", "--encoder.finetune_blocks=12", "--encoder.finetune_after=5"),
              progress=False)


def test_attention_over_a_lower_grid_caches_it_and_decodes_alike_from_cache_or_images(data_root):  # noqa: F811
    attention = ("--decoder.type=attention", "--decoder.attention_dim=16", "--encoder.grid_below_top=3",
                 "--decoder.attention_query=current", "--decoder.deep_output=true")  # as attention_shapes.yaml
    run_dir = train(tiny_config(data_root, "lower_grid", *attention, "--encoder.grid_size=4", "--train.epochs=1"),
                    progress=False)
    cache = feature_path(store_path(data_root / "stores", "val"), "efficientnet_lite0.below3.grid4")
    with h5py.File(cache, "r") as f:  # blocks.4's 14x14x112 map pooled to 4x4; the pooled vector stays final
        assert f["grid"].shape[1:] == (16, 112) and f["pooled"].shape[1] == 1280
    captioner = Captioner.from_checkpoint(run_dir / "last.pt")
    assert (captioner.encoder.grid_dim, captioner.encoder.grid_side) == (112, 4)
    assert (captioner.decoder.attention_query, captioner.decoder.deep_output) == ("current", True)
    store = StoreReader(store_path(data_root / "stores", "val"))
    settings = captioner.settings.replace(beam_size=3, max_len=6)
    via_cache = decode_split(captioner, store, FeatureReader(cache, grid=True), settings)
    via_images = decode_split(captioner, store, None, captioner.settings.replace(beam_size=3, max_len=6))
    assert [c[0].words for c in via_cache.captions] == [c[0].words for c in via_images.captions]
    assert via_images.captions[0][0].alphas.shape[1] == 16
    with pytest.raises(ValueError, match="grid_below_top=3 takes the grid from inside the frozen trunk"):
        train(tiny_config(data_root, "lower_grid_ft", *attention, "--encoder.finetune_blocks=2",
                          "--encoder.finetune_after=1"), progress=False)


def test_frozen_epochs_read_the_final_features_and_fine_tuning_the_trunk(data_root, monkeypatch):  # noqa: F811
    """Before finetune_after the head is frozen: its output comes from the final-feature cache, not recomputed."""
    from nic.encoders import Encoder

    calls = []
    original = Encoder.forward_cached_trunk

    def counting(self, grid, top):
        calls.append(grid.shape[0])
        return original(self, grid, top)

    monkeypatch.setattr(Encoder, "forward_cached_trunk", counting)
    ft = ("--encoder.finetune_blocks=2", "--encoder.finetune_lr=0.001", "--train.epochs=2")
    train(tiny_config(data_root, "frozen_phase", *ft, "--encoder.finetune_after=2"), progress=False)
    assert calls == []  # two frozen epochs (training, validation loss and decoding): no head run
    for name in ("efficientnet_lite0", "efficientnet_lite0.trunk2"):  # both caches exist, for the switch
        assert feature_path(store_path(data_root / "stores", "train"), name).exists()
    train(tiny_config(data_root, "tuned_phase", *ft, "--encoder.finetune_after=1"), progress=False)
    assert calls  # the second epoch fine-tunes the head on the cached trunk
