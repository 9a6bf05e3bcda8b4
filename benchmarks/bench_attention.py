"""Attention speed and memory: fast paths against their plain-einsum references, SA against HFA and
HA, on the CPU or a CUDA device.

    python benchmarks/bench_attention.py                      # CPU suite (a few minutes, one thread)
    python benchmarks/bench_attention.py --quick              # small sizes, seconds (a smoke test)
    python benchmarks/bench_attention.py --device cuda --out /tmp/attention_cuda.json   # GPU suite, < 90 s
    python benchmarks/bench_attention.py --merge /tmp/attention_cuda.json   # file a GPU run beside the CPU's

Results live in benchmarks/results/attention.json under a device key ("cpu", "cuda"); every run
rewrites benchmarks/README_attention.md from all keys present. CPU suite:
  1. linear HA (n = 3): O(L d_h^2) reordering vs the O(L^3 d_h) reference;
  2. exact softmax HA (n = 3): query-chunked vs naive all-L^3 scores, time and peak memory;
  3. softmax SA (torch SDPA and einsum reference) vs softmax HFA at matched W_Q/W_K/W_V;
  4. feature-map softmax HA (positive random features, degree-2 Taylor) vs exact;
  5. acceptance: HFA A = 2 at L = 4096 against SA, time and peak memory, forward and backward;
  6. LM training steps at context 128 (SA, HFA, exact HA, Taylor HA) and Taylor's output error.
GPU suite (`--suite gpu`, the default on cuda; runs on the CPU at --quick sizes for tests): SA module,
torch SDPA and HFA at L = 1024 and 4096; exact and Taylor softmax HA; LM steps at the gpu preset, fp32
and bf16 autocast. CPU peak memory is the largest total of tensor bytes alive during the call, from
torch.profiler's allocation events; CUDA's is max_memory_allocated above what was allocated before.
CPU times are the calling thread's CPU time (one torch thread), which a shared machine's other jobs
do not inflate; CUDA times are wall clock between synchronisations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch.nn.functional as F  # noqa: E402

from policies import HyperAttention, HyperFeatureAttention, SelfAttention  # noqa: E402
from policies.ha import (  # noqa: E402
    feature_matrices,
    ha_chunk,
    linear_ha,
    linear_ha_reference,
    softmax_ha,
    softmax_ha_features,
    softmax_ha_reference,
    softmax_ha_taylor,
    softmax_ha_values,
)
from policies.hfa import block_sizes, softmax_hfa, triton_kernels  # noqa: E402
from policies.lm import LM, LMConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAIVE_LIMIT = 4 * 2**30  # bytes: naive softmax HA runs only while its L^3 scores stay well below this


DEVICE = torch.device("cpu")  # set by main(); the helpers below time and measure on it


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _clock() -> float:
    """CPU: this thread's CPU time (one torch thread does all the work); CUDA: wall clock."""
    return time.perf_counter() if DEVICE.type == "cuda" or torch.get_num_threads() > 1 else time.thread_time()


def timed(fn, *args, reps: int = 3, warmup: bool = True) -> tuple[float, object]:
    """Median time in seconds of fn(*args) over `reps` calls (after one warm-up), and the last result."""
    if warmup:
        fn(*args)
    times = []
    for _ in range(reps):
        _sync()
        t = _clock()
        result = fn(*args)
        _sync()
        times.append(_clock() - t)
    return statistics.median(times), result


