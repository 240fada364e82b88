"""Time each solver spends outside network evaluations, as a fraction of its total sampling time.

On the small UNet (models.unet.UNet defaults, random weights, float32) with a batch of 8x8x1
images, every solver variant of benchmarks.ode_solvers samples at NFE 10 (or the nearest NFE
it allows, reported). The network is wrapped so that each forward call is timed; the overhead is
(total - time inside the network) / total. A second estimate, 1 - NFE x (median single forward)
/ total, is measured in the same run. Target: overhead < 3%.

    python -m benchmarks.sampler_overhead [--batch 256] [--nfe 10] [--repeats 2] [--device cpu] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from framework.diffusion import Denoiser, DiscreteVPSchedule
from framework.io import markdown_table, write_table

from .ode_solvers import VARIANTS, Variant, build_variants, selected

DEFAULT_OUT = "benchmarks/results/sampler_overhead"
TARGET = 0.03


class TimedNetwork:
    """Wrap a network: every call is timed (wall clock) and counted."""

    def __init__(self, network):
        self.network, self.seconds, self.calls = network, 0.0, 0

    def __call__(self, x, t, *labels):
        _sync(x)
        start = time.perf_counter()
        out = self.network(x, t, *labels)
        _sync(out)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def make_network(seed: int = 0) -> torch.nn.Module:
    """The default small UNet with random weights; the zero-initialised output layer is randomised too."""
    from models.unet import UNet

    torch.manual_seed(seed)
    net = UNet()
    for p in net.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return net.eval()


def nearest_nfe(sampler, nfe: int, span: int = 4) -> Optional[int]:
    """`nfe` if the sampler allows it, else the closest allowed NFE within `span` (ties: the larger)."""
    candidates = (c for d in range(span + 1) for c in (nfe + d, nfe - d))
    return next((c for c in candidates if sampler.allows_nfe(c)), None)


@torch.no_grad()
def single_forward_seconds(net, x: torch.Tensor, repeats: int) -> float:
    t = torch.full((x.shape[0],), 0.5, device=x.device)
    times = []
    for _ in range(repeats):
        _sync(x)
        start = time.perf_counter()
        _sync(net(x, t))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def time_sampler(sampler, timed: TimedNetwork, x_T: torch.Tensor, nfe: int, schedule) -> tuple[float, float, int]:
    """One sampling run: (total seconds, seconds inside the network, network calls)."""
    timed.reset()
    _sync(x_T)
    start = time.perf_counter()
    _sync(sampler.sample(Denoiser(timed, schedule), x_T, nfe, schedule))
    return time.perf_counter() - start, timed.seconds, timed.calls


def measure(variants: Sequence[Variant], batch: int = 256, nfe: int = 10, repeats: int = 2, seed: int = 0,
            device: str = "cpu") -> list[dict]:
    """Overhead rows for every buildable variant (median over `repeats` runs; one DDIM warm-up run first)."""
    schedule = DiscreteVPSchedule.linear()
    net = make_network(seed).to(device)
    timed = TimedNetwork(net)
    x_T = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).to(device)
    built, _ = build_variants(variants)
    time_sampler(build_variants([Variant("ddim", "ddim")])[0][0][1], timed, x_T, 2, schedule)  # warm-up
    forward = single_forward_seconds(net, x_T, 5)
    rows = []
    for variant, sampler in built:
        used = nearest_nfe(sampler, nfe)
        if used is None:
            continue
        runs = [time_sampler(sampler, timed, x_T, used, schedule) for _ in range(repeats)]
        total = statistics.median(r[0] for r in runs)
        inside = statistics.median(r[1] for r in runs)
        rows.append(dict(solver=variant.label, nfe=used, calls=runs[0][2], total_ms=1e3 * total,
                         network_ms=1e3 * inside, overhead_ms=1e3 * (total - inside),
                         overhead=(total - inside) / total, overhead_vs_single=1.0 - used * forward / total))
    for r in rows:
        r["single_forward_ms"] = 1e3 * forward
        r["below_target"] = "yes" if r["overhead"] < TARGET else "NO"
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 gives the steadiest timings)")
    p.add_argument("--only", nargs="+", default=None, help="only variants whose label contains one of these strings")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    variants = [v for v in VARIANTS if selected(v.label, a.only)]
    rows = measure(variants, a.batch, a.nfe, a.repeats, device=a.device)
    write_table(rows, a.out / "overhead.csv", a.out / "overhead.md")
    print(f"batch {a.batch}, threads {a.threads}, device {a.device}, UNet defaults, float32, median of {a.repeats} runs\n")
    print(markdown_table(rows), end="")
    print(f"\nresults in {a.out}")


if __name__ == "__main__":
    main()
