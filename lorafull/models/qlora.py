"""QLoRA's 4-bit specifics (method.kind: qlora): the frozen base held by bitsandbytes in 4 bits, LoRA on top.

    python -m lorafull.models.merge RUN_DIR     # a qlora run's merged model: the 4-bit base dequantised, the adapter folded in

Everything else about a qlora run is LoRA's (lorafull.models.methods): the same peft LoRA config and
target modules, the same training loop, checkpoints and adapter folder. What differs lives here:
- loading: every linear layer of the base except the output head becomes a bitsandbytes Linear4bit
  (method.quant_type nf4 | fp4, blocks of BLOCKSIZE weights with one scale each; method.double_quant
  stores those scales in 8 bits), dequantised to method.compute_dtype (default model.dtype) for each
  matmul. The base is quantised from model.dtype, so every stage that loads it again does the same;
- training preparation: peft's prepare_model_for_kbit_training (base frozen, the layers that stay in
  16 bit -- embeddings, norms, output head -- cast to fp32; gradient checkpointing is left to
  train.gradient_checkpointing);
- final/: the peft adapter names the UNQUANTISED base (it loads on it with plain peft), and
  SETTINGS_FILE records how the base was quantised, so generation can rebuild the very 4-bit base
  the adapter was trained against;
- merging: the base is quantised as in training, dequantised to a plain model and the adapter folded
  into it, so the merged model computes what the 4-bit model with the adapter computes (the README
  states the measured difference); folding into the original weights instead would leave the
  quantisation error the adapter was trained around;
- the plan's bytes of a 4-bit weight (packed_bytes).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

BLOCKSIZE = 64  # bitsandbytes' 4-bit block: one scale (absmax) per 64 weights
NESTED_BLOCKSIZE = 256  # double quantisation: the scales themselves quantised to 8 bits in blocks of 256
SETTINGS_FILE = "qlora_config.json"  # in final/: how the base was quantised (settings_of)
# torch is imported where weights are touched, not here: the plan asks packed_bytes without it


def _torch_dtypes() -> dict:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def require_bitsandbytes() -> None:
    """One line naming the method and the package when bitsandbytes cannot be imported."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ValueError(f"method.kind: qlora needs the bitsandbytes package ({e}): "
                         "pip install 'lorafull[qlora]' (or pip install bitsandbytes)") from None


def settings_of(method_cfg, model_dtype: str) -> dict:
    """What fixes the 4-bit base of a run: data type, double quantisation, compute dtype, and the dtype
    the weights are quantised from (model.dtype)."""
    return {"quant_type": method_cfg.quant_type, "double_quant": bool(method_cfg.double_quant),
            "compute_dtype": method_cfg.compute_dtype or model_dtype, "base_dtype": model_dtype}


def settings_of_model(model) -> dict:
    """settings_of, read back from a model's own 4-bit layers: what the trained base really was."""
    import bitsandbytes as bnb

    names = {v: k for k, v in _torch_dtypes().items()}
    layer = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    state = layer.weight.quant_state
    return {"quant_type": state.quant_type, "double_quant": bool(state.nested),
            "compute_dtype": names[layer.compute_dtype], "base_dtype": names[state.dtype]}


def bnb_config(settings: dict):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=settings["quant_type"],
                              bnb_4bit_use_double_quant=settings["double_quant"],
                              bnb_4bit_compute_dtype=_torch_dtypes()[settings["compute_dtype"]])


def _device_map(device: Optional["torch.device"]):
    if device is None or device.type == "cpu":
        return "cpu"
    return {"": device.index if device.index is not None else 0}


def load_4bit(path: str, settings: dict, device: Optional["torch.device"] = None):
    """The base at `path` with its linear layers (not the output head) as bitsandbytes Linear4bit,
    quantised from settings["base_dtype"] on `device` (default the CPU)."""
    require_bitsandbytes()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb_config(settings),
                                                dtype=_torch_dtypes()[settings["base_dtype"]],
                                                device_map=_device_map(device))


def prepare_for_training(model):
    """peft's preparation of a k-bit model: base frozen, 16-bit layers in fp32. Gradient checkpointing
    is train.gradient_checkpointing's business (lorafull.train.speed), not peft's default."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def dequantized_base(path: str, settings: dict, dtype: "torch.dtype"):
    """A plain model (torch Linear layers) holding the 4-bit base's dequantised weights in `dtype`: the
    weights the 4-bit model computes with, quantised exactly as in training."""
    model = load_4bit(path, settings)
    model = model.dequantize(dtype=dtype)
    for p in model.parameters():  # the layers that were never quantised come in base_dtype
        p.data = p.data.to(dtype)
    return model


def save_settings(folder: Path, settings: dict) -> None:
    (Path(folder) / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n")


def read_settings(folder: Path) -> Optional[dict]:
    """The quantisation of a qlora run's final/ (None for any other folder)."""
    path = Path(folder) / SETTINGS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def load_adapter_folder(folder: Path, settings: dict, dtype: "torch.dtype", merge: bool):
    """A qlora final/: merge=False, the 4-bit base with the adapter (what training computed); merge=True,
    the dequantised base with the adapter folded in (a plain model in `dtype`)."""
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    if merge:  # on the CPU: a login node merges too
        base = dequantized_base(base_path, settings, dtype)
        return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    import torch

    # quantised where it will run, as in training (bitsandbytes' CPU quantisation of a 7B base takes minutes)
    base = load_4bit(base_path, settings, torch.device("cuda") if torch.cuda.is_available() else None)
    for p in base.parameters():  # embeddings, norms and output head in the asked dtype; 4-bit weights stay packed
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return PeftModel.from_pretrained(base, str(folder))


def quantized_numel(model) -> int:
    """Weights a 4-bit load packs: every linear layer's but the output head's (transformers keeps the
    output embeddings in 16 bit). Works on a meta-device base model (before the method is applied)."""
    import torch

    out = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not out)


def packed_bytes(quantized: int, double_quant: bool) -> float:
    """Bytes of `quantized` weights held in 4 bits: half a byte each, plus one scale per BLOCKSIZE weights,
    fp32 (4 bytes), or with double quantisation 8 bits plus one fp32 scale per NESTED_BLOCKSIZE of those
    (the QLoRA paper's 0.5 -> 0.127 bits per weight)."""
    blocks = quantized / BLOCKSIZE
    scales = blocks * 1 + blocks / NESTED_BLOCKSIZE * 4 if double_quant else blocks * 4
    return quantized / 2 + scales
