from __future__ import annotations

import json

import pytest

from nic.vocab import SPECIALS, Vocabulary, tokenize


def test_tokenize_lowercases_and_strips_punctuation():
    assert tokenize("Two RED circles, left of a square!") == ["two", "red", "circles", "left", "of", "a", "square"]
    assert tokenize("A man's hat -- on the 2nd floor.") == ["a", "man's", "hat", "on", "the", "2nd", "floor"]
    assert tokenize("  ") == []
    assert tokenize("Café au lait") == ["café", "au", "lait"]


def test_build_min_count_order_and_stats():
    caps = [["a", "dog"], ["a", "cat"], ["a", "dog", "runs"], ["the", "dog"]]
    v = Vocabulary.build(caps, min_count=2)
    assert v.itos == [*SPECIALS, "a", "dog"]  # by frequency (dog 3 = a 3 -> alphabetical), cat/runs/the dropped
    assert (v.pad_id, v.start_id, v.end_id, v.unk_id) == (0, 1, 2, 3)
    assert v.stats == {"captions": 4, "distinct_words": 5, "words_kept": 2, "tokens": 9, "tokens_mapped_to_unk": 3}
    assert v.settings["min_count"] == 2


def test_encode_decode_roundtrip_and_unk():
    v = Vocabulary.build([["a", "dog"]] * 5, min_count=1)
    ids = v.encode(["a", "dog", "zebra"])
    assert ids == [v.start_id, v.stoi["a"], v.stoi["dog"], v.unk_id, v.end_id]
    assert v.decode(ids) == ["a", "dog", "<unk>"]
    assert v.decode([v.stoi["a"], v.end_id, v.stoi["dog"]]) == ["a"]  # stops at <end>
    assert v.decode(ids, strip_special=False)[0] == "<start>"


def test_save_load_json_and_hash(tmp_path):
    v = Vocabulary.build([["x", "y"], ["y"]], min_count=1)
    path = tmp_path / "vocab.json"
    v.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "nic-vocab" and data["itos"][:4] == list(SPECIALS)
    w = Vocabulary.load(path)
    assert w == v and w.hash() == v.hash()
    assert Vocabulary.build([["x"]], min_count=1).hash() != v.hash()


def test_bad_vocab_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m preprocess"):
        Vocabulary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        Vocabulary.load(bad)
    bad.write_text('{"itos": ["a"]}')
    with pytest.raises(ValueError, match="not a nic vocabulary"):
        Vocabulary.load(bad)
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])
