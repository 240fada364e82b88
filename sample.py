"""Sample from a trained checkpoint: `python sample.py --ckpt runs/digits/checkpoints/last.ckpt --sampler deis --nfe 10`.

Sampler options come as repeated `--option key=value` (values parsed as YAML: 3, 0.5, true, logsnr).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_options(items) -> dict:
    import yaml  # ships with omegaconf

    options = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--option {item!r} must look like key=value")
        key, value = item.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    return options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, action="append",
                   help="checkpoint written by train.py; give it twice for a product of two models "
                        "(--sampler fkc --option target=product)")
    p.add_argument("--sampler", default=None,
                   help="sampler name (see --list); required unless --calibrate-dc or --search-solver alone")
    p.add_argument("--nfe", type=int, default=None, help="number of network evaluations")
    p.add_argument("--option", action="append", default=[], help="sampler option key=value (repeatable)")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="sample i uses a generator seeded by (seed, i)")
    p.add_argument("--out", default="samples", help="output directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--label", type=int, default=None, help="class label (class-conditional models)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance scale (with --sampler fkc --option target=cfg: the exponent w of "
                        "q_u^(1-w) q_c^w)")
    p.add_argument("--evaluate", action="store_true",
                   help="also compute the evaluation metrics (table, plot) under <out>/eval/cli; "
                        "with --sampler config: every sampler and NFE of the checkpoint's evaluation section")
    p.add_argument("--calibrate-dc", action="store_true",
                   help="first search DC-Solver's ratios (the checkpoint's evaluation.dc_calibration) and write "
                        "dc_ratios.json / dc_cpr.json next to the checkpoint")
    p.add_argument("--search-solver", action="store_true",
                   help="S3-search a USF solver schedule at --nfe for this checkpoint (settings: evaluation.solver_search) "
                        "and save it next to it as usf_s3_nfe<k>.json; sample with --sampler usf --option schedule=<path>")
    p.add_argument("--budget", type=int, default=None,
                   help="with --search-solver: true evaluations (default: evaluation.solver_search.budget)")
    return p


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--list" in argv:
        from framework.samplers import FAMILIES, available_samplers

        for family in FAMILIES:
            print(f"{family}: {', '.join(available_samplers(family))}")
        return 0
    args = build_parser().parse_args(argv)
    try:
        if args.sampler is None and not (args.calibrate_dc or args.search_solver):
            raise ValueError("--sampler is required (unless --calibrate-dc or --search-solver alone)")
        args.options = parse_options(args.option)
        if args.sampler is not None and args.search_solver:
            raise ValueError("--search-solver searches a schedule; give it without --sampler")
        if args.budget is not None and (args.budget <= 0 or not args.search_solver):
            raise ValueError("--budget must be a positive integer and goes with --search-solver")
        if args.nfe is not None and args.nfe <= 0:
            raise ValueError(f"--nfe must be a positive integer, got {args.nfe}")
        if args.num_samples <= 0 or args.batch_size <= 0:
            raise ValueError("--num-samples and --batch-size must be positive")
        from framework.experiments import load_checkpoint

        args.ckpt, more = args.ckpt[0], args.ckpt[1:]
        experiment, module = load_checkpoint(args.ckpt)
        args.expert_paths, args.experts = more, [load_checkpoint(path)[1].eval() for path in more]
        module.eval()
        experiment.sample(args, module)
        return 0
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
