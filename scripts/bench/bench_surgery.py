"""Benchmark one full training step with gradient surgery against an ERM step on the same batches.

Model: torchvision resnet18 (random init, 4 classes), H hospitals x B images at S px, on CPU (and CUDA
when available). Every timed step does forward, gradients, combine, write ``.grad``, SGD step.

  erm            plain ERM: ONE forward over the concatenated batch (BatchNorm statistics mixed across
                 hospitals), ``loss.backward()``; what a user runs without surgery;
  erm_per_hosp   ERM with the surgery's forward: one forward per hospital (per-hospital BN statistics),
                 one backward of the summed losses; the like-for-like baseline;
  <rule>         ``per_hospital_gradients`` + ``combine_parameters(rule)`` + ``assign_gradients``;
  naive          the naive loop (per hospital: forward, ``backward()``, clone ``.grad``) + agr_sum;
  vmap           torch.func ``vmap(grad_and_value(...))`` over hospitals (per-hospital BN) + agr_sum;
  concat_retain  one forward over the concatenated batch (MIXED BN), ``autograd.grad`` per hospital
                 with ``retain_graph=True`` + agr_sum (different BN semantics: reference only);
  concat_vmapped the same forward, all hospitals' backward passes at once with ``is_grads_batched``.

Steps are interleaved round-robin (each round runs every step once) so that load from other processes
hits all of them alike. The table gives, over the rounds after warm-up, the median and the minimum wall
time per step (the minimum is the least-disturbed run: on a shared machine a descheduled OpenMP thread
can stall a whole step), their ratios to ``erm`` and ``erm_per_hosp``, and the median CPU time
(``time.process_time``: CPU seconds of this process, all threads). ``combine s`` is the rule alone on
resnet18-sized gradients (minimum of 5 repeats).

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during a step minus the memory allocated before it
(model, optimiser state, data). On CPU, peak resident memory (VmHWM, Linux) minus resident memory after
set-up, in a FRESH process per step kind, over 3 steps: the extra host memory that step needs at its
peak (activations, per-hospital gradients, temporaries; the model and data are excluded).

Ends with one line holding a JSON object of all figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from medseg_weak.classify.surgery import (
    RULES,
    assign_gradients,
    combine_parameters,
    per_hospital_gradients,
)

REFERENCE_STEPS = ["naive", "vmap", "concat_retain", "concat_vmapped"]


def build(args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    if args.channels != 3:
        model.conv1 = nn.Conv2d(args.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [
        (
            torch.randn(args.batch, args.channels, args.size, args.size, device=device),
            torch.randint(0, 4, (args.batch,), device=device),
        )
        for _ in range(args.hospitals)
    ]
    return model, opt, gen, batches


def make_steps(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, batches, rules: list[str]):
    loss_fn = nn.functional.cross_entropy
    params = [p for p in model.parameters() if p.requires_grad]
    hospitals = len(batches)
    x_all = torch.cat([x for x, _ in batches])
    y_all = torch.cat([y for _, y in batches])
    agr_sum = RULES.get("agr_sum")()

    def erm() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x_all), y_all).backward()
        opt.step()

    def erm_per_hosp() -> None:
        opt.zero_grad(set_to_none=True)
        sum(loss_fn(model(x), y) for x, y in batches).backward()
        opt.step()

    def surgery(name: str) -> Callable[[], None]:
        rule = RULES.get(name)()  # one instance per run: group_dro keeps its weights across steps

        def step() -> None:
            grads, losses = per_hospital_gradients(model, loss_fn, batches)
            assign_gradients(params, rule(grads, generator=gen, losses=losses))
            opt.step()

        return step

    def write(grads: list[Tensor]) -> None:
        assign_gradients(params, agr_sum(grads))
        opt.step()

    def naive() -> None:
        per_hospital = []
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            per_hospital.append([p.grad.clone() for p in params])
        write([torch.stack(g) for g in zip(*per_hospital)])

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    x_stacked, y_stacked = torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])

    def loss_of(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(model, (p, b), (x,)), y)

    def vmap_step() -> None:
        # Buffers get a hospital dimension so each hospital updates its own BN running statistics
        # inside vmap; their mean is written back (one update with the hospitals' mean statistics).
        buffers = {n: b.unsqueeze(0).repeat(hospitals, *[1] * b.dim()) for n, b in model.named_buffers()}
        detached = {n: p.detach() for n, p in model.named_parameters()}
        g, _ = vmap(grad_and_value(loss_of), in_dims=(None, 0, 0, 0), randomness="different")(
            detached, buffers, x_stacked, y_stacked
        )
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n][0] if not b.is_floating_point() else buffers[n].mean(0))
        write([g[n] for n in names])

    def concat_losses() -> list[Tensor]:
        logits = model(x_all).split([len(y) for _, y in batches])
        return [loss_fn(o, y) for o, (_, y) in zip(logits, batches)]

    def concat_retain() -> None:
        losses = concat_losses()
        per_hospital = [
            torch.autograd.grad(loss, params, retain_graph=h < hospitals - 1) for h, loss in enumerate(losses)
        ]
        write([torch.stack(g) for g in zip(*per_hospital)])

    def concat_vmapped() -> None:
        losses = torch.stack(concat_losses())
        eye = torch.eye(hospitals, device=losses.device, dtype=losses.dtype)
        write(list(torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True)))

    steps: dict[str, Callable[[], None]] = {"erm": erm, "erm_per_hosp": erm_per_hosp}
    steps.update({name: surgery(name) for name in rules})
    steps.update(
        {"naive": naive, "vmap": vmap_step, "concat_retain": concat_retain, "concat_vmapped": concat_vmapped}
    )
    return steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(steps: dict[str, Callable[[], None]], device: torch.device, rounds: int, warmup: int):
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    peak: dict[str, float] = {}
    failed: dict[str, str] = {}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            if name in failed:
                continue
            if device.type == "cuda":
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                step()
            except RuntimeError as err:  # e.g. an op without a vmap rule: report it, time the rest
                failed[name] = str(err).splitlines()[0][:200]
                continue
            sync(device)
            t1, c1 = time.perf_counter(), time.process_time()
            if r >= warmup:
                wall[name].append(t1 - t0)
                cpu[name].append(c1 - c0)
            if device.type == "cuda":
                mib = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                peak[name] = max(peak.get(name, 0.0), mib)
    return wall, cpu, peak, failed


def time_combine(
    model, batches, rules: list[str], device: torch.device, repeats: int = 5
) -> dict[str, float]:
    grads, losses = per_hospital_gradients(model, nn.functional.cross_entropy, batches)
    gen = torch.Generator(device=device).manual_seed(0)
    out = {}
    for name in rules:
        rule = RULES.get(name)()
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            combine_parameters(rule, grads, gen, losses)
            sync(device)
            times.append(time.perf_counter() - t0)
        out[name] = min(times)  # the least-disturbed repeat: this loop is not interleaved with others
    return out


def _status_kib(field: str) -> float:
    """A memory figure (KiB) of this process from /proc/self/status (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise KeyError(field)


def probe_cpu_memory(args: argparse.Namespace) -> None:
    """Child-process mode: print the peak-RSS growth (MiB) of 3 steps of one kind over set-up.

    VmHWM (peak RSS) is reset by execve, unlike ``ru_maxrss``, which a child inherits from its parent
    through fork + exec on Linux (it would report the parent's larger peak).
    """
    torch.set_num_threads(args.threads)
    model, opt, gen, batches = build(args, torch.device("cpu"))
    steps = make_steps(model, opt, gen, batches, [args.probe] if args.probe in RULES else [])
    base = _status_kib("VmRSS")
    try:
        for _ in range(3):
            steps[args.probe]()
    except RuntimeError:
        print("nan")
        return
    print((_status_kib("VmHWM") - base) / 1024)


def cpu_memory(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        cmd = [sys.executable, __file__, "--probe", name, "--threads", str(args.threads)]
        cmd += ["--hospitals", str(args.hospitals), "--batch", str(args.batch)]
        cmd += ["--size", str(args.size), "--channels", str(args.channels)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = float(result.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="images per hospital")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--steps", type=int, default=10, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rules", default=",".join(RULES.names()), help="comma-separated rule names")
    parser.add_argument("--devices", default="cpu,cuda", help="those unavailable are skipped")
    parser.add_argument("--no-references", action="store_true", help="skip naive/vmap/concat_* steps")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory probes")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe_cpu_memory(args)
        return

    torch.set_num_threads(args.threads)
    rules = [r for r in args.rules.split(",") if r]
    for r in rules:
        RULES.get(r)  # fail fast, with the registry's list of names
    devices = [
        d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())
    ]
    report: dict = {
        "config": {k: v for k, v in vars(args).items() if k != "probe"},
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "memory_metric": {
            "cpu": "peak RSS growth over set-up, fresh process, 3 steps (MiB)",
            "cuda": "max_memory_allocated during a step minus allocated before it (MiB)",
        },
        "devices": {},
    }
    for name in ("cpu", "cuda"):
        if name not in devices:
            continue
        device = torch.device(name)
        model, opt, gen, batches = build(args, device)
        steps = make_steps(model, opt, gen, batches, rules)
        if args.no_references:
            steps = {k: v for k, v in steps.items() if k not in REFERENCE_STEPS}
        label = torch.cuda.get_device_name(device) if name == "cuda" else f"cpu, {args.threads} threads"
        print(f"\n== {label}: resnet18, {args.hospitals} hospitals x {args.batch} images, {args.size} px ==")
        wall, cpu, peak, failed = time_steps(steps, device, args.steps, args.warmup)
        combine_s = time_combine(model, batches, rules, device)
        if name == "cpu" and not args.no_memory:
            peak = cpu_memory(args, [k for k in steps if k not in failed])
        med = {k: statistics.median(v) for k, v in wall.items() if v}
        best = {k: min(v) for k, v in wall.items() if v}
        cpu_med = {k: statistics.median(v) for k, v in cpu.items() if v}
        rows = {}
        print(
            f"{'step':15s} {'median s':>8s} {'x erm':>6s} {'x erm_ph':>8s} {'min s':>7s} {'x erm':>6s} "
            f"{'x erm_ph':>8s} {'cpu s':>7s} {'combine s':>9s} {'peak MiB':>8s}"
        )
        for k in steps:
            if k in failed:
                print(f"{k:15s} failed: {failed[k]}")
                rows[k] = {"error": failed[k]}
                continue
            rows[k] = {
                "median_s": round(med[k], 4),
                "ratio_erm": round(med[k] / med["erm"], 3),
                "ratio_erm_per_hosp": round(med[k] / med["erm_per_hosp"], 3),
                "min_s": round(best[k], 4),
                "min_ratio_erm": round(best[k] / best["erm"], 3),
                "min_ratio_erm_per_hosp": round(best[k] / best["erm_per_hosp"], 3),
                "cpu_s": round(cpu_med[k], 4),
                "combine_s": round(combine_s[k], 4) if k in combine_s else None,
                "peak_mib": round(peak[k], 1) if k in peak else None,
            }
            r = rows[k]
            comb = f"{combine_s[k]:9.3f}" if k in combine_s else f"{'':9s}"
            mem = f"{peak[k]:8.0f}" if k in peak else f"{'':8s}"
            print(
                f"{k:15s} {med[k]:8.3f} {r['ratio_erm']:6.2f} {r['ratio_erm_per_hosp']:8.2f} {best[k]:7.3f} "
                f"{r['min_ratio_erm']:6.2f} {r['min_ratio_erm_per_hosp']:8.2f} {cpu_med[k]:7.3f} {comb} {mem}"
            )
        report["devices"][name] = {"label": label, "steps": rows}
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
