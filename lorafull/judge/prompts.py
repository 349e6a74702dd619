"""Judge prompts per category, in BELLE's file format: one {"class", "prompt"} object per line.

The package ships its own prompts (lorafull/judge/builtin/judge_default.jsonl); `eval.judge.prompts` points
to another file in the same format (e.g. the prompts of the BELLE paper). A line may carry
"reference": true|false to say whether the protocol compares against the reference answer; without
it the prompt text decides (it mentions a reference / 标准答案 / 参考答案).

Category names are matched after normalisation ("open QA" == "open qa" == "open\u00a0qa"), because
BELLE's eval set and its prompt file spell the same class differently.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lorafull.runs import iter_json_lines

DEFAULT_PROMPTS = Path(__file__).parent / "builtin" / "judge_default.jsonl"
_REFERENCE_WORDS = re.compile(r"reference|标准答案|参考答案|标准回答", re.IGNORECASE)
_CJK = re.compile(r"[\u4e00-\u9fff]")


def normalize_class(name: str) -> str:
    """Case, non-breaking and repeated spaces, underscores/hyphens: 'Open_QA' == 'open\u00a0qa'."""
    text = unicodedata.normalize("NFKC", str(name))  # NFKC turns U+00A0 and full-width forms into plain ones
    text = re.sub(r"[\s_\-]+", " ", text)
    return text.strip().lower()


@dataclass(frozen=True)
class CategoryPrompt:
    category: str  # normalised class name
    prompt: str
    uses_reference: bool


class PromptError(ValueError):
    """A bad prompt file, or an eval class without a prompt; names the file/line or the classes."""


def load_prompts(path: Optional[str | Path] = None) -> dict[str, CategoryPrompt]:
    """normalised class -> CategoryPrompt, from a BELLE-format file (default: the package's)."""
    path = Path(path) if path else DEFAULT_PROMPTS
    if not path.exists():
        raise PromptError(f"{path}: judge prompt file not found (eval.judge.prompts)")
    prompts: dict[str, CategoryPrompt] = {}
    for lineno, obj, _ in iter_json_lines(path, PromptError):
        if not isinstance(obj, dict) or not isinstance(obj.get("class"), str) or not isinstance(obj.get("prompt"), str):
            raise PromptError(f"{path}:{lineno}: expected {{\"class\": str, \"prompt\": str}}")
        category = normalize_class(obj["class"])
        if category in prompts:
            raise PromptError(f"{path}:{lineno}: class {obj['class']!r} appears twice")
        uses_ref = obj.get("reference")
        if not isinstance(uses_ref, bool):
            uses_ref = bool(_REFERENCE_WORDS.search(obj["prompt"]))
        prompts[category] = CategoryPrompt(category, obj["prompt"].strip(), uses_ref)
    if not prompts:
        raise PromptError(f"{path}: no prompts in file")
    return prompts


def check_classes(classes: set[str], prompts: dict[str, CategoryPrompt], prompts_path=None) -> None:
    """Every eval class must have a prompt: checked before any request is sent."""
    missing = sorted({c for c in classes if normalize_class(c) not in prompts})
    if missing:
        where = prompts_path or DEFAULT_PROMPTS.name
        raise PromptError(f"{where}: no judge prompt for eval class(es) {', '.join(map(repr, missing))}; "
                          f"known classes: {', '.join(sorted(prompts))}")


def build_messages(cat: CategoryPrompt, question: str, response: str, std_answer: str = "") -> list[dict]:
    """Chat messages for one judgment: the category's grading instructions as the system message,
    the question, (reference,) and the model answer as the user message. Labels follow the prompt's
    language so a Chinese protocol reads as one text."""
    zh = bool(_CJK.search(cat.prompt))
    labels = ("问题", "标准答案", "模型回答") if zh else ("Question", "Reference answer", "Model answer")
    colon = "：" if zh else ":"
    parts = [f"{labels[0]}{colon}\n{question.strip()}"]
    if cat.uses_reference and std_answer and std_answer.strip():
        parts.append(f"{labels[1]}{colon}\n{std_answer.strip()}")
    parts.append(f"{labels[2]}{colon}\n{response.strip()}")
    return [{"role": "system", "content": cat.prompt}, {"role": "user", "content": "\n\n".join(parts)}]
