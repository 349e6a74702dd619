"""The project's choice scores against lm-evaluation-harness's (HFLM on the same tiny model, a local task
file), option by option, for a SentencePiece-style and a byte-level BPE tokenizer: contexts ending in
spaces and newlines, Chinese, 2-5 options, and WinoGrande-style items."""
from __future__ import annotations

import pytest

from helpers.choice_harness import (harness_logliks, option_items, sentencepiece_style_tokenizer, training_texts,
                                    wino_items, write_task_files)

pytest.importorskip("lm_eval", reason="lm-eval is a test extra: pip install -e .[test]")
pytestmark = pytest.mark.slow  # ~25 s per tokenizer on 2 cores (the harness's task loading dominates)


@pytest.fixture(scope="module", params=["sentencepiece_style", "byte_level_bpe"])
def model_and_tokenizer(request, tmp_path_factory):
    from transformers import AutoTokenizer

    from lorafull.models.tiny import build_tiny_model, build_tokenizer

    out = tmp_path_factory.mktemp(request.param)
    if request.param == "sentencepiece_style":
        sentencepiece_style_tokenizer(training_texts(), out)
    else:
        build_tokenizer(training_texts(), out, vocab_size=600)
    tok = AutoTokenizer.from_pretrained(str(out))
    return build_tiny_model("tiny-llama", vocab_size=len(tok), seed=3).eval(), tok, request.param


def test_choice_logliks_equal_the_harness_option_by_option(model_and_tokenizer, tmp_path):
    from lorafull.analysis.choice import score_choice

    model, tok, kind = model_and_tokenizer
    items, wino = option_items(48, seed=1), wino_items(16, seed=2)
    if kind == "sentencepiece_style":  # LLaMA-like: a BOS on every encoding
        assert tok("x")["input_ids"][0] == tok.bos_token_id
    tasks = write_task_files(tmp_path / "tasks", items, wino)
    harness = harness_logliks(model, tok, tmp_path / "tasks", tasks)

    ours = score_choice(model, tok, items, batch_size=5)
    theirs, metrics = harness["lf_options"]
    assert len(theirs) == len(items) == 48
    for it, mine in zip(items, ours["items"]):
        assert mine["loglik"] == pytest.approx(theirs[it["id"]], abs=1e-4), (kind, it)
    assert ours["acc"] == pytest.approx(metrics["acc"])

    spaced_ids = set(harness["lf_spaced"][0])
    spaced = score_choice(model, tok, [it for it in items if it["id"] in spaced_ids])
    assert len(spaced_ids) >= 10 and spaced["acc_norm"] == pytest.approx(harness["lf_spaced"][1]["acc_norm"])

    w = score_choice(model, tok, wino)
    w_theirs, w_metrics = harness["lf_wino"]
    for it, mine in zip(wino, w["items"]):
        assert mine["loglik"] == pytest.approx(w_theirs[it["id"]], abs=1e-4), (kind, it)
    assert w["acc"] == pytest.approx(w_metrics["acc"]) and w["acc_norm"] == pytest.approx(w_metrics["acc_norm"])
