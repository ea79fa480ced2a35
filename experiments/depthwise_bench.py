"""CPU micro-benchmark of TAU's depthwise convolutions: XLA grouped conv, shift-and-sum taps and the
C++ kernel (`cpu_kernels`).

Shapes are those of the Moving MNIST TAU translator at batch 16 (latent 16x16): the statical
attention's 5x5 and 7x7-dilation-3 depthwise convs at widths 640 and 512, and the MixMlp's 3x3
depthwise conv at 5120 and 4096. Forward and forward+backward, jitted, median of repeats.

    python experiments/depthwise_bench.py [--batch 16] [--repeats 5] [--impls lax,taps,kernel]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from common import write_result
from tau_jax.models import cpu_kernels
from tau_jax.models.layers import depthwise_conv_lax, depthwise_conv_taps

CASES = [  # (name, channels, kernel, dilation, padding)
    ("sa_dw5x5_c640", 640, 5, 1, 2),
    ("sa_dw7x7d3_c640", 640, 7, 3, 9),
    ("sa_dw5x5_c512", 512, 5, 1, 2),
    ("sa_dw7x7d3_c512", 512, 7, 3, 9),
    ("mlp_dw3x3_c5120", 5120, 3, 1, 1),
    ("mlp_dw3x3_c4096", 4096, 3, 1, 1),
]
IMPLS = {"lax": depthwise_conv_lax, "taps": depthwise_conv_taps,
         "kernel": cpu_kernels.depthwise_conv}


def median_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="latent height = width")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--impls", default="lax,taps,kernel",
                        help="comma-separated subset of " + ",".join(IMPLS))
    args = parser.parse_args()
    impls = args.impls.split(",")
    if set(impls) - set(IMPLS):
        raise SystemExit(f"--impls: unknown {sorted(set(impls) - set(IMPLS))}; known {list(IMPLS)}")
    if "kernel" in impls and not cpu_kernels.available():
        raise SystemExit("the C++ kernel could not be built here (see the warning); leave it out "
                         "of --impls")

    rows = []
    for name, c, k, dilation, pad in CASES:
        x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, c))
        w = jax.random.normal(jax.random.key(1), (k, k, 1, c)) * 0.1
        row = {"case": name, "shape": [args.batch, args.size, args.size, c], "kernel": k,
               "dilation": dilation}
        for impl in impls:
            conv = IMPLS[impl]
            fwd = jax.jit(lambda x, w, conv=conv, d=dilation, p=pad: conv(x, w, d, p))
            loss = lambda x, w, conv=conv, d=dilation, p=pad: jnp.sum(conv(x, w, d, p) ** 2)
            bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
            row[f"{impl}_fwd_ms"] = median_ms(fwd, x, w, repeats=args.repeats)
            row[f"{impl}_fwd_bwd_ms"] = median_ms(bwd, x, w, repeats=args.repeats)
        rows.append(row)
        print(f"{name:18s} " + "   ".join(
            f"{impl} {row[f'{impl}_fwd_ms']:8.1f} / {row[f'{impl}_fwd_bwd_ms']:8.1f} ms"
            for impl in impls) + "   (fwd / fwd+bwd)", flush=True)
    path = write_result(f"depthwise_{jax.default_backend()}_{'_'.join(impls)}",
                        {"batch": args.batch, "repeats": args.repeats, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
