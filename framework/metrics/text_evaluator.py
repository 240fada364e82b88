"""The evaluator LM: a small causal transformer trained here on the same training split, cached by a hash
of (tokenizer, training data, settings), so no download and no retraining between runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Optional

import torch

EVALUATOR_DEFAULTS = {"d_model": 128, "n_layers": 2, "n_heads": 4, "steps": 1500, "batch_size": 64, "lr": 1e-3, "seed": 0}


def evaluator_key(tokenizer_json: str, train_blocks: torch.Tensor, settings: dict) -> str:
    h = hashlib.sha256()
    h.update(tokenizer_json.encode())
    h.update(train_blocks.numpy().tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def train_causal_lm(train_blocks: torch.Tensor, vocab_size: int, bos_id: int, settings: dict, log=print):
    """Plain AdamW next-token training on packed blocks (a few CPU minutes at the defaults)."""
    from models.causal_lm import CausalLM

    s = {**EVALUATOR_DEFAULTS, **settings}
    g = torch.Generator().manual_seed(int(s["seed"]))
    torch.manual_seed(int(s["seed"]))
    lm = CausalLM(vocab_size, train_blocks.shape[1] + 1, bos_id, s["d_model"], s["n_layers"], s["n_heads"])
    opt = torch.optim.AdamW(lm.parameters(), lr=s["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s["lr"], total_steps=int(s["steps"]), pct_start=0.05)
    start = time.time()
    for step in range(int(s["steps"])):
        idx = torch.randint(0, len(train_blocks), (int(s["batch_size"]),), generator=g)
        loss = lm.next_token_loss(train_blocks[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % 250 == 0 or step == s["steps"] - 1):
            log(f"evaluator LM step {step}: loss {float(loss):.3f} ({time.time() - start:.0f}s)")
    return lm.eval()


def load_or_train_evaluator(tokenizer_json: str, train_blocks: torch.Tensor, vocab_size: int, bos_id: int,
                            cache_dir: str | Path = "runs/cache/evaluator", settings: Optional[dict] = None, log=print):
    """The cached evaluator for this tokenizer and data, training it once if absent."""
    from models.causal_lm import CausalLM

    settings = {**EVALUATOR_DEFAULTS, **(settings or {})}
    unknown = sorted(set(settings) - set(EVALUATOR_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown evaluation.evaluator key(s) {', '.join(unknown)}; allowed: {', '.join(EVALUATOR_DEFAULTS)}")
    path = Path(cache_dir) / f"causal_lm_{evaluator_key(tokenizer_json, train_blocks, settings)}.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        lm = CausalLM(vocab_size, train_blocks.shape[1] + 1, bos_id, settings["d_model"], settings["n_layers"], settings["n_heads"])
        lm.load_state_dict(state)
        return lm.eval()
    lm = train_causal_lm(train_blocks, vocab_size, bos_id, settings, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(lm.state_dict(), tmp)
    tmp.replace(path)
    return lm


class HFEvaluator:
    """Optional: a locally installed Hugging Face causal LM (extra `transformers`); text is re-tokenized."""

    def __init__(self, path: str, tokenizer_json: str):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise ValueError("evaluation.evaluator='hf:<path>' needs the optional extra: pip install transformers") from err
        from tokenizers import Tokenizer

        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        self.hf_tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.ours = Tokenizer.from_str(tokenizer_json)

    @torch.no_grad()
    def sequence_nll(self, tokens: torch.Tensor) -> torch.Tensor:
        """NLL of the decoded text under the HF model (per sequence, scored from its BOS)."""
        out = []
        for row in tokens.tolist():
            ids = self.hf_tok(self.ours.decode(row), return_tensors="pt").input_ids
            bos = torch.tensor([[self.hf_tok.bos_token_id or self.hf_tok.eos_token_id]])
            inp = torch.cat([bos, ids], 1)
            logits = self.model(inp).logits[:, :-1]
            out.append(torch.nn.functional.cross_entropy(logits[0], inp[0, 1:], reduction="sum").double())
        return torch.stack(out)


def build_evaluator(evaluation: dict, tokenizer_json: str, datamodule, log=print):
    """The evaluator named by the `evaluation:` section: the project's cached causal LM trained on the
    datamodule's training blocks ('project'), or 'hf:<local path>' (optional extra `transformers`)."""
    from datamodules.text import EOT

    choice = evaluation.get("evaluator", "project")
    if isinstance(choice, str) and choice.startswith("hf:"):
        return HFEvaluator(choice[3:], tokenizer_json)
    if choice != "project":
        raise ValueError(f"evaluation.evaluator={choice!r} is not allowed; allowed: 'project', 'hf:<local path>'")
    datamodule.setup()
    tok = datamodule.tokenizer
    return load_or_train_evaluator(tokenizer_json, datamodule.blocks["train"], tok.get_vocab_size(), tok.token_to_id(EOT),
                                   evaluation.get("cache_dir", "runs/cache/evaluator"), evaluation.get("lm", {}), log)
