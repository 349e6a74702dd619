"""Tiny models and tokenizers built offline, for tests and the CPU demo.

A byte-level BPE tokenizer is trained on a few texts with `tokenizers` and wrapped in
PreTrainedTokenizerFast, so it saves and loads with AutoTokenizer like any hub tokenizer.
Architectures ship as config JSONs in lorafull/models/archs/ (tiny-llama, llama-7b, llama-13b, llama-2-7b);
`model.name_or_path: scratch:<arch>` starts a run from random weights of that architecture.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

ARCH_DIR = Path(__file__).parent / "archs"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3: pad, bos, eos, unk (as the archs say)


def arch_config(arch: str) -> dict:
    """The config dict of a shipped architecture name, or of a config.json path."""
    path = Path(arch)
    if not path.suffix:
        path = ARCH_DIR / f"{arch}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in ARCH_DIR.glob("*.json")))
        raise FileNotFoundError(f"unknown architecture {arch!r}: not a config.json path nor one of: {known}")
    return json.loads(path.read_text())


def build_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512):
    """Train a byte-level BPE on `texts`, save it to out_dir (loadable by AutoTokenizer), return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(arch: str = "tiny-llama", vocab_size: int | None = None, seed: int = 0, **overrides):
    """A randomly initialised causal LM of a shipped architecture (float32)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = arch_config(arch)
    if vocab_size is not None:
        cfg["vocab_size"] = vocab_size
    cfg.update(overrides)
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


SAMPLE_TEXTS = [
    "Human: What is 3 plus 4?\n\nAssistant: 3 plus 4 is 7.",
    "Human: Rewrite in upper case: hello world\n\nAssistant: HELLO WORLD",
    "Human: 请把这句话翻译成英文：我喜欢猫。\n\nAssistant: I like cats.",
    "Human: 小明有5个苹果，又买了3个，一共有几个？\n\nAssistant: 一共有8个苹果。",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ? ! , .",
    "Classify the sentiment: I love this movie. Answer: positive. 这部电影很好看。",
]
