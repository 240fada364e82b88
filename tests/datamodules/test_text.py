"""Text data: the KJV corpus, fixed splits, the trained tokenizer, packing with end-of-text, user files."""

import pytest
import torch

from datamodules.text import EOT, TextDataModule, load_kjv, pack


def test_kjv_has_every_verse_without_numbers():
    ds = load_kjv()
    assert len(ds) == 24_408
    assert ds[0]["text"] == "In the beginning God created the heavens and the earth."
    assert 4.0e6 < sum(len(t) for t in ds["text"]) < 4.5e6
    assert not any(t[:1].isdigit() for t in ds["text"][:2000])


def test_pack_inserts_end_of_text_and_cuts_blocks():
    blocks = pack([[1, 2, 3], [4, 5]], eot_id=0, length=3)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]  # the trailing eot is the dropped remainder


def test_files_source_splits_tokenizes_and_round_trips(tmp_path):
    lines = [f"Paragraph number {i} says hello to the world and to everyone in it." for i in range(400)]
    (tmp_path / "a.txt").write_text("\n\n".join(lines))
    dm = TextDataModule(source="files", paths=[str(tmp_path / "*.txt")], vocab_size=300, seq_len=16, batch_size=4)
    dm.setup()
    tok = dm.tokenizer
    assert tok.get_vocab_size() == 300 and tok.token_to_id(EOT) is not None
    n = {k: sum(len(t) for t in v) for k, v in dm.texts.items()}
    assert n["val"] > 0 and n["test"] > 0 and n["train"] > 5 * n["val"]
    assert not set(dm.texts["train"]) & set(dm.texts["val"])
    batch = next(iter(dm.train_dataloader()))[0]
    assert batch.shape == (4, 16) and batch.dtype == torch.long and int(batch.max()) < 300
    assert tok.decode(tok.encode(lines[3]).ids) == lines[3]
    same = TextDataModule(source="files", paths=[str(tmp_path / "*.txt")], vocab_size=300, seq_len=16, tokenizer_json=dm.tokenizer_json)
    same.setup()
    assert torch.equal(same.blocks["val"], dm.blocks["val"])


def test_saved_dataset_source(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"body": [f"line {i} of the saved text corpus" for i in range(300)]}).save_to_disk(str(tmp_path / "ds"))
    dm = TextDataModule(source="saved", path=str(tmp_path / "ds"), text_column="body", vocab_size=280, seq_len=8)
    dm.setup()
    assert dm.blocks["train"].shape[1] == 8


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="data.source='web' is not allowed; allowed: kjv, files, saved"):
        TextDataModule(source="web")
    with pytest.raises(ValueError, match="data.split='chapter' is not allowed"):
        TextDataModule(split="chapter")