def interleaved(fns: dict, reps: int) -> dict:
    """Median seconds per call of each no-argument function, after one warm-up call each, taking
    turns (a, b, c, a, b, c, ...) so that a shared machine's load falls alike on all of them."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            _sync()
            t = _clock()
            fn()
            _sync()
            times[name].append(_clock() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_bytes(fn, *args) -> int:
    """Largest total of tensor bytes allocated during fn(*args) above what was live before it."""
    if DEVICE.type == "cuda":
        _sync()
        torch.cuda.reset_peak_memory_stats(DEVICE)
        base = torch.cuda.memory_allocated(DEVICE)
        fn(*args)
        _sync()
        return torch.cuda.max_memory_allocated(DEVICE) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*args)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        events = [e["args"] for e in json.load(open(path))["traceEvents"] if e.get("name") == "[memory]"]
    if not events:
        return 0
    base = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(e["Total Allocated"] for e in events) - base


def ha_inputs(L: int, B: int = 1, H: int = 1, d_h: int = 16, n: int = 3, scale: float = 1.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda s: torch.randn(B, H, L, d_h, generator=gen) * s  # noqa: E731
    q, ks, vs = rand(scale), [rand(scale) for _ in range(n - 1)], [rand(1.0) for _ in range(n - 1)]
    return q, ks, vs, torch.randn(H, d_h, d_h, generator=gen) / math.sqrt(d_h)


# ---------------------------------------------------------------- 1. linear HA


def chunked_reference(q, ks, vs, w, chunk: int):
    """linear_ha_reference over query chunks: (chunk, L, L) scores at a time (all at once, L = 1024 would
    need 4 GiB); chunking does not change its O(L^3 d_h) arithmetic."""
    B, H, L, _ = q.shape
    ok = torch.ones(B, L, L, dtype=torch.bool)
    parts = [
        linear_ha_reference(q[:, :, i : i + chunk], ks, vs, w, ok[:, i : i + chunk])[0]
        for i in range(0, L, chunk)
    ]
    return torch.cat(parts, 1)


def bench_linear_ha(lengths: list[int]) -> list[dict]:
    rows = []
    for L in lengths:
        q, ks, vs, w = ha_inputs(L)
        t_fast, fast = timed(linear_ha, q, ks, vs, w, False, reps=20)
        heavy = L >= 1024  # the reference takes tens of seconds there: one call, no warm-up
        t_ref, ref = timed(
            chunked_reference, q, ks, vs, w, max(1, 2**24 // L**2), reps=1 if heavy else 3, warmup=not heavy
        )
        rows.append(
            {
                "L": L,
                "fast_ms": t_fast * 1e3,
                "reference_ms": t_ref * 1e3,
                "speedup": t_ref / t_fast,
                "rel_diff": float((fast - ref).norm() / ref.norm()),
            }
        )
    return rows


# ---------------------------------------------------------------- 2. exact softmax HA


def bench_softmax_ha(lengths: list[int], chunk: int) -> list[dict]:
    rows = []
    for L in lengths:
        q, ks, vs, w = ha_inputs(L)
        allowed = torch.ones(1, L, L, dtype=torch.bool)
        row = {"L": L, "chunk": chunk}
        heavy = L >= 512
        args = (q, ks, vs, w, None, chunk)
        t, out = timed(softmax_ha, *args, reps=1 if heavy else 3, warmup=not heavy)
        row["chunked_ms"], row["chunked_peak_MiB"] = t * 1e3, peak_bytes(softmax_ha, *args) / 2**20
        if 4 * L**3 * 4 < NAIVE_LIMIT:  # a handful of float32 L^3 tensors must fit comfortably
            naive = (softmax_ha_reference, q, ks, vs, w, allowed)
            t, ref = timed(*naive, reps=1 if heavy else 3, warmup=not heavy)
            row["naive_ms"], row["naive_peak_MiB"], row["naive_measured"] = (
                t * 1e3,
                peak_bytes(*naive) / 2**20,
                True,
            )
            row["max_abs_diff"] = float((out - ref[0]).abs().max())
        else:
            row["naive_measured"] = False
        rows.append(row)
    measured = [r for r in rows if r["naive_measured"]]
    for r in rows:
        if not r["naive_measured"] and measured:
            # COMPUTED, not measured: the largest measured naive peak scaled by L^3.
            ref = measured[-1]
            r["naive_peak_MiB_computed"] = ref["naive_peak_MiB"] * (r["L"] / ref["L"]) ** 3
            r["naive_scores_MiB_computed"] = 4 * r["L"] ** 3 / 2**20  # one float32 (L, L, L) score tensor
        naive_peak = r.get("naive_peak_MiB", r.get("naive_peak_MiB_computed"))
        if naive_peak:
            r["memory_ratio"] = r["chunked_peak_MiB"] / naive_peak
    return rows


# ---------------------------------------------------------------- 3. SA vs HFA


def train_step(module, x):
    module.zero_grad(set_to_none=True)
    module(x).square().mean().backward()


def bench_sa_hfa(lengths: list[int], B: int, d: int, H: int, A: int) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    sa = SelfAttention(dim=d, heads=H, kind="softmax", causal=True)
    hfa = HyperFeatureAttention(dim=d, heads=H, factors=A, kind="softmax", causal=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for L in lengths:
        x = torch.randn(B, L, d)
        reps = 5 if L <= 256 else 3
        with torch.no_grad():
            t_sdpa = timed(sa, x, reps=reps)[0]
            t_ref = timed(sa, x, None, True, reps=reps)[0]  # return_scores: the einsum reference path
            t_hfa = timed(hfa, x, reps=reps)[0]
        t_sa_fb, t_hfa_fb = timed(train_step, sa, x, reps=reps)[0], timed(train_step, hfa, x, reps=reps)[0]
        rows.append(
            {
                "L": L,
                "B": B,
                "d": d,
                "H": H,
                "A": A,
                "sa_params": count(sa),
                "hfa_params": count(hfa),
                "sa_sdpa_ms": t_sdpa * 1e3,
                "sa_einsum_ms": t_ref * 1e3,
                "hfa_ms": t_hfa * 1e3,
                "hfa_over_sa": t_hfa / t_sdpa,
                "sdpa_speedup_over_einsum": t_ref / t_sdpa,
                "sa_fwd_bwd_ms": t_sa_fb * 1e3,
                "hfa_fwd_bwd_ms": t_hfa_fb * 1e3,
                "hfa_over_sa_fwd_bwd": t_hfa_fb / t_sa_fb,
            }
        )
    return rows


# ---------------------------------------------------------------- 4. feature-map HA


def relative(out, exact) -> float:
    return float((out - exact).norm() / exact.norm())


def bench_features(L: int, scales: list[float], features: list[int]) -> list[dict]:
    rows = []
    d_h, H = 16, 2
    mask = torch.ones(1, L, dtype=torch.bool)
    for s in scales:
        q, ks, vs, w = ha_inputs(L, H=H, d_h=d_h, scale=s, seed=1)
        t_exact, exact = timed(softmax_ha, q, ks, vs, w, None, reps=1)
        logits = torch.einsum("bhis,bhjs,bhks->bhijk", q[:, :, :32], *ks) / math.sqrt(d_h)  # a sample of them
        uniform = math.prod(v.mean(2, keepdim=True) for v in vs) @ w.transpose(-1, -2)  # scores ignored
        base = {"L": L, "d_h": d_h, "qk_scale": s, "logit_std": float(logits.std())}
        rows.append({**base, "method": "exact (chunked)", "rel_error": 0.0, "ms": t_exact * 1e3})
        rows.append(
            {
                **base,
                "method": "uniform weights (no scores)",
                "rel_error": relative(uniform.expand_as(exact), exact),
                "ms": float("nan"),
            }
        )
        t, out = timed(softmax_ha_taylor, q, ks, vs, w, mask, False)
        rows.append({**base, "method": "taylor degree 2", "rel_error": relative(out, exact), "ms": t * 1e3})
        for r in features:
            Ws = feature_matrices(3, d_h, r, generator=torch.Generator().manual_seed(r))
            t, out = timed(softmax_ha_features, q, ks, vs, w, mask, False, Ws)
            rows.append(
                {**base, "method": f"random features r={r}", "rel_error": relative(out, exact), "ms": t * 1e3}
            )
    return rows


# ---------------------------------------------------------------- 5. long sequences: SA, SDPA, HFA


def sdpa_step(q, k, v, causal: bool):
    for t in (q, k, v):
        t.grad = None
    F.scaled_dot_product_attention(q, k, v, is_causal=causal).square().mean().backward()


def no_grad_call(module, x):
    with torch.no_grad():
        return module(x)


def bench_long(
    lengths: list[int], B: int, d: int, H: int, A: int, causal: list[bool], reps: int
) -> list[dict]:
    """Forward and forward + backward time and peak memory: SA module, bare torch SDPA, HFA module."""
    rows = []
    torch.manual_seed(0)
    for c in causal:
        sa = SelfAttention(dim=d, heads=H, kind="softmax", causal=c).to(DEVICE)
        hfa = HyperFeatureAttention(dim=d, heads=H, factors=A, kind="softmax", causal=c).to(DEVICE)
        for L in lengths:
            x = torch.randn(B, L, d, device=DEVICE)
            qkv = [torch.randn(B, H, L, d // H, device=DEVICE, requires_grad=True) for _ in range(3)]
            row = {"L": L, "B": B, "d": d, "H": H, "A": A, "causal": c}
            fwd = {"sa": partial(no_grad_call, sa, x), "hfa": partial(no_grad_call, hfa, x)}
            fwd = interleaved(fwd, reps)
            both = {"sa": partial(train_step, sa, x), "sdpa": partial(sdpa_step, *qkv, c)}
            both = interleaved({**both, "hfa": partial(train_step, hfa, x)}, reps)
            row["sa_fwd_ms"], row["hfa_fwd_ms"] = fwd["sa"] * 1e3, fwd["hfa"] * 1e3
            for name, t in both.items():
                row[f"{name}_fwd_bwd_ms"] = t * 1e3
            row["sa_peak_MiB"] = peak_bytes(train_step, sa, x) / 2**20
            row["sdpa_peak_MiB"] = peak_bytes(sdpa_step, *qkv, c) / 2**20
            row["hfa_peak_MiB"] = peak_bytes(train_step, hfa, x) / 2**20
            row["hfa_over_sa_fwd"] = row["hfa_fwd_ms"] / row["sa_fwd_ms"]
            row["hfa_over_sa_time"] = row["hfa_fwd_bwd_ms"] / row["sa_fwd_bwd_ms"]
            row["hfa_over_sa_mem"] = row["hfa_peak_MiB"] / row["sa_peak_MiB"]
            row["hfa_over_sdpa_time"] = row["hfa_fwd_bwd_ms"] / row["sdpa_fwd_bwd_ms"]
            row["hfa_over_sdpa_mem"] = row["hfa_peak_MiB"] / row["sdpa_peak_MiB"]
            rows.append(row)
    return rows


def fused_hfa(q, k, v, causal: bool, fp32_dots: str | None = None):
    """The fused Triton kernel on CUDA whatever the precision (softmax_hfa picks it only where it
    measured faster; ``fp32_dots`` its products of fp32 inputs), softmax_hfa's own choice elsewhere."""
    kernels = triton_kernels() if q.is_cuda else None
    if kernels is None:
        return softmax_hfa(q, k, v, None, causal)
    return kernels.softmax_hfa2(q, k, v, None, causal, fp32_dots)


