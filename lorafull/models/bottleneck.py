"""Bottleneck adapters (Houlsby et al. 2019; one adapter after each MLP block, as in Pfeiffer et al. 2020):
h -> h + W_up act(W_down h), W_up initialised to zero so training starts from the base model exactly.

Library module (no command): lorafull.models.methods applies it for method.kind: adapter.

Our own module rather than AdapterHub's `adapters` package: adapters 1.3.0 (the newest) requires
transformers ~=4.57, and this package runs on transformers 5. Peft has no bottleneck adapter.

The adapter is a submodule of each layer's `mlp` (named bottleneck_adapter) applied by a forward hook,
so the base weights keep their names and a frozen base loads as usual. final/ of such a run holds
bottleneck_config.json (size, base folder) and bottleneck_adapter.safetensors (the adapters only).
The adapter is nonlinear: it cannot be merged into the base weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "bottleneck_adapter.safetensors"
PARAM_PREFIX = "bottleneck_adapter"


class BottleneckAdapter(torch.nn.Module):
    def __init__(self, hidden: int, size: int, dtype=None, device=None):
        super().__init__()
        self.down = torch.nn.Linear(hidden, size, dtype=dtype, device=device)
        self.up = torch.nn.Linear(size, hidden, dtype=dtype, device=device)
        if self.up.weight.device.type != "meta":
            torch.nn.init.zeros_(self.up.weight)
            torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)


def _apply_after(module, inputs, output):
    return module.bottleneck_adapter(output)


def mlp_blocks(model) -> list[torch.nn.Module]:
    """The MLP block of every decoder layer (LLaMA-style names: ...layers.N.mlp)."""
    blocks = [m for name, m in model.named_modules() if name.endswith(".mlp") and ".layers." in name]
    if not blocks:
        raise ValueError("method.kind: adapter: this model has no decoder layers with an `mlp` block")
    return blocks


def add_adapters(model, size: int):
    """Freeze the base and add one trainable adapter (fp32) after each MLP block; returns the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    hidden = model.config.hidden_size
    for block in mlp_blocks(model):
        device = next(block.parameters()).device
        block.bottleneck_adapter = BottleneckAdapter(hidden, size, dtype=torch.float32, device=device)
        block.register_forward_hook(_apply_after)
    return model


def adapter_state(model) -> dict:
    return {n: p for n, p in model.state_dict().items() if f".{PARAM_PREFIX}." in n}


def save_adapters(folder: Path, state: dict, size: int, base_path: str) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in state.items() if f".{PARAM_PREFIX}." in k}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({"adapter_size": size, "base_model_name_or_path": base_path,
                                                  "placement": "after each mlp block"}, indent=1))


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).exists()


def load_with_adapters(folder: Path, dtype: torch.dtype):
    """The base named in folder's config, with the saved adapters added and loaded."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    cfg = json.loads((Path(folder) / CONFIG_FILE).read_text())
    model = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"], dtype=dtype)
    add_adapters(model, int(cfg["adapter_size"]))
    state = load_file(str(Path(folder) / WEIGHTS_FILE))
    own = adapter_state(model)
    if set(state) != set(own):
        raise ValueError(f"{folder}/{WEIGHTS_FILE}: holds {len(state)} adapter tensors, the model has {len(own)} "
                         "(written for another model?)")
    model.load_state_dict(state, strict=False)
    return model
