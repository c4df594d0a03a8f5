"""Measure the benchmark modes of `synth mammo` on generated data: shared-cue signs and reader-noise kappa.

Side by side in one run:
  * shared cue mode: per hospital, the configured sign and the measured correlation (phi) between the
    cue flag and a dense (C/D) label, at strength ``--cue``;
  * reader noise: for each target kappa, the kappa reached by the solved flip probability, next to
    the naive guess p = 1 - kappa (the same per-patient draws, misread with u < p, no solving);
  * time to generate vs time to solve the noise.
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from medseg_weak.data.manifest import DENSITY_LABELS
from medseg_weak.data.synthetic.cue import resolve_cue_signs
from medseg_weak.data.synthetic.mammo import generate_mammo, hospital_name, mammo_truths
from medseg_weak.data.synthetic.reader_noise import (
    add_reader_noise,
    measure_reader_noise,
    misread_class,
    reader_draws,
)


def naive_kappa(records: list, kappa: float, seed: int) -> float:
    """Misread the patients with rank u < 1 - kappa (the same draws as the solver, p not solved)."""
    noisy = []
    for r in records:
        rank, direction = reader_draws(seed, r.patient_id)
        index = DENSITY_LABELS.index(r.label)
        moved = misread_class(index, direction, len(DENSITY_LABELS)) if rank < 1.0 - kappa else index
        noisy.append(replace(r, label=DENSITY_LABELS[moved], label_true=r.label))
    return measure_reader_noise(noisy)["kappa"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-hospital", type=int, default=64)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--cue", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        records = generate_mammo(
            Path(tmp),
            args.n_per_hospital,
            hospitals=args.hospitals,
            seed=args.seed,
            spurious_cue=args.cue,
            height=args.height,
            cue_mode="shared",
        )
        generate_s = time.perf_counter() - start
        truths = mammo_truths(Path(tmp), records)

    signs = resolve_cue_signs({}, args.hospitals, "shared")
    cue_rows = []
    for index, sign in enumerate(signs):
        domain = hospital_name(index)
        dense = np.array([r.label in ("C", "D") for r in records if r.domain == domain], dtype=float)
        cue = np.array([truths[r.id].cue for r in records if r.domain == domain], dtype=float)
        phi = float(np.corrcoef(dense, cue)[0, 1])
        cue_rows.append({"hospital": domain, "sign": sign, "phi": round(phi, 3), "images": len(dense)})
        print(f"{domain}: sign {sign:+d}  phi(cue, dense) = {phi:+.3f}  ({len(dense)} images)")

    noise_rows = []
    for target in (0.95, 0.9, 0.8, 0.7, 0.6):
        start = time.perf_counter()
        noisy = add_reader_noise(records, target, seed=args.seed)
        solve_s = time.perf_counter() - start
        reached = measure_reader_noise(noisy)
        naive = naive_kappa(records, target, args.seed)
        noise_rows.append(
            {
                "target": target,
                "kappa": reached["kappa"],
                "flip_probability": reached["flip_probability"],
                "naive_kappa": round(naive, 6),
                "solve_s": round(solve_s, 4),
            }
        )
        print(
            f"target {target:.2f}: solved kappa {reached['kappa']:.3f}"
            f" (p = {reached['flip_probability']:.3f}, {solve_s * 1e3:.0f} ms)"
            f"  naive p = 1 - kappa: {naive:.3f}"
        )
    worst = max(abs(r["kappa"] - r["target"]) for r in noise_rows)
    worst_naive = max(abs(r["naive_kappa"] - r["target"]) for r in noise_rows)
    print(
        f"largest |kappa - target|: solved {worst:.3f}, naive {worst_naive:.3f} ({worst_naive / worst:.0f}x)"
    )
    print(
        f"generate {generate_s:.1f} s for {len(records)} images; solving takes "
        f"{max(r['solve_s'] for r in noise_rows) / generate_s:.4f} of that"
    )
    print(
        json.dumps(
            {
                "args": vars(args),
                "images": len(records),
                "generate_s": round(generate_s, 2),
                "cue": cue_rows,
                "noise": noise_rows,
                "max_abs_error": round(worst, 4),
                "max_abs_error_naive": round(worst_naive, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
