"""Inference throughput: mineral3d's tiled inference vs a plain fp32 MONAI call a user would write.

Run: .venv/bin/python benchmarks/bench_infer.py MODEL SAMPLE [--repeats 2]

Both run in fresh Python processes, interleaved (reference, ours, reference, ours, ...),
on the sample's whole CT normalised the same way, with the same network and weights,
64³ windows, overlap 0.25, Gaussian blending, 2 windows per batch, the same 8 mirrored
slices above and below (``InferConfig.z_pad``):

- reference: ``torch.no_grad()`` + ``monai.inferers.sliding_window_inference`` in fp32,
  default allocator and threads (what a user would write);
- reference, tuned (like against like): the same MONAI call with mineral3d's settings:
  glibc allocator thresholds raised, bf16 autocast, channels-last, ``inference_mode``
  (all written out in the child, not imported from mineral3d's inference);
- mineral3d: ``mineral3d.nn.infer.predict_probabilities`` (glibc allocator thresholds
  raised, bf16 autocast where the CPU has it, channels-last, ``inference_mode``), one
  pass (``tta="none"``) like the MONAI calls: the default mirrored inference does 4 passes
  (4x the time; what it buys is in docs/benchmarks.md, "Mirrored inference").

The first ratio is what a user gains by calling mineral3d instead of writing the plain
call; the second is the fair one: mineral3d adds nothing over MONAI with the same
settings (it is a thin wrapper), and should not be slower.

Reports megavoxels per second (time of the inference call, after one warm-up window)
and the share of voxels whose argmax class is the same.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
import numpy as np, torch
from mineral3d.io import open_sample
from mineral3d.intensity import GreyLevels
from mineral3d.nn import load_model
mode, model_dir, sample_dir, out = sys.argv[1:5]
model = load_model(model_dir)
ct = open_sample(sample_dir).ct()
image = GreyLevels.from_volume(ct).normalise(ct)
net = model.build()
if mode == "reference":
    from monai.inferers import sliding_window_inference
    # the same mirrored z margin as mineral3d's InferConfig.z_pad, so that both do the same work
    x = torch.from_numpy(np.pad(image, ((8, 8), (0, 0), (0, 0)), mode="symmetric"))[None, None]
    with torch.no_grad():
        sliding_window_inference(x[..., :64, :64, :64], (64, 64, 64), 2, net, overlap=0.25, mode="gaussian")
        t = time.perf_counter()
        prob = sliding_window_inference(x, (64, 64, 64), 2, net, overlap=0.25, mode="gaussian")
        dt = time.perf_counter() - t
    arg = prob[0, :, 8:-8].argmax(0).numpy().astype(np.uint8)
elif mode == "reference-tuned":
    import ctypes
    from monai.inferers import sliding_window_inference
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 30); libc.mallopt(-1, 1 << 30); libc.mallopt(-2, 64 << 20)
    net = net.eval().to(memory_format=torch.channels_last_3d)
    x = torch.from_numpy(np.pad(image, ((8, 8), (0, 0), (0, 0)), mode="symmetric"))[None, None]
    def predictor(b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.softmax(net(b.contiguous(memory_format=torch.channels_last_3d)).float(), dim=1)
    with torch.inference_mode():
        sliding_window_inference(x[..., :64, :64, :64], (64, 64, 64), 2, predictor, overlap=0.25, mode="gaussian")
        t = time.perf_counter()
        prob = sliding_window_inference(x, (64, 64, 64), 2, predictor, overlap=0.25, mode="gaussian",
                                        padding_mode="replicate")
        dt = time.perf_counter() - t
    arg = prob[0, :, 8:-8].argmax(0).numpy().astype(np.uint8)
else:
    from mineral3d.nn.infer import InferConfig, predict_probabilities
    cfg = InferConfig(tile=(64, 64, 64), overlap=0.25, sw_batch_size=2, tta="none")  # one pass, as MONAI
    predict_probabilities(net, image[:64, :64, :64], config=cfg)
    t = time.perf_counter()
    prob = predict_probabilities(net, image, config=cfg)
    dt = time.perf_counter() - t
    arg = prob.argmax(0).astype(np.uint8)
np.save(out, arg)
print(json.dumps({"mode": mode, "seconds": dt, "mvox_s": image.size / dt / 1e6}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sample")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    runs = {"reference": [], "reference-tuned": [], "mineral3d": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for mode in runs:
                out = Path(tmp) / f"{mode}.npy"
                p = subprocess.run([sys.executable, "-c", CHILD, mode, args.model, args.sample, str(out)],
                                   capture_output=True, text=True, check=True)
                runs[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))
                print(runs[mode][-1], flush=True)
        agree = float(np.mean(np.load(Path(tmp) / "reference.npy") == np.load(Path(tmp) / "mineral3d.npy")))
        agree_tuned = float(np.mean(np.load(Path(tmp) / "reference-tuned.npy") == np.load(Path(tmp) / "mineral3d.npy")))
    ref, tuned, ours = (np.median([x["mvox_s"] for x in runs[m]])
                        for m in ("reference", "reference-tuned", "mineral3d"))
    print(f"\n| inference | Mvox/s (median of {args.repeats}) | ratio to plain | ratio to tuned |\n|---|---|---|---|\n"
          f"| MONAI sliding_window_inference, fp32, default process (what a user writes) | {ref:.2f} | 1.00 | |\n"
          f"| MONAI sliding_window_inference, bf16 autocast + channels-last + allocator (like against like) | "
          f"{tuned:.2f} | {tuned / ref:.2f} | 1.00 |\n"
          f"| mineral3d predict_probabilities | {ours:.2f} | {ours / ref:.2f} | {ours / tuned:.2f} |\n\n"
          f"argmax unchanged on {100 * agree:.2f}% of voxels (plain fp32 reference), {100 * agree_tuned:.2f}% "
          "(tuned reference)")


if __name__ == "__main__":
    main()