def hfa_kernel_step(q, k, v, causal: bool, block=None, fp32_dots=None):
    for t in (q, k, v):
        t.grad = None
    out = softmax_hfa(q, k, v, None, causal, block) if block else fused_hfa(q, k, v, causal, fp32_dots)
    out.square().mean().backward()


def bench_hfa_kernels(lengths: list[int], B: int, d: int, H: int, causal: bool, reps: int) -> list[dict]:
    """The bare kernels, forward + backward: torch SDPA on (B, H, L, d / H) against softmax HFA
    A = 2 on (B, H, 2, L, d / 2H) (the same bytes of q, k, v), by its default path (the fused Triton
    kernel on CUDA where Triton imports) and by its torch blockwise kernel, per precision:
    fp32, fp32 with TF32 matmuls allowed (torch's allow_tf32 flag), bf16, and on CUDA tf32x3: fp32
    inputs, the fused kernel multiplying by three TF32 products, SDPA in strict fp32."""
    rows = []
    flag = torch.backends.cuda.matmul.allow_tf32
    precisions = (
        ("fp32", "tf32x3", "tf32", "bf16")
        if triton_kernels() and DEVICE.type == "cuda"
        else ("fp32", "tf32", "bf16")
    )
    for L in lengths:
        for precision in precisions:
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            gen = torch.Generator(device=DEVICE).manual_seed(0)
            sdpa, hfa = (
                [
                    torch.randn(*shape, generator=gen, device=DEVICE, dtype=dtype).requires_grad_()
                    for _ in range(3)
                ]
                for shape in ((B, H, L, d // H), (B, H, 2, L, d // (2 * H)))
            )
            block = block_sizes(B * H, L, L, 2, hfa[0])
            dots = "tf32x3" if precision == "tf32x3" else None
            steps = {
                "sdpa": partial(sdpa_step, *sdpa, causal),
                "hfa": partial(hfa_kernel_step, *hfa, causal, None, dots),
                "hfa_torch": partial(hfa_kernel_step, *hfa, causal, block),
            }
            if precision in ("bf16", "tf32x3"):  # bf16: only under autocast; tf32x3: the fp32 row's
                del steps["hfa_torch"]
            row = {"L": L, "B": B, "d": d, "H": H, "causal": causal, "precision": precision}
            with torch.no_grad():  # the fused path's output against the float64 blockwise kernel's
                exact = softmax_hfa(*(t.double() for t in hfa), None, causal, block)
                row["rel_diff"] = relative(fused_hfa(*hfa, causal, dots).double(), exact)
            for name, t in interleaved(steps, reps).items():
                row[f"{name}_ms"] = t * 1e3
                row[f"{name}_peak_MiB"] = peak_bytes(steps[name]) / 2**20
            for name in [n for n in ("hfa", "hfa_torch") if n in steps]:
                row[f"{name}_over_sdpa_time"] = row[f"{name}_ms"] / row["sdpa_ms"]
                row[f"{name}_over_sdpa_mem"] = row[f"{name}_peak_MiB"] / max(row["sdpa_peak_MiB"], 1e-9)
            rows.append(row)
    torch.backends.cuda.matmul.allow_tf32 = flag
    return rows


# ---------------------------------------------------------------- 6. language-model steps


LM_FAMILIES = {  # name: LMConfig fields
    "sa": dict(family="sa"),
    "hfa A=2": dict(family="hfa", factors=2),
    "ha exact": dict(family="ha", order=3, ha_max_seconds=None),
    "ha taylor": dict(family="ha", order=3, ha_approx="taylor"),
}


CPU_BIG_LM_FAMILIES = {k: v for k, v in LM_FAMILIES.items() if k != "ha taylor"}


def bench_lm(size: dict, precisions: list[str], reps: int, families=LM_FAMILIES) -> list[dict]:
    """One AdamW training step of policies/lm.py's LM (forward, backward, update), per family, the
    families taking turns (`interleaved`) so that SA's figure and the others' share the machine's load.

    size: width, layers, heads, context, batch (the names of training/lm.py's presets).
    """
    rows = []
    for precision in precisions:
        steps, rows_here = {}, {}
        for name, fields in families.items():
            torch.manual_seed(0)
            config = LMConfig(
                block_size=size["context"],
                n_layer=size["layers"],
                n_head=size["heads"],
                n_embd=size["width"],
                **fields,
            )
            model = LM(config).to(DEVICE)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            gen = torch.Generator().manual_seed(0)
            x, y = (
                torch.randint(0, 256, (size["batch"], size["context"]), generator=gen).to(DEVICE)
                for _ in range(2)
            )

            def step(model=model, opt=opt, x=x, y=y, precision=precision):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    _, loss = model(x, y)
                loss.backward()
                opt.step()

            rows_here[name] = {**size, "precision": precision, "family": name, "params": model.num_params()}
            try:
                if precision == "bf16":  # the error of bf16 autocast: the same weights and batch in fp32
                    rows_here[name].update(precision_error(model, x, y))
                step()  # a family that does not fit is recorded, not fatal: the others still run
            except torch.OutOfMemoryError as err:
                nan = float("nan")
                rows_here[name].update(
                    step_ms=nan, tokens_per_s=nan, over_sa=nan, error=str(err).split(".")[0]
                )
                del model, opt, step
                if DEVICE.type == "cuda":
                    torch.cuda.empty_cache()
            else:
                steps[name] = step
        times = interleaved(steps, reps)
        base = times.get("sa")
        for name, t in times.items():
            tokens = size["batch"] * size["context"]
            rows_here[name].update(
                step_ms=t * 1e3, tokens_per_s=tokens / t, over_sa=t / base if base else None
            )
        rows += list(rows_here.values())
        del steps
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def precision_error(model, x, y) -> dict:
    """Logits and loss of `model` under bf16 autocast against fp32, same weights and batch."""
    with torch.no_grad():
        logits, loss = model(x, y)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            logits_bf16, loss_bf16 = model(x, y)
    return {"logits_rel_error": relative(logits_bf16.float(), logits), "loss_diff": float(loss_bf16 - loss)}


def bench_taylor_error(size: dict, gains: list[float]) -> list[dict]:
    """Taylor HA against exact softmax HA, same weights, on LM-like inputs (unit-variance tokens after
    LayerNorm): one causal attention layer's output, and a whole LM's logits and loss at init.
    `gain` multiplies W_Q and W_K, standing in for the larger scores training produces."""
    rows = []
    d, H, L, B = size["width"], size["heads"], size["context"], min(size["batch"], 8)
    for gain in gains:
        torch.manual_seed(0)
        exact = HyperAttention(dim=d, heads=H, order=3, causal=True, share_kv=True, max_seconds=None).to(
            DEVICE
        )
        taylor = HyperAttention(dim=d, heads=H, order=3, causal=True, share_kv=True, approx_features="taylor")
        taylor = taylor.to(DEVICE)
        with torch.no_grad():
            exact.q.weight.mul_(gain)
            exact.k.weight.mul_(gain)
        taylor.load_state_dict(exact.state_dict())
        x = F.layer_norm(torch.randn(B, L, d, device=DEVICE), (d,))
        with torch.no_grad():
            ya, yb = exact(x), taylor(x)
            qs = exact.q(x).view(B, L, H, -1).transpose(1, 2) / (d // H) ** 0.5
            ks = exact.k(x).view(B, L, H, -1).transpose(1, 2)
            t = torch.einsum("bhis,bhjs,bhks->bhijk", qs[:, :, -8:], ks, ks)  # the last 8 queries' scores
            models = []
            for approx in (None, "taylor"):
                torch.manual_seed(0)
                lm = LMConfig(block_size=L, n_layer=size["layers"], n_head=H, n_embd=d, family="ha")
                lm.ha_approx, lm.ha_max_seconds = approx, None
                models.append(LM(lm).to(DEVICE).eval())
            for block in models[0].h:
                block.attn.q.weight.mul_(gain)
                block.attn.k.weight.mul_(gain)
            models[1].load_state_dict(models[0].state_dict())
            gen = torch.Generator().manual_seed(1)
            idx = torch.randint(0, 256, (B, L), generator=gen).to(DEVICE)
            (la, loss_a), (lb, loss_b) = (m(idx, idx) for m in models)
        rows.append(
            {
                "width": d,
                "heads": H,
                "context": L,
                "gain": gain,
                "score_std": float(t.std()),
                "layer_rel_error": relative(yb, ya),
                "lm_logits_rel_error": relative(lb, la),
                "lm_loss_exact": float(loss_a),
                "lm_loss_taylor": float(loss_b),
            }
        )
    return rows


# ---------------------------------------------------------------- 7. HA alone on a device


def bench_ha_device(lengths: list[int], B: int, d: int, H: int, reps: int) -> list[dict]:
    """Causal order-3 softmax HA module, forward + backward: exact (fp32, bf16 autocast) and Taylor."""
    rows = []
    for L in lengths:
        for method, approx, precision in [
            ("exact", None, "fp32"),
            ("exact", None, "bf16"),
            ("taylor", "taylor", "fp32"),
        ]:
            torch.manual_seed(0)
            m = HyperAttention(dim=d, heads=H, order=3, causal=True, share_kv=True, approx_features=approx)
            m.max_seconds = None
            m = m.to(DEVICE)
            x = torch.randn(B, L, d, device=DEVICE)

            def step(m=m, x=x, precision=precision):
                m.zero_grad()
                with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    y = m(x)
                y.float().square().mean().backward()

            t = timed(step, reps=reps)[0]
            rows.append(
                {
                    "L": L,
                    "B": B,
                    "d": d,
                    "H": H,
                    "method": method,
                    "precision": precision,
                    "fwd_bwd_ms": t * 1e3,
                    "peak_MiB": peak_bytes(step) / 2**20,
                }
            )
    return rows


# ---------------------------------------------------------------- 8. exact HA kernels side by side


def ha_kernel_step(q, k, v, chunk: int | None, w=None):
    """The shared-slot causal kernel's output (key pairs when `chunk` is None, else query chunks of
    that size), or with `w` its forward + backward of (out * w).sum()."""
    out = softmax_ha_values(q, [k, k], [v, v], None, chunk, True, pairs=chunk is None)
    return out if w is None else (out * w).sum().backward()


def bench_ha_kernels(shapes: list[tuple[int, int, int, int]], reps: int) -> list[dict]:
    """Causal order-3 exact softmax HA with shared key and value slots (the LM's), forward + backward
    on (B, H, L, d_h) factors: the key-pair kernel (policies/ha_pairs.py, the default) against the
    query-chunk kernel it replaced for order 3, taking turns; both against each other's output."""
    rows = []
    for B, H, L, d_h in shapes:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, H, L, d_h, generator=gen).to(DEVICE).requires_grad_() for _ in range(3))
        w = torch.randn(B, H, L, d_h, generator=gen).to(DEVICE)
        chunk = ha_chunk(B * H, L, L, 2, q)
        kernels = {"key pairs": (q, k, v, None), "query chunks": (q, k, v, chunk)}
        steps = {name: partial(ha_kernel_step, *args, w) for name, args in kernels.items()}
        times = interleaved(steps, reps)
        with torch.no_grad():
            outs = {name: ha_kernel_step(*args) for name, args in kernels.items()}
        diff = relative(outs["key pairs"], outs["query chunks"])
        bf16 = bf16_pairs(q, k, v, w, reps)
        for name, t in times.items():
            rows.append(
                {
                    "B": B,
                    "H": H,
                    "L": L,
                    "d_h": d_h,
                    "kernel": name,
                    "fwd_bwd_ms": t * 1e3,
                    "peak_MiB": peak_bytes(steps[name]) / 2**20,
                    "over_pairs": t / times["key pairs"],
                    "rel_diff": diff,
                    **(bf16 if name == "key pairs" else {}),
                }
            )
    return rows


def bf16_pairs(q, k, v, w, reps: int) -> dict:
    """The key-pair kernel on bfloat16 inputs (what autocast hands it): time forward + backward
    taking turns with fp32, and the relative error of its output and of dq against fp32's."""
    q16, k16, v16 = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
    fp32 = partial(ha_kernel_step, q, k, v, None, w)
    bf16 = partial(ha_kernel_step, q16, k16, v16, None, w)
    times = interleaved({"fp32": fp32, "bf16": bf16}, reps)
    grads = []
    for inputs in ((q, k, v), (q16, k16, v16)):
        for t in inputs:
            t.grad = None
        ha_kernel_step(*inputs, None, w)
        grads.append(inputs[0].grad.float())
    with torch.no_grad():
        exact, low = (ha_kernel_step(*inputs, None).float() for inputs in ((q, k, v), (q16, k16, v16)))
    return {
        "bf16_fwd_bwd_ms": times["bf16"] * 1e3,
        "bf16_over_fp32": times["bf16"] / times["fp32"],
        "bf16_rel_error": relative(low, exact),
        "bf16_dq_rel_error": relative(grads[1], grads[0]),
    }


# ---------------------------------------------------------------- output


def markdown(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else (f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}")
        return "n/a" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
    }


CPU_LM = dict(
    width=64, layers=2, heads=4, context=128, batch=32
)  # training/lm.py's cpu preset at context 128
GPU_LM = dict(width=256, layers=4, heads=4, context=128, batch=32)  # training/lm.py's gpu preset


def progress(name: str, rows: list[dict]) -> list[dict]:
    print(f"{name}: {len(rows)} rows", flush=True)
    return rows


def cpu_suite(quick: bool) -> dict:
    """Table name -> a function that measures it, in the order they are run and printed."""
    lm_sizes = [dict(CPU_LM, context=16, batch=4)] if quick else [CPU_LM, GPU_LM]
    return {
        "linear_ha": lambda: bench_linear_ha([32, 64] if quick else [64, 256, 1024]),
        "softmax_ha": lambda: bench_softmax_ha([32, 64] if quick else [64, 128, 256, 512, 1024], chunk=16),
        "sa_vs_hfa": lambda: bench_sa_hfa(
            [64] if quick else [256, 1024], B=2 if quick else 8, d=64 if quick else 256, H=4, A=2
        ),
        "long": lambda: bench_long(
            [128] if quick else [4096],
            B=1,
            d=64 if quick else 256,
            H=4,
            A=2,
            causal=[True, False],
            reps=1 if quick else 3,
        ),
        "lm_step": lambda: (
            bench_lm(lm_sizes[0], ["fp32", "bf16"], reps=1 if quick else 3)
            # The Taylor map keeps (B, H, L, 1 + d_h + d_h^2, d_h) prefix sums, about 17 GB per layer at the
            # gpu preset's d_h = 64: too much for a shared CPU box (the GPU suite records it).
            + [
                row
                for size in lm_sizes[1:]
                for row in bench_lm(size, ["fp32", "bf16"], 2, CPU_BIG_LM_FAMILIES)
            ]
        ),
        "ha_kernels": lambda: bench_ha_kernels(
            [(2, 2, 16, 4)] if quick else [(32, 4, 128, 16), (32, 4, 128, 64)], reps=1 if quick else 3
        ),
        "taylor_error": lambda: bench_taylor_error(lm_sizes[0], [1.0, 2.0, 4.0]),
        "feature_map_ha": lambda: bench_features(
            64 if quick else 256,
            [0.5, 1.0] if quick else [0.3, 0.5, 0.7, 1.0],
            [64] if quick else [64, 256, 1024, 4096],
        ),
    }


def gpu_suite(quick: bool) -> dict:
    """Sized for one data-centre GPU in well under 90 s; --quick runs it anywhere in seconds."""
    lm = dict(GPU_LM, width=32, layers=1, context=16, batch=2) if quick else GPU_LM
    return {
        "long": lambda: bench_long(
            [64] if quick else [1024, 4096],
            B=2 if quick else 8,
            d=32 if quick else 256,
            H=4,
            A=2,
            causal=[True, False],
            reps=1 if quick else 5,
        ),
        "hfa_kernels": lambda: bench_hfa_kernels(
            [64] if quick else [1024, 4096],
            B=2 if quick else 8,
            d=32 if quick else 256,
            H=4,
            causal=True,
            reps=1 if quick else 5,
        ),
        "ha_device": lambda: bench_ha_device(
            [16] if quick else [128, 256, 512],
            B=2 if quick else 4,
            d=32 if quick else 256,
            H=4,
            reps=1 if quick else 3,
        ),
        "ha_kernels": lambda: bench_ha_kernels(
            [(2, 2, 16, 4)] if quick else [(32, 4, 128, 64), (8, 4, 256, 64)], reps=1 if quick else 5
        ),
        "lm_step": lambda: bench_lm(lm, ["fp32", "bf16"], reps=1 if quick else 5),
        "taylor_error": lambda: bench_taylor_error(lm, [1.0, 2.0, 4.0]),
    }


def main(argv: list[str] | None = None) -> dict:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N): where the suite runs")
    parser.add_argument(
        "--suite",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="which tables: auto = cpu on the CPU, gpu on CUDA",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the script")
    parser.add_argument(
        "--tables",
        nargs="+",
        metavar="NAME",
        help="run only these tables of the suite and replace them in the device's existing entry, "
        "keeping its other tables (the entry records the re-run)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: reproducible on shared boxes)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="JSON file; its entry for this device is replaced, others are kept",
    )
    parser.add_argument("--readme", type=Path, default=ROOT / "benchmarks" / "README_attention.md")
    parser.add_argument(
        "--merge",
        type=Path,
        help="copy every device entry of this JSON into --out, rewrite the README, and run nothing",
    )
    args = parser.parse_args(argv)
    if args.merge:
        result = load(args.out)
        result.update(load(args.merge))
        return write(result, args.out, args.readme)
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_attention: --device cuda asked for, but torch sees no CUDA device")
    if DEVICE.type not in ("cpu", "cuda"):
        raise SystemExit(f"bench_attention: --device must be cpu or cuda[:N], got {args.device!r}")
    torch.set_num_threads(args.threads)
    suite = args.suite if args.suite != "auto" else ("gpu" if DEVICE.type == "cuda" else "cpu")
    measures = (gpu_suite if suite == "gpu" else cpu_suite)(args.quick)
    unknown = set(args.tables or []) - set(measures)
    if unknown:
        raise SystemExit(
            f"bench_attention: no table {sorted(unknown)} in the {suite} suite: {list(measures)}"
        )
    start, cpu_start = time.perf_counter(), time.process_time()
    load_start = os.getloadavg()
    tables = {
        name: progress(name, measure())
        for name, measure in measures.items()
        if args.tables is None or name in args.tables
    }
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(
        ["python benchmarks/bench_attention.py"] + [Path(a).name if "/" in a else a for a in given]
    )
    run = {
        "command": command,
        "machine": machine(),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "loadavg": [round(x, 2) for x in (*load_start, *os.getloadavg())],
        "date": time.strftime("%Y-%m-%d"),
    }
    key = DEVICE.type if suite == ("gpu" if DEVICE.type == "cuda" else "cpu") else f"{DEVICE.type}-{suite}"
    result = load(args.out)
    if args.tables and key in result:  # a partial re-run: the rest of the entry stays as it was
        entry = result[key]
        entry["tables"].update(tables)
        entry["tables"] = {name: entry["tables"][name] for name in measures if name in entry["tables"]}
        entry.setdefault("reruns", []).append({**run, "tables": list(tables)})
    else:
        entry = {**run, "suite": suite, "tables": tables}
    entry["goals"] = goals(entry["tables"], DEVICE.type)
    result[key] = entry
    print(render_entry(key, entry))
    return write(result, args.out, args.readme)


RESULTS = ROOT / "benchmarks" / "results" / "attention.json"


def load(path: Path) -> dict:
    """Device entries of a results file; a file in the older single-device layout counts as "cpu"."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {"cpu": data} if "tables" in data else data


def write(result: dict, out: Path, readme: Path) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    readme.write_text(render(result) + "\n")
    return result


COLUMNS = {
    "linear_ha": ["L", "fast_ms", "reference_ms", "speedup", "rel_diff"],
    "softmax_ha": [
        "L",
        "chunk",
        "chunked_ms",
        "naive_ms",
        "chunked_peak_MiB",
        "naive_peak_MiB",
        "naive_peak_MiB_computed",
        "memory_ratio",
        "max_abs_diff",
    ],
    "sa_vs_hfa": [
        "L",
        "B",
        "d",
        "H",
        "A",
        "sa_params",
        "hfa_params",
        "sa_sdpa_ms",
        "sa_einsum_ms",
        "hfa_ms",
        "hfa_over_sa",
        "sdpa_speedup_over_einsum",
        "sa_fwd_bwd_ms",
        "hfa_fwd_bwd_ms",
        "hfa_over_sa_fwd_bwd",
    ],
    "long": [
        "L",
        "B",
        "causal",
        "sa_fwd_ms",
        "hfa_fwd_ms",
        "sa_fwd_bwd_ms",
        "sdpa_fwd_bwd_ms",
        "hfa_fwd_bwd_ms",
        "sa_peak_MiB",
        "sdpa_peak_MiB",
        "hfa_peak_MiB",
        "hfa_over_sa_fwd",
        "hfa_over_sa_time",
        "hfa_over_sa_mem",
        "hfa_over_sdpa_time",
        "hfa_over_sdpa_mem",
    ],
    "lm_step": [
        "width",
        "layers",
        "batch",
        "context",
        "precision",
        "family",
        "params",
        "step_ms",
        "tokens_per_s",
        "over_sa",
        "logits_rel_error",
        "loss_diff",
        "error",
    ],
    "taylor_error": [
        "width",
        "heads",
        "context",
        "gain",
        "score_std",
        "layer_rel_error",
        "lm_logits_rel_error",
        "lm_loss_exact",
        "lm_loss_taylor",
    ],
    "hfa_kernels": [
        "L",
        "B",
        "precision",
        "sdpa_ms",
        "hfa_ms",
        "hfa_torch_ms",
        "sdpa_peak_MiB",
        "hfa_peak_MiB",
        "hfa_torch_peak_MiB",
        "hfa_over_sdpa_time",
        "hfa_over_sdpa_mem",
        "hfa_torch_over_sdpa_time",
        "hfa_torch_over_sdpa_mem",
        "rel_diff",
    ],
    "ha_device": ["L", "B", "d", "H", "method", "precision", "fwd_bwd_ms", "peak_MiB"],
    "ha_kernels": [
        "B",
        "H",
        "L",
        "d_h",
        "kernel",
        "fwd_bwd_ms",
        "peak_MiB",
        "over_pairs",
        "rel_diff",
        "bf16_fwd_bwd_ms",
        "bf16_over_fp32",
        "bf16_rel_error",
        "bf16_dq_rel_error",
    ],
    "feature_map_ha": ["qk_scale", "logit_std", "method", "rel_error", "ms"],
}
TITLES = {
    "linear_ha": "Linear HA, order 3, B = 1, H = 1, d_h = 16, float32: App. F.3 reordering vs O(L^3) einsum",
    "softmax_ha": "Exact softmax HA, order 3, B = 1, H = 1, d_h = 16, float32: query chunks vs naive scores",
    "sa_vs_hfa": "Causal softmax SA vs HFA (d_h = d / (H A)), float32",
    "long": "Long sequences, float32: SA module, bare torch SDPA and HFA A = 2 (d = 256 unless quick), "
    "forward and forward + backward",
    "hfa_kernels": "Causal softmax HFA A = 2 kernels beside torch SDPA, bare (no projections), d = 256, "
    "H = 4, forward + backward",
    "lm_step": "LM training step (forward, backward, AdamW) at context 128, policies/lm.py, per family",
    "taylor_error": "Taylor HA vs exact softmax HA, same weights, causal order 3: relative error",
    "ha_device": "Causal order-3 softmax HA module, forward + backward: exact (fp32, bf16) vs Taylor",
    "ha_kernels": "Exact causal order-3 softmax HA kernels, shared key and value slots, float32 (bf16 "
    "where named), forward + backward: key pairs vs query chunks",
    "feature_map_ha": "Softmax HA approximations, order 3, H = 2, d_h = 16: relative output error vs exact",
}
NOTES = {
    "hfa_kernels": "`sdpa`: torch's scaled_dot_product_attention on (B, H, L, d / H) q, k, v. `hfa`: "
    "softmax HFA on (B, H, 2, L, d / 2H) q, k, v (the same bytes) by the fused Triton kernel of "
    "policies/hfa_triton.py on CUDA (in every precision, also where softmax_hfa itself does not pick "
    "it), by softmax_hfa's own choice elsewhere; `hfa_torch`: its torch blockwise kernel, forced. "
    "Peak memory: bytes allocated during the step above the inputs. `tf32`: fp32 inputs with "
    "torch.backends.cuda.matmul.allow_tf32 set, which the fused kernel follows; `tf32x3`: fp32 inputs "
    "without it, the fused kernel told to multiply by three TF32 products (softmax_hfa2's fp32_dots), "
    "SDPA in strict fp32. `rel_diff`: relative difference of `hfa`'s output from the float64 blockwise "
    "kernel's.",
    "ha_kernels": "`key pairs` (policies/ha_pairs.py) is what order 3 runs on the CPU; `query chunks` the "
    "kernel it replaced there, still the default on CUDA and for other orders. `over_pairs`: time over "
    "the key-pair kernel's, measured taking turns; `rel_diff`: relative difference of the two outputs. "
    "`bf16_*`: the key-pair kernel on bfloat16 inputs (as under autocast: bfloat16 matmuls, float32 "
    "sums), timed taking turns with fp32; its output's and dq's relative error against fp32.",
    "softmax_ha": "Peak memory: tensor bytes allocated during the call, inputs excluded. "
    "`naive_peak_MiB_computed` is COMPUTED, not measured: the largest measured naive peak scaled "
    "by L^3 (naive does not fit comfortably in RAM there).",
    "sa_vs_hfa": "HFA's W_Q, W_K, W_V hold exactly SA's 3 d^2 weights; its W_O reads d / A features, hence "
    "d^2 (1 - 1/A) fewer parameters. SA forward uses torch SDPA; `sa_einsum_ms` is the reference.",
    "long": "Modules include their projections (SA: W_QKV and W_O; HFA the same, W_O d / A wide); `sdpa` is "
    "torch.nn.functional.scaled_dot_product_attention alone on (B, H, L, d / H) inputs. Peak memory "
    "of forward + backward. HFA runs a blockwise kernel: no (B, H, L, L) tensor, O(L) kept for backward. "
    "The CUDA rows of 2026-11-27 ran HFA's torch blockwise kernel, softmax_hfa's choice in strict fp32 "
    "with gradients then; it now runs the fused Triton kernel there on three TF32 products (the kernel "
    "table's tf32x3 row), not yet measured as a module.",
    "lm_step": "Sizes of training/lm.py's presets at context 128 (cpu: width 64, 2 layers; gpu: width 256, "
    "4 layers; 4 heads, batch 32). `ha exact` is the O(L^3) softmax; `ha taylor` the degree-2 "
    "feature map (LMConfig.ha_approx='taylor'), linear in L. `over_sa`: step time over SA's at the same "
    "size and precision. bf16: torch.autocast(bfloat16) around the forward, as `hyperagents lm --precision "
    "bf16` (weights, gradients and AdamW in fp32); `logits_rel_error` and `loss_diff`: its logits' relative "
    "error and its loss minus fp32's, same weights and batch, at initialisation.",
    "taylor_error": "`gain` scales W_Q and W_K of every HA layer (1 = the modules' init), standing in for "
    "the larger scores of a trained model; `score_std` is the spread of the exact tuple scores "
    "<q, k_1 * k_2> / sqrt(d_h). The degree-2 map is accurate while scores stay well below 1.",
    "feature_map_ha": "q and k entries ~ N(0, qk_scale^2); `logit_std` is the spread of the exact scores "
    "<q, k1 * k2> / sqrt(d_h). 'uniform weights' ignores the scores altogether: an "
    "approximation is only useful below that line. Random features: one draw each.",
}

# Findings that hold for the CPU entry only (its machine, its threads).
CPU_NOTES = {
    "lm_step": "At width 64 the exact HA step is bound by its kernel's matmuls alone: 13 GFLOP per layer "
    "forward + backward (53.5M scores at d_h = 16) at the 80-100 GFLOP/s one core reaches with an inner "
    "dimension of 16, so 4.5-5.5x SA's step before any elementwise pass (ha_kernels' note).",
    "ha_kernels": "Where the key-pair kernel's time goes at these sizes (one thread, perf and per-operation "
    "CPU time): matmuls 40-50% (7 per score forward + backward, 8 in query-key blocks; 80-100 GFLOP/s at "
    "d_h = 16, whose inner dimension of 16 keeps MKL well below this core's ~170 GFLOP/s, 100-125 at "
    "d_h = 64), elementwise passes about 30% (exp twice, the dz product, building and summing d-wide "
    "pair or query keys), Python and dispatch about 20% (~110 operations per block, ~1 ms per block "
    "forward + backward). What was measured on the way, each against the kernel without it, taking "
    "turns: buffers kept between calls (a fresh 2-17 MiB block cost 1-26 ns per float written, page "
    "faults, against 0.3 ns); exp of the raw scores while their bound is at most 40 (no shift column, "
    "no clamp pass); the whole diagonal tile at weight 1/2 instead of masking its upper half; scores "
    "laid out query-major, so causal masks fill contiguous rows; pair keys for early rows and query "
    "keys for late ones (d_h = 16: 344 ms against 380 with pair keys only; d_h = 64: 930 against "
    "1,324); blocks of 2^22 elements (2^19: 1.2x slower, 2^23: 1.06x) of 8 rows (4 or 6: 1.06-1.08x "
    "slower); block loops in inference mode (1-2%). Dropped: batched matrix-vector products for the "
    "gradients' sums (1.06x slower in place, though faster alone), splitting a stacked matmul to avoid "
    "a copy, other thresholds between the two forms (no change beyond noise); not built: keeping "
    "exp(scores) for the backward (writing and reading 4 bytes a score at the ~6 GB/s one core gets "
    "here costs what the recompute does), one query at a time over the full square of pairs (twice "
    "the scores). bf16 gains little at d_h = 16 (its matmuls run 1.3x faster, its exp 2x slower) and "
    "more at d_h = 64. With two torch threads on the quiet machine (`--threads 2 --tables lm_step`, "
    "benchmarks/results/attention_lm_2threads.json) the exact HA step is 6.65x SA's at width 64 and "
    "5.45x at width 256 in fp32; in bf16 4.14x and 6.81x SA's bf16 step, but 6.69x and 4.55x SA's "
    "fp32 step, the faster of SA's two at width 64: against SA's fastest step at each width no "
    "setting meets the 5x goal. The ratio depends on the CPU: on a 2-core AMD EPYC machine "
    "(benchmarks/results/attention_lm_amd_epyc.json, one thread) the exact HA step is 13.84x SA's "
    "at width 64 and 5.24x at width 256 in fp32; its CPU has AVX2 but no AVX-512 or bf16 "
    "instructions, and there the bf16 steps take 4.6-21x their fp32 time (but Taylor HA's at "
    "width 64).",
}


def goals(tables: dict, device: str) -> list[str]:
    """The issues' targets present in these tables, each with the number it is judged on."""
    out = []
    if "linear_ha" in tables:
        lin = tables["linear_ha"][-1]
        out.append(f"linear HA speedup at L = {lin['L']}: {lin['speedup']:.3g}x (goal >= 100x)")
    if "softmax_ha" in tables and "memory_ratio" in tables["softmax_ha"][-1]:
        soft = tables["softmax_ha"][-1]
        kind = "measured" if soft["naive_measured"] else "computed"
        out.append(
            f"exact softmax HA peak memory at L = {soft['L']}: {soft['memory_ratio']:.3g} of naive "
            f"({kind} naive; goal <= 0.1)"
        )
    for r in tables.get("long", []):
        c = "causal" if r["causal"] else "not causal"
        if device == "cuda":
            out.append(
                f"HFA / torch SDPA at L = {r['L']} ({c}): {r['hfa_over_sdpa_time']:.2f}x time, "
                f"{r['hfa_over_sdpa_mem']:.2f}x memory, forward + backward (goal <= 2, <= 2)"
            )
        else:
            out.append(
                f"HFA / SA at L = {r['L']} ({c}): {r['hfa_over_sa_time']:.2f}x time forward + backward "
                f"({r['hfa_over_sa_fwd']:.2f}x forward), {r['hfa_over_sa_mem']:.2f}x peak memory "
                "(goal <= 1.5 time, <= 2 memory)"
            )
    for r in tables.get("hfa_kernels", []):
        out.append(
            f"HFA kernel / torch SDPA at L = {r['L']}, {r['precision']}: "
            f"{r['hfa_over_sdpa_time']:.2f}x time, {r['hfa_over_sdpa_mem']:.2f}x memory, "
            "forward + backward (goal <= 2, <= 2)"
            + (
                f"; its torch blockwise kernel {r['hfa_torch_over_sdpa_time']:.2f}x, "
                f"{r['hfa_torch_over_sdpa_mem']:.2f}x"
                if "hfa_torch_ms" in r
                else ""
            )
        )
    lm = tables.get("lm_step", [])
    for r in lm:
        if r["family"] == "ha exact":
            sa32 = [
                s["step_ms"]
                for s in lm
                if s["family"] == "sa"
                and s["precision"] == "fp32"
                and s["width"] == r["width"]
                and s["layers"] == r["layers"]
            ]
            vs32 = (
                f", {r['step_ms'] / sa32[0]:.2f}x SA's fp32 step" if r["precision"] != "fp32" and sa32 else ""
            )
            out.append(
                f"exact HA LM step / SA at width {r['width']}, {r['layers']} layers, context {r['context']}, "
                f"{r['precision']}: {r['over_sa']:.2f}x{vs32}, {r['tokens_per_s']:.0f} tokens/s (goal <= 5x"
                + ("; GPU goal >= 4 x 15.2k = 60.8k tokens/s)" if device == "cuda" else ")")
            )
    return out


def render_entry(key: str, entry: dict) -> str:
    m = entry["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch thread(s)"
    clock = (
        "CPU time of the calling thread" if key.startswith("cpu") else "wall clock between synchronisations"
    )
    out = [
        f"## Attention on {key}",
        "",
        f"Command: `{entry['command']}` ({entry['seconds']:.0f} s). Machine: {where}, torch {m['torch']}, "
        f'Python {m["python"]}. Raw numbers: `benchmarks/results/attention.json` under "{key}". '
        f"Times: median {clock} after one warm-up call.",
    ]
    for run in entry.get("reruns", []):
        load = run.get("loadavg")
        shared = f", load average {load[0]:.1f} at the start and {load[3]:.1f} at the end" if load else ""
        gpu = run.get("machine", {}).get("gpu")
        where_rerun = (
            f"on an {gpu}" if gpu and gpu != m.get("gpu") else "on the same machine, shared with other jobs"
        )
        out.append(
            f"Re-run {run['date']} {where_rerun}: `{run['command']}` "
            f"({run['seconds']:.0f} s{shared}), replacing the tables {', '.join(run['tables'])}; their "
            "side-by-side rows took turns call by call, so the load fell alike on both."
        )
    out += ["", *[f"- {g}" for g in entry["goals"]]]
    for name, rows in entry["tables"].items():
        out += ["", f"### {TITLES[name]}", "", markdown(rows, COLUMNS[name])]
        if name in NOTES:
            out += ["", NOTES[name]]
        if key.startswith("cpu") and name in CPU_NOTES:
            out += ["", CPU_NOTES[name]]
    return "\n".join(out)


def render(result: dict) -> str:
    return "\n\n".join(render_entry(key, result[key]) for key in sorted(result))


if __name__ == "__main__":
    main()
