"""Inference throughput: mineral3d's tiled inference vs a plain fp32 MONAI call a user would write.

Run: .venv/bin/python benchmarks/bench_infer.py MODEL SAMPLE [--repeats 2]

Both run in fresh Python processes, interleaved (reference, ours, reference, ours, ...),
on the sample's whole CT normalised the same way, with the same network and weights,
64³ windows, overlap 0.25, Gaussian blending, 2 windows per batch, the same 8 mirrored
slices above and below (``InferConfig.z_pad``):

- reference: ``torch.no_grad()`` + ``monai.inferers.sliding_window_inference`` in fp32,
  default allocator and threads (what a user would write);
- mineral3d: ``mineral3d.nn.infer.predict_probabilities`` (glibc allocator thresholds
  raised, bf16 autocast where the CPU has it, channels-last, ``inference_mode``).

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
else:
    from mineral3d.nn.infer import InferConfig, predict_probabilities
    cfg = InferConfig(tile=(64, 64, 64), overlap=0.25, sw_batch_size=2)
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
    runs = {"reference": [], "mineral3d": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for mode in ("reference", "mineral3d"):
                out = Path(tmp) / f"{mode}.npy"
                p = subprocess.run([sys.executable, "-c", CHILD, mode, args.model, args.sample, str(out)],
                                   capture_output=True, text=True, check=True)
                runs[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))
                print(runs[mode][-1], flush=True)
        agree = float(np.mean(np.load(Path(tmp) / "reference.npy") == np.load(Path(tmp) / "mineral3d.npy")))
    ref = np.median([x["mvox_s"] for x in runs["reference"]])
    ours = np.median([x["mvox_s"] for x in runs["mineral3d"]])
    print(f"\n| inference | Mvox/s (median of {args.repeats}) | ratio |\n|---|---|---|\n"
          f"| MONAI sliding_window_inference, fp32, default process | {ref:.2f} | 1.00 |\n"
          f"| mineral3d predict_probabilities | {ours:.2f} | {ours / ref:.2f} |\n\n"
          f"argmax unchanged on {100 * agree:.2f}% of voxels")


if __name__ == "__main__":
    main()
