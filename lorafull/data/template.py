"""Prompt templates: the exact text a model sees before each answer, and a sample cut into segments.

`belle` (default) is the layout of the BELLE models:

    Human: {question}\\n\\nAssistant: {answer}</s>Human: {question 2}\\n\\nAssistant: {answer 2}</s>

(an alpaca record's question is its instruction, then its input on the next line when there is one).
`chat` is the tokenizer's own chat template (apply_chat_template), for models tuned with one.

A sample becomes a list of segments (text, trained): prompt text is masked (label -100), answers
and the EOS after each answer are trained. Each segment is tokenized on its own, so the prompt's
tokens in training are exactly the tokens of `format_prompt(question)` that generation feeds the
model: a BPE merge across the prompt/answer boundary can never blur the mask.
"""
from __future__ import annotations

import typing
from typing import Optional

from lorafull.config.schema import Template
from lorafull.data.read import DataError, Sample

TEMPLATES = typing.get_args(Template)  # the choices live in the schema, which checks them at load
BELLE_PROMPT = "Human: {question}\n\nAssistant: "
BELLE_SYSTEM = "{system}\n\n"
EOS = object()  # marker segment: the tokenizer's EOS id, trained

Segment = tuple  # (text | EOS, trained: bool)


def _check_chat(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise DataError(f"data.template: 'chat' needs a tokenizer with a chat template, and {name} has none; "
                        f"use data.template: belle")


def _chat_messages(sample: Sample, upto_turn: int, with_answer: bool) -> list[dict]:
    messages = [{"role": "system", "content": sample.system}] if sample.system else []
    for i, (question, answer) in enumerate(sample.turns[:upto_turn + 1]):
        if question is not None:
            messages.append({"role": "user", "content": question})
        if i < upto_turn or with_answer:
            messages.append({"role": "assistant", "content": answer})
    return messages


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def format_prompt(question: str, tokenizer, template: str = "belle", system: Optional[str] = None) -> str:
    """The text a model sees before its answer, exactly as in training (generation uses it)."""
    if template == "belle":
        return (BELLE_SYSTEM.format(system=system) if system else "") + BELLE_PROMPT.format(question=question)
    _check_chat(tokenizer)
    return _render(tokenizer, _chat_messages(Sample([(question, "")], system), 0, with_answer=False), True)


def segments(sample: Sample, tokenizer, template: str, where: str = "") -> list[Segment]:
    """The sample as (text, trained) segments; EOS segments mark where the EOS token goes."""
    if sample.turns[0][0] is None and len(sample.turns) == 1 and sample.system is None:
        return [(sample.turns[0][1], True), (EOS, True)]  # plain text: every token trained
    if template == "belle":
        out: list[Segment] = [(BELLE_SYSTEM.format(system=sample.system), False)] if sample.system else []
        for question, answer in sample.turns:
            if question is not None:
                out.append((BELLE_PROMPT.format(question=question), False))
            out += [(answer, True), (EOS, True)]
        return out
    return _chat_segments(sample, tokenizer, where)


def _chat_segments(sample: Sample, tokenizer, where: str) -> list[Segment]:
    """Render the conversation turn by turn; each rendering must extend the previous one, so the
    text between two renderings is exactly the prompt (masked) or the answer (trained)."""
    _check_chat(tokenizer)
    eos_text = tokenizer.eos_token or ""
    out: list[Segment] = []
    done = ""
    for k in range(len(sample.turns)):
        prompt = _render(tokenizer, _chat_messages(sample, k, with_answer=False), True)
        full = _render(tokenizer, _chat_messages(sample, k, with_answer=True), False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DataError(f"{where}: data.template: the tokenizer's chat template does not render this "
                            f"conversation turn by turn (turn {k + 1} rewrites earlier text); use data.template: belle")
        out.append((prompt[len(done):], False))
        answer = full[len(prompt):]
        out.append((answer, True))
        if not eos_text or eos_text not in answer:  # templates that end a turn with EOS already have it
            out.append((EOS, True))
        done = full
    return [(text, trained) for text, trained in out if text is EOS or text]


def special_prefix_ids(tokenizer) -> list[int]:
    """Ids the tokenizer puts in front of a text on its own (LLaMA: BOS); masked in training."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def prefix_for(first_text, tokenizer, prefix_ids: list[int]) -> list[int]:
    """No second BOS when the template's own text already starts with it (e.g. LLaMA-3 chat)."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and isinstance(first_text, str) and first_text.startswith(bos):
        return []
    return prefix_ids


def encode_prompt(question: str, tokenizer, template: str = "belle", system: Optional[str] = None) -> list[int]:
    """The token ids a model sees before its answer in training: special prefix + format_prompt's tokens.
    Generation should feed these ids (tokenizing format_prompt's text with the tokenizer's defaults
    gives the same ids, except for chat templates that write their own BOS)."""
    text = format_prompt(question, tokenizer, template, system)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return prefix_for(text, tokenizer, special_prefix_ids(tokenizer)) + list(ids)
