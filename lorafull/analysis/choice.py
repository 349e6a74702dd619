"""Choice tasks scored the way lm-evaluation-harness scores multiple-choice tasks on a causal model, so a
local HellaSwag / ARC / WinoGrande file gives the numbers papers report.

Library module (no command): lorafull.analysis.tasks scores `kind: choice` tasks with score_choice.

Two item forms (one JSON object per line):
- options:      {"context": str, "options": [str, ...], "answer": i}. Each option is scored as the
                continuation of the context.
- contexts:     {"contexts": [str, ...], "continuation": str, "answer": i} (WinoGrande): each context
                completes the sentence its own way; the shared continuation is scored after each.
Joining rule: the continuation follows the context exactly as written, nothing inserted; an option that
needs a leading space carries it (" Paris"), so a task file means the same for every tokenizer.

How a pair is scored, step by step as the harness does it:
1. whitespace at the end of the context is moved to the front of the continuation;
2. context + continuation is tokenized as one string (with the tokenizer's special tokens, e.g. BOS),
   the context alone likewise, and the continuation's tokens are those of the whole past the
   context's length -- so a word-start marker, a merge across the boundary or a trailing newline
   come out as in running text; an empty context is replaced by the BOS (else EOS) token;
3. the log-likelihood is the sum of log p(continuation token | everything before it), the input cut
   to the model's maximum length from the left.
acc picks the most likely choice; acc_norm divides each log-likelihood by the number of characters of
the choice: the option without the one leading space it carries for joining (the harness's choice text
with its target delimiter removed), or, in the contexts form, each context (as the harness does; the
WinoGrande convention is to report acc).
"""
from __future__ import annotations

import torch


def _encode(tokenizer, text: str) -> list[int]:
    # the harness's tok_encode: the tokenizer's default special tokens, none if the text starts with BOS
    bos = tokenizer.bos_token
    special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _prefix_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as the harness splits them."""
    if context == "":
        whole = _encode(tokenizer, continuation)
        prefix = _prefix_id(tokenizer)
        return ([prefix], whole) if not whole or whole[0] != prefix else (whole[:1], whole[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def pairs_of(item: dict) -> list[tuple[str, str]]:
    if "contexts" in item:
        return [(c, item["continuation"]) for c in item["contexts"]]
    return [(item["context"], o) for o in item["options"]]


def norm_lengths(item: dict) -> list[int]:
    """Characters acc_norm divides by, one per choice."""
    if "contexts" in item:
        return [len(c) for c in item["contexts"]]
    return [len(o) - 1 if o.startswith(" ") and len(o) > 1 else len(o) for o in item["options"]]


@torch.no_grad()
def option_loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8,
                          progress: bool = False) -> list[float]:
    """Sum of log p(continuation tokens | context) for each (context, continuation) pair."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    max_len = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = []
    for c, o in pairs:
        ctx, cont = encode_pair(tokenizer, c, o)
        encoded.append(((ctx + cont)[-(max_len + 1):][:-1], cont))  # the input: all but the last token
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths share a batch
    out = [0.0] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc="choice", disable=not progress, unit="batch"):
        idx = order[start: start + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # right padding: positions (and rotary phases) match unpadded
            ids[row, : len(encoded[i][0])] = torch.tensor(encoded[i][0])
            mask[row, : len(encoded[i][0])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        for row, i in enumerate(idx):
            inp, cont = encoded[i]
            # the last len(cont) input positions predict the continuation's tokens
            logp = torch.log_softmax(logits[row, len(inp) - len(cont): len(inp)], dim=-1)
            out[i] = float(logp.gather(1, torch.tensor(cont, device=logp.device)[:, None]).sum())
    return out


def score_choice(model, tokenizer, items: list[dict], batch_size: int = 8, progress: bool = False) -> dict:
    """{"acc", "acc_norm", "n", "items": [{"id", "loglik", "pred", "pred_norm", "answer"}]}."""
    pairs = [p for it in items for p in pairs_of(it)]
    ll = option_loglikelihoods(model, tokenizer, pairs, batch_size, progress)
    correct = correct_norm = 0
    per_item, k = [], 0
    for it in items:
        lengths = norm_lengths(it)
        scores = ll[k: k + len(lengths)]
        k += len(lengths)
        pred = max(range(len(scores)), key=scores.__getitem__)
        pred_norm = max(range(len(scores)), key=lambda j: scores[j] / lengths[j])
        correct += pred == it["answer"]
        correct_norm += pred_norm == it["answer"]
        per_item.append({"id": it["id"], "loglik": scores, "pred": pred, "pred_norm": pred_norm, "answer": it["answer"]})
    return {"acc": correct / len(items), "acc_norm": correct_norm / len(items), "n": len(items), "items": per_item}
