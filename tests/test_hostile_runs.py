"""Hostile and careless input to training runs: resume on other data, two writers, a tampered checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from nic import rundir
from nic.checkpoint import load_checkpoint, save_checkpoint
from nic.config import load_config
from nic.distributed import DistInfo
from nic.rundir import LOCK_NAME, ResumeMismatch, RunDirBusy, lock_run_dir
from nic.training import train as _train
from tests.conftest import write_karpathy_fixture
from tests.test_training import tiny_config, train  # train: with the stores built first, as train.py does


def no_data_work(*args, **kwargs):
    raise AssertionError("the stores were touched: the refusal must come before any data work")


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """A run stopped after one optimizer step (its last.pt is a resume point), on its own copy of the data."""
    root = tmp_path_factory.mktemp("hostile_runs")
    write_karpathy_fixture(root, n=16)
    run_dir = train(tiny_config(root, "stopped", "--train.max_steps=1", "--train.epochs=1"), progress=False)
    return root, run_dir


def test_resume_refuses_changed_data_settings_before_any_data_work(resumable):
    _, run_dir = resumable
    cfg = load_config(run_dir / "config.yaml", ["--data.min_count=2", "--encoder.grid_size=3"])
    with pytest.raises(ResumeMismatch) as refused:
        _train(cfg, resume=run_dir, progress=False, prepare_data=no_data_work)
    text = str(refused.value)
    assert str(run_dir / "last.pt") in text
    assert "data.min_count is 1 in the checkpoint but 2 now" in text and "encoder.grid_size is 0" in text
    assert "drop these overrides" in text and "without --resume" in text  # what to do
    # where the data lives may change (a moved folder); what it is may not: more epochs are fine
    fine = load_config(run_dir / "config.yaml", ["--train.epochs=2", "--data.num_workers=1"])
    assert rundir.read_resume(run_dir, fine).path == run_dir / "last.pt"


def test_resume_refuses_a_vocabulary_of_the_same_size_with_other_words(resumable):
    root, run_dir = resumable
    dataset = root / "dataset_tiny.json"
    original = dataset.read_text()
    try:  # edit a few captions: "dog" becomes "wolf" everywhere, so the vocabulary keeps its size
        dataset.write_text(original.replace("dog", "wolf").replace("Dog", "Wolf"))
        with pytest.raises(ResumeMismatch) as refused:
            train(load_config(run_dir / "config.yaml"), resume=run_dir, progress=False)
    finally:
        dataset.write_text(original)
    text = str(refused.value)
    size = len(load_checkpoint(run_dir / "last.pt")["vocab"]["itos"])
    assert str(run_dir / "last.pt") in text and "vocab.json" in text
    assert f"both {size} words" in text and "'dog' in the checkpoint but " in text and "'wolf'" in text
    assert "1 of" in text and "rebuild the stores" in text and "without --resume" in text
    assert load_checkpoint(run_dir / "last.pt")["training"]["state"]["step"] == 1  # nothing trained on


def test_a_second_writer_of_a_run_directory_fails_at_once(resumable, tmp_path):
    root, _ = resumable
    run_dir = root / "runs" / "busy"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen(  # another job: holds the lock the way nic does (flock on train.lock)
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush()\n"
         "print('held', flush=True); time.sleep(60)", str(run_dir / LOCK_NAME)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy) as refused:
            train(tiny_config(root, "busy"), progress=False)
        assert [p.name for p in run_dir.iterdir()] == [LOCK_NAME]  # refused before writing anything
        text = str(refused.value)
        assert str(run_dir) in text and "another training run" in text and f"pid {holder.pid}" in text
    finally:
        holder.kill()
        holder.wait()
    with lock_run_dir(run_dir):  # released with its holder; a nic job holds it for its whole run
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
            with lock_run_dir(run_dir):
                pass
    with lock_run_dir(run_dir):  # and releases it when it ends
        pass


def test_every_rank_fails_when_rank_0_cannot_lock(tmp_path, monkeypatch):
    """Under torchrun only rank 0 takes the lock; the others hear its outcome instead of waiting at a barrier."""
    told = []

    def broadcast(obj, info):  # rank 1's side of rank 0's broadcast
        told.append(obj)
        return "RunDirBusy: runs/x: another training run (pid 7) is writing this run directory"

    monkeypatch.setattr(rundir, "broadcast_object", broadcast)
    with pytest.raises(RunDirBusy, match="rank 0 could not lock the run directory: .*pid 7"):
        with lock_run_dir(tmp_path / "x", DistInfo(rank=1, world_size=2)):
            pass
    assert told == [None] and not (tmp_path / "x").exists()  # rank 1 never touches the directory


def test_a_checkpoint_whose_vocabulary_disagrees_with_its_weights(resumable, tmp_path):
    _, run_dir = resumable
    data = load_checkpoint(run_dir / "last.pt")
    rows = len(data["vocab"]["itos"])
    data["vocab"]["itos"] += ["zebra", "yak"]  # two words more than the weights have rows
    bad = tmp_path / "tampered.pt"
    save_checkpoint(bad, {k: v for k, v in data.items() if k not in ("format", "version")})
    from nic.captioner import Captioner

    with pytest.raises(ValueError) as refused:
        Captioner.from_checkpoint(bad)
    text = str(refused.value)
    assert text.startswith(str(bad)) and "\n" not in text
    assert f"decoder.word_embed.weight is {rows}x16 in the weights but the vocabulary has {rows + 2} words" in text
    # a truncated checkpoint: named, and never the advice to load it unsafely
    (tmp_path / "half.pt").write_bytes((run_dir / "last.pt").read_bytes()[:5000])
    with pytest.raises(ValueError, match="half.pt: cannot be loaded") as truncated:
        load_checkpoint(tmp_path / "half.pt")
    assert "weights_only" not in str(truncated.value)
    assert torch.load(run_dir / "last.pt", weights_only=True)["format"] == "nic-checkpoint"


def test_runs_table_skips_a_line_a_running_job_is_writing(tmp_path, capsys):
    from nic import runs

    run = tmp_path / "live"
    run.mkdir()
    done = {"epoch": 1, "step": 4, "train_loss": 2.0, "val_BLEU-4": 0.1, "epoch_time_s": 60}
    (run / "metrics.jsonl").write_text(json.dumps(done) + '\n{"epoch": 2, "step": 8, "train_lo')  # torn last line
    runs.main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert "| live | 1 | 4 |" in out and f"{run / 'metrics.jsonl'}:2: not a JSON line, skipped" in err
