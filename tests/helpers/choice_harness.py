"""Choice items of our own and lm-evaluation-harness run on them from a local task file, for comparing the
project's choice scores with the harness's, option by option."""
from __future__ import annotations

import json
import random
from pathlib import Path

from helpers.common import write_jsonl

WORDS = ["the cat", "a dog", "sunlight", "rivers", "mountains", "bread", "music", "snow", "猫", "小狗", "太阳",
         "河流", "面包", "音乐"]
ENDINGS = ["", " ", "\n", "\n\n", "  ", ":", "：", " \n"]  # what a context may end with


def sentencepiece_style_tokenizer(texts: list[str], out_dir: Path):
    """A LLaMA-like tokenizer: BPE with the word-start marker (Metaspace, prepended to the first word only),
    byte fallback, and a BOS added to every encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<pad>", "<s>", "</s>", "<unk>"] + bytes_,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.save_pretrained(out_dir)
    return fast


def training_texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(8)) + rng.choice([".", "。", "\n"]) for _ in range(400)]


def option_items(n: int, seed: int) -> list[dict]:
    """Contexts ending in spaces, newlines, colons (ASCII and Chinese); 2-5 options with and without a
    leading space, English and Chinese."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        k = 2 + i % 4
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + ENDINGS[i % len(ENDINGS)]
        lead = " " if i % 3 else ""
        options = [lead + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(k)]
        items.append({"id": i, "context": context, "options": options, "answer": rng.randrange(k)})
    return items


def wino_items(n: int, seed: int) -> list[dict]:
    """WinoGrande form: each context fills the blank its own way; the continuation is shared."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        stem = " ".join(rng.choice(WORDS) for _ in range(3))
        fillers = rng.sample(WORDS, 2)
        rest = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + "."
        items.append({"id": i, "contexts": [f"{stem} {f}" for f in fillers], "continuation": rest,
                      "answer": rng.randrange(2)})
    return items


def write_task_files(folder: Path, items: list[dict], wino: list[dict]) -> list[str]:
    """Local lm-eval tasks (JSON-lines datasets): the options form with nothing inserted between context and
    option, the same items with the joining space as the harness's target delimiter (for acc_norm), and
    the WinoGrande form. Returns the task names."""
    folder.mkdir(parents=True, exist_ok=True)
    spaced = [dict(it, choices=[o[1:] for o in it["options"]]) for it in items
              if all(o.startswith(" ") and len(o) > 1 for o in it["options"])]
    bare = [dict(it, target=it["continuation"][1:]) for it in wino]  # the joining space as the delimiter
    files = {"lf_options": (items, "context", "options", "answer", ""),
             "lf_spaced": (spaced, "context", "choices", "answer", " "),
             "lf_wino": (bare, "answer", "contexts", "target", " ")}
    for name, (rows, text, choice, target, delim) in files.items():
        data = write_jsonl(folder / f"{name}.jsonl", rows)
        config = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                  "test_split": "test", "output_type": "multiple_choice", "doc_to_text": text,
                  "doc_to_choice": choice, "doc_to_target": target, "target_delimiter": delim,
                  "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
        (folder / f"{name}.yaml").write_text(json.dumps(config))  # JSON is YAML
    if not spaced:
        raise AssertionError("no item has options that all start with a space")
    return list(files)


def harness_logliks(model, tokenizer, folder: Path, tasks: list[str]) -> dict:
    """{task: ({doc id: [loglik per option]}, {"acc", "acc_norm"})} from lm-eval's HFLM on the model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, device="cpu")
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_path=str(folder)),
                          log_samples=True, num_fewshot=0)
    result = {}
    for task in tasks:
        per_doc = {s["doc"]["id"]: [float(r[0][0]) for r in s["resps"]] for s in out["samples"][task]}
        metrics = out["results"][task]
        result[task] = (per_doc, {"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"]})
    return result
