"""Builders shared by the analysis tests: a tiny base model, a study folder with run folders, and
"tuned" weights made without the trainer (perturbed weights, a peft adapter with non-zero B, or a
few real optimizer steps in-process). Imported by tests/test_analysis_*.py."""
from __future__ import annotations

import random

from pathlib import Path

import torch
import yaml

from helpers.common import alpaca_records


def save_base(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer

    from lorafull.models.tiny import build_tiny_model

    model = build_tiny_model(seed=seed)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(folder)
    return folder


def make_study(tmp_path: Path, base_dir: Path, runs: list[dict], analysis: dict | None = None) -> tuple:
    """A study file with explicit runs, loaded and laid out as launch.grid does (study.yaml +
    runs/<name>/config.yaml). Returns (study, {name: run_dir})."""
    from lorafull.config import load_study, save_run_config, save_study_settings, study_signatures

    body = {"study": {"name": "ana", "output_dir": str(tmp_path / "study")},
            "base": {"model": {"name_or_path": str(base_dir), "dtype": "fp32"},
                     "method": {"kind": "lora", "r": 4, "alpha": 8},
                     "data": {"template": "belle"}, "eval": {"max_new_tokens": 8}},
            "runs": runs, "analysis": analysis or {}}
    path = tmp_path / "study_file.yaml"
    path.write_text(yaml.safe_dump(body))
    study = load_study(path)
    save_study_settings(study)
    sigs = study_signatures(study)
    dirs = {}
    for run in study.runs:
        save_run_config(run, study.run_dir(run), sigs[run.name])
        dirs[run.name] = study.run_dir(run)
    return study, dirs


def load_model(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


def save_final(model, run_dir: Path, tokenizer_dir: Path, **save_kw) -> Path:
    from transformers import AutoTokenizer

    final = Path(run_dir) / "final"
    model.save_pretrained(final, **save_kw)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(final)
    return final


def perturbed_full(base_dir: Path, run_dir: Path, tokenizer_dir: Path, scale: float = 0.01, seed: int = 1):
    """A 'full fine-tune' whose change is Gaussian noise on every decoder weight (full rank)."""
    model = load_model(base_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name and p.ndim == 2:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return save_final(model, run_dir, tokenizer_dir)


def random_lora(base_dir: Path, run_dir: Path, tokenizer_dir: Path, r: int = 4, alpha: float = 8, seed: int = 2,
                target_modules="all-linear"):
    """A LoRA adapter with random non-zero B (peft initialises B to 0, i.e. no change)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(base_dir), LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.peft_config["default"].base_model_name_or_path = str(base_dir)
    return save_final(model, run_dir, tokenizer_dir)


def train_briefly(model, tokenizer_dir: Path, steps: int = 30, lr: float = 1e-3, seed: int = 0, texts=None,
                  token_ids=None):
    """A few real AdamW steps of causal-LM loss on tiny instruction text (in-process, ~1 s): a weight
    change with the structure training gives, not noise. token_ids (lists of ids) win over texts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if token_ids is None:
        texts = texts or [f"Human: {r['instruction']} {r['input']}\n\nAssistant: {r['output']}"
                          for r in alpaca_records(64, seed)]
        token_ids = tok(texts)["input_ids"]
    width = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    torch.manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(token_ids), (8,))
        loss = model(input_ids=input_ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model


def arithmetic_items(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        options = sorted({a + b, a + b + 1, abs(a - b) + 20}, key=lambda _: rng.random())
        out.append({"id": f"add{i}", "context": f"What is {a} plus {b}? Answer:",
                    "options": [f" {o}" for o in options], "answer": options.index(a + b)})
    return out


def word_items(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = ["cat", "dog", "sun", "猫", "狗"]
    out = []
    for i in range(n):
        w = rng.choice(words)
        wrong = [x for x in words if x != w]
        options = [f" {w} {w}", f" {rng.choice(wrong)}", f" {w} {rng.choice(wrong)} {w}"]
        rng.shuffle(options)
        out.append({"context": f"Repeat the word. {w}", "options": options, "answer": options.index(f" {w} {w}")})
    return out
