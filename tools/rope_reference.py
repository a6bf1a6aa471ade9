#!/usr/bin/python3
"""Writes tests/data/rope_reference.json: RoPE inverse frequencies and attention factors of each
scaling scheme, computed in torch the way Hugging Face transformers' rope init functions define
them (default, linear, dynamic, yarn, llama3), for rope_test.cpp to compare against.

Run with Debian's python3-torch (`/usr/bin/python3 tools/rope_reference.py`); the test itself
needs only the JSON. The formulas follow the published definitions: float32 frequencies from
base ** (arange(0, dim, 2) / dim), then each scheme's change.
"""
import json
import math
import os

import torch


def plain_inv_freq(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def linear(base, dim, sc, max_pos, seq_len):
    return plain_inv_freq(base, dim) / sc["factor"], 1.0


def dynamic(base, dim, sc, max_pos, seq_len):
    # The base grows once the sequence is longer than the trained context.
    factor = sc["factor"]
    seq_len = seq_len if seq_len > max_pos else max_pos
    base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return plain_inv_freq(base, dim), 1.0


def yarn_mscale(scale, m=1.0):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def yarn(base, dim, sc, max_pos, seq_len):
    factor = sc["factor"]
    orig = sc.get("original_max_position_embeddings") or max_pos
    attn = sc.get("attention_factor")
    if attn is None:
        if sc.get("mscale") and sc.get("mscale_all_dim"):
            attn = yarn_mscale(factor, sc["mscale"]) / yarn_mscale(factor, sc["mscale_all_dim"])
        else:
            attn = yarn_mscale(factor)
    beta_fast = sc.get("beta_fast") or 32
    beta_slow = sc.get("beta_slow") or 1

    def corr_dim(rotations):
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if sc.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolated, interpolated = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # share of the trained frequency per pair
    return interpolated * (1 - keep) + extrapolated * keep, attn


def llama3(base, dim, sc, max_pos, seq_len):
    inv = plain_inv_freq(base, dim)
    factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
    orig = sc["original_max_position_embeddings"]
    lo_wavelen, hi_wavelen = orig / lo, orig / hi
    wavelen = 2 * math.pi / inv
    out = torch.where(wavelen > lo_wavelen, inv / factor, inv)
    smooth = (orig / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < hi_wavelen) * ~(wavelen > lo_wavelen)
    return torch.where(medium, smoothed, out), 1.0


SCHEMES = {"linear": linear, "dynamic": dynamic, "yarn": yarn, "llama3": llama3}

CASES = [
    ("default", 64, 10000.0, 2048, 2048, None),
    ("linear_x4", 64, 10000.0, 2048, 8192, {"type": "linear", "factor": 4.0}),
    ("linear_x1", 128, 10000.0, 2048, 2048, {"rope_type": "linear", "factor": 1.0}),
    ("dynamic_x2_at_8192", 64, 10000.0, 2048, 8192, {"type": "dynamic", "factor": 2.0}),
    ("dynamic_x2_within_trained", 64, 10000.0, 2048, 1024, {"type": "dynamic", "factor": 2.0}),
    ("yarn_x4", 128, 10000.0, 8192, 8192,
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048}),
    ("yarn_x16_llama2", 128, 10000.0, 4096, 65536, {"type": "yarn", "factor": 16.0, "finetuned": True}),
    ("yarn_betas_mscale_untruncated", 64, 500000.0, 32768, 32768,
     {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096, "beta_fast": 16.0,
      "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False}),
    ("yarn_attention_factor", 64, 10000.0, 2048, 4096,
     {"rope_type": "yarn", "factor": 2.0, "attention_factor": 1.25}),
    ("llama3_x8", 128, 500000.0, 131072, 131072,
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}),
    ("llama3_x32", 64, 500000.0, 131072, 16384,
     {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}),
]

# Positions at which cos and sin are checked: angle in float64 from the float32 frequency (as
# ops/rope.cpp does), times the attention factor.
POSITIONS = [1, 777, 4000]


def main():
    out = []
    for name, dim, theta, max_pos, seq_len, sc in CASES:
        if sc is None:
            inv, attn = plain_inv_freq(theta, dim), 1.0
        else:
            kind = sc.get("rope_type", sc.get("type"))
            inv, attn = SCHEMES[kind](theta, dim, sc, max_pos, seq_len)
        inv = inv.to(torch.float32)
        angles = torch.tensor(POSITIONS, dtype=torch.float64)[:, None] * inv.to(torch.float64)[None, :]
        out.append({
            "name": name, "head_dim": dim, "rope_theta": theta, "max_position_embeddings": max_pos,
            "seq_len": seq_len, "rope_scaling": sc, "inv_freq": [float(x) for x in inv],
            "attention_factor": float(attn), "positions": POSITIONS,
            "cos": [[float(x) for x in row] for row in (angles.cos() * attn)],
            "sin": [[float(x) for x in row] for row in (angles.sin() * attn)],
        })
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "rope_reference.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"generator": "tools/rope_reference.py, torch " + torch.__version__, "cases": out}, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print("wrote", os.path.normpath(path), len(out), "cases")


if __name__ == "__main__":
    main()
