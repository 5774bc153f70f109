"""Mutation testing of the model, loss, optimiser, training-loop, template, reporting and online-epoching code.

Each mutant is one small, deliberate bug: a unique snippet of one source file replaced by another. The
script copies the repository's tracked files (as they are in the working tree) into a scratch folder
under the system temp dir, never touching the checkout, then for each mutant writes the mutated file,
runs the test files that cover it (``pytest -x -q``, the scratch copy first on ``PYTHONPATH``) and
restores the file. A mutant is *killed* when a test fails, *survives* when every test passes.

Score = killed / (mutants − equivalent). Mutants known to be equivalent (no observable behaviour
changes: a fast path, a boundary that cannot be reached) carry their reason and are still run, so a
test that starts to distinguish them shows up. The four bugs of issue 15's audit table are mutants
``train-no-kappa``, ``init-nice-off``, ``spr-T-is-1`` and ``beta-ignored``.

Usage::

    .venv/bin/python benchmarks/mutation.py                   # all mutants (~10 min on 2 cores)
    .venv/bin/python benchmarks/mutation.py --only beta-ignored train-no-kappa
    .venv/bin/python benchmarks/mutation.py --list
    .venv/bin/python benchmarks/mutation.py --out results/    # also writes mutation.json and mutation.md

Results of the current tree are in docs/contributing.md ("Mutation testing").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS = {
    "losses": ("tests/hmavd/test_losses.py", "tests/hmavd/test_train.py"),
    "mcdb": ("tests/hmavd/test_mcdb.py", "tests/hmavd/test_train.py"),
    "spr": ("tests/hmavd/test_spr.py", "tests/hmavd/test_train.py"),
    "train": ("tests/hmavd/test_train.py", "tests/hmavd/test_config.py"),
    "models": (
        "tests/hmavd/test_models.py",
        "tests/hmavd/test_fused_tsconv.py",
        "tests/hmavd/test_config.py",
        "tests/hmavd/test_evaluate.py",
    ),
    "templates": ("tests/hmavd/test_templates.py",),
    "reporting": ("tests/hmavd/test_evaluate.py",),
    "epocher": ("tests/bci/test_epocher.py",),
}


@dataclass(frozen=True)
class Mutant:
    """One named bug: replace ``old`` (which must occur exactly once in ``path``) by ``new``."""

    name: str
    path: str
    old: str
    new: str
    tests: str  # key of TESTS
    equivalent: str = ""  # why no test can kill it ("" = it should be killed)


L, M, S, T = "hmavd/losses.py", "hmavd/mcdb.py", "hmavd/spr.py", "hmavd/train.py"
HM, AT, EN = "hmavd/models/hmavd_model.py", "hmavd/models/attention.py", "hmavd/models/encoders.py"
AD, HD, EP = "hmavd/models/adapters.py", "hmavd/models/heads.py", "bci/epocher.py"
TP, EV = "hmavd/templates.py", "hmavd/evaluate.py"

MUTANTS: tuple[Mutant, ...] = (
    # losses.py (Eq. 2-4, 7)
    Mutant("ce-one-direction", L, "F.cross_entropy(logits.t(), target)", "F.cross_entropy(logits, target)", "losses"),
    Mutant("ce-no-scale", L, "logits = logit_scale * a @ b.t()", "logits = a @ b.t()", "losses"),
    Mutant(
        "alignment-sum",
        L,
        "torch.stack(list(terms.values())).mean()",
        "torch.stack(list(terms.values())).sum()",
        "losses",
    ),
    Mutant(
        "cosine-sum", L, "F.cosine_similarity(x, y, dim=-1).mean()", "F.cosine_similarity(x, y, dim=-1).sum()", "losses"
    ),
    Mutant("consistency-weight-ignored", L, "total + consistency_weight * terms", "total + terms", "losses"),
    # mcdb.py (Eq. 10-15)
    Mutant("score-row-softmax-to-column", M, "sim = z.softmax(dim=-1)", "sim = z.softmax(dim=0)", "mcdb"),
    Mutant(
        "logits-not-rescaled",
        M,
        "pre = {m: z * factor for m, z in pre.items()}",
        "pre = {m: z for m, z in pre.items()}",
        "mcdb",
    ),
    Mutant("score-trace-mean", M, "sim.diagonal().sum()", "sim.diagonal().mean()", "mcdb"),
    Mutant("rho-not-excluding-self", M, "s / (total - s + eps)", "s / (total + eps)", "mcdb"),
    Mutant("kappa-no-shift", M, "torch.tanh(gamma * (rho - 1.0))", "torch.tanh(gamma * rho)", "mcdb"),
    Mutant(
        "kappa-ge-one",
        M,
        "torch.where(rho > 1,",
        "torch.where(rho >= 1,",
        "mcdb",
        equivalent="at ρ = 1 both branches give κ = 1 − tanh(0) = 1",
    ),
    Mutant("kappa-no-floor", M, ".clamp(min=floor)", ".clamp(min=0.0)", "mcdb"),
    Mutant("kappa-squared", M, "torch._foreach_mul_(grads, k)", "torch._foreach_mul_(grads, k * k)", "mcdb"),
    Mutant(
        "apply-ignores-kappa-keys",
        M,
        'kappas.get(f"kappa/{name}", kappas.get(name, 1.0))',
        "kappas.get(name, 1.0)",
        "mcdb",
    ),
    Mutant("scale-update-unscaled", M, "p.copy_(b + k * (p - b))", "p.copy_(b + (p - b))", "mcdb"),
    Mutant(
        "tau-is-logit-scale",
        M,
        'float(1.0 / out["logit_scale"].detach())',
        'float(out["logit_scale"].detach())',
        "mcdb",
    ),
    Mutant("grad-norm-squared", M, "torch.stack(present).sqrt()", "torch.stack(present)", "mcdb"),
    # spr.py (Eq. 16-20)
    Mutant("sigma-no-power", S, "float(sigma_max) * frac**power", "float(sigma_max) * frac", "spr"),
    Mutant(
        "sigma-off-by-one",
        S,
        "min(max(step, 0), total_steps) / total_steps",
        "min(max(step + 1, 0), total_steps) / total_steps",
        "spr",
    ),
    Mutant(
        "noise-variance-for-std",
        S,
        "torch._foreach_add(grads, noises, alpha=sigma)",
        "torch._foreach_add(grads, noises, alpha=sigma * sigma)",
        "spr",
    ),
    Mutant(
        "adam-no-bias-correction",
        S,
        "step_sizes = [-lr / (1 - beta1**step) for step in step_values]",
        "step_sizes = [-lr for step in step_values]",
        "spr",
    ),
    Mutant(
        "adam-second-moment-beta1",
        S,
        "torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)",
        "torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta1)",
        "spr",
    ),
    Mutant(
        "weight-decay-sign",
        S,
        "torch._foreach_add(grads, params, alpha=weight_decay)",
        "torch._foreach_add(grads, params, alpha=-weight_decay)",
        "spr",
    ),
    Mutant("global-step-frozen", S, "self.global_step += 1", "self.global_step += 0", "spr"),
    Mutant("resume-forgets-step", S, 'self.global_step = int(spr["global_step"])', "self.global_step = 0", "spr"),
    # train.py (the loop)
    Mutant("train-no-kappa", T, "self.mcdb.apply(self.model, stats)  #", "pass  #", "train"),
    Mutant(
        "spr-T-is-1",
        T,
        "make_optimizer(cfg, model, cfg.epochs * steps_per_epoch)",
        "make_optimizer(cfg, model, 1)",
        "train",
    ),
    Mutant("no-zero-grad", T, "self.optimizer.zero_grad(set_to_none=True)", "pass", "train"),
    Mutant("selection-sum", T, "float(np.mean([val_terms[k]", "float(np.sum([val_terms[k]", "train"),
    Mutant("validation-unweighted", T, "sums.get(k, 0.0) + float(v) * (b - a)", "sums.get(k, 0.0) + float(v)", "train"),
    Mutant(
        "mcdb-tau-fixed-when-learnable",
        T,
        'tau = None if cfg.temperature == "learnable" else cfg.tau',
        "tau = cfg.tau",
        "train",
    ),
    Mutant("update-mode-unscaled", T, "scale_update(groups[m], before[m], k)", "pass", "train"),
    Mutant("build-model-drops-sa-variant", T, "sa_variant=cfg.sa_variant,", "", "train"),
    Mutant("build-model-drops-image-projection", T, "image_projection=cfg.image_projection,", "", "train"),
    Mutant(
        "no-shuffle",
        T,
        "perm = torch.randperm(n, generator=gen).to(device)",
        "perm = torch.arange(n).to(device)",
        "train",
    ),
    # models/
    Mutant(
        "beta-ignored",
        HM,
        "fuse(adapted, text_features, self.cfg.fusion_beta)",
        "fuse(adapted, text_features, 0.5)",
        "models",
    ),
    Mutant("init-nice-off", HM, 'if cfg.init == "nice":', "if False:", "models"),
    Mutant(
        "image-adapter-skipped",
        HM,
        "x = self.image_adapter(image_features) if self.image_adapter is not None else",
        "x = image_features if self.image_adapter is not None else",
        "models",
    ),
    Mutant("logit-scale-unclamped", HM, ".exp().clamp(max=self.cfg.logit_scale_max)", ".exp()", "models"),
    Mutant(
        "fused-template-unnormalised",
        HM,
        "return F.normalize(fused, dim=-1) if normalize else fused",
        "return fused",
        "models",
    ),
    Mutant("sa-switch-ignored", HM, "m.set_variant(cfg.sa_variant)", "m.set_variant('fixed')", "models"),
    Mutant(
        "sa-published-applies-attention",
        AT,
        'torch.einsum("bct,bcm->bct", x, attn)',
        'torch.einsum("bcm,bmt->bct", attn, x)',
        "models",
    ),
    Mutant("sa-published-scale", AT, "max(n_times // 30, 1)", "max(n_times // 25, 1)", "models"),
    Mutant(
        "spatial-block-no-residual",
        AT,
        "return x + self.drop(self.module(self.norm(x)))",
        "return self.drop(self.module(self.norm(x)))",
        "models",
    ),
    Mutant("ga-graph-ignored", AT, 'e = e.masked_fill(~adj, float("-inf"))', "e = e", "models"),
    Mutant("ga-relu", AT, "e = F.leaky_relu(e, self.negative_slope)", "e = F.relu(e)", "models"),
    Mutant(
        "nice-init-std",
        EN,
        "nn.init.normal_(module.weight, 0.0, 0.02)",
        "nn.init.normal_(module.weight, 0.0, 0.05)",
        "models",
    ),
    Mutant(
        "nice-init-bn-bias",
        EN,
        "        nn.init.zeros_(module.bias)\n",
        "",
        "models",
        equivalent="BatchNorm2d's bias already starts at 0: zeroing it again changes nothing",
    ),
    Mutant("flatten-channel-major", EN, "x.flatten(2).transpose(1, 2).reshape", "x.flatten(2).reshape", "models"),
    # models/encoders.py: the TSConv CPU front end (box average, BatchNorm folded into the kernel, one backward)
    Mutant(
        "box-average-one-tap-short",
        EN,
        "out[..., 1:] -= total[..., :-width]",
        "out[..., 1:] -= total[..., 1 : 1 - width]",
        "models",
    ),
    Mutant(
        "front-bn-unbiased-variance",
        EN,
        "return mu, m, gram[:length, :length] / n - torch.outer(m, m)",
        "return mu, m, (gram[:length, :length] - n * torch.outer(m, m)) / (n - 1)",
        "models",
    ),
    Mutant(
        "front-running-var-biased",
        EN,
        "add_(var * (n / max(n - 1, 1)), alpha=factor)",
        "add_(var, alpha=factor)",
        "models",
    ),
    Mutant(
        "front-spatial-grad-transposed",
        EN,
        "g_w2 = g_w2.view(n_g, -1, n_f).transpose(1, 2).unsqueeze(-1)",
        "g_w2 = g_w2.view(n_g, n_f, -1).unsqueeze(-1)",
        "models",
    ),
    Mutant("adapter-no-alpha", AD, "out = x + self.alpha * self.drop(", "out = x + 1.0 * self.drop(", "models"),
    Mutant("adapter-no-out-bias", AD, "out = out + self.out_bias", "out = out", "models"),
    Mutant("projection-no-residual", HD, "return self.norm(h + self.residual(h))", "return self.norm(h)", "models"),
    # templates.py (the gallery stored in checkpoints, the template rule)
    Mutant(
        "gallery-raw-image-bank",
        TP,
        'image[s] = model.encode_templates(image_features=x, kind="image", normalize=False)',
        "image[s] = x",
        "templates",
    ),
    Mutant(
        "gallery-raw-text-bank",
        TP,
        'text = model.encode_templates(text_features=_tensor(text_in, device), kind="text", normalize=False)',
        "text = _tensor(text_in, device)",
        "templates",
    ),
    Mutant("combine-fused-no-inner-norm", TP, "fused = norm(image) + norm(text)", "fused = image + text", "templates"),
    # evaluate.py (reporting)
    Mutant(
        "aggregate-last-into-val-selected",
        EV,
        'label, ev.get("selection", "val-selected"), published)',
        'label, "val-selected", published)',
        "reporting",
    ),
    # bci/epocher.py (online epoching)
    Mutant("flat-strict", EP, "((hi - lo) <= reject.flat_ptp).any()", "((hi - lo) < reject.flat_ptp).any()", "epocher"),
    Mutant(
        "clip-abs-strict", EP, "-float(lo.min())) >= reject.clip_abs", "-float(lo.min())) > reject.clip_abs", "epocher"
    ),
    Mutant("nan-not-checked", EP, "if not np.isfinite(x).all():", "if False:", "epocher"),
    Mutant(
        "cut-one-sample-late",
        EP,
        'if status == "ok" and (stop > n_written or',
        'if status == "ok" and (stop >= n_written or',
        "epocher",
    ),
    Mutant("gap-end-ignored", EP, "if first < seg.start or stop > seg.stop:", "if first < seg.start:", "epocher"),
    Mutant("pending-dropped", EP, "self.pending = keep", "self.pending = []", "epocher"),
    Mutant("timeout-never", EP, "if now - received > self.marker_timeout_s:", "if False:", "epocher"),
    Mutant(
        "whitening-first-session",
        EP,
        "w.mean(axis=0) if session is None else w[session]",
        "w[0] if session is None else w[session]",
        "epocher",
    ),
    Mutant(
        "no-contiguous-fast-path",
        EP,
        "run = len(p) > 0 and bool(np.all(np.diff(p) == 1))",
        "run = False",
        "epocher",
        equivalent="the contiguous-slice read is a fast path; the fancy-index read returns the same samples",
    ),
    Mutant("epoch-count", EP, "self.n_epochs += len(raws)", "self.n_epochs += 1", "epocher"),
    Mutant(
        "cut-one-sample-early",
        EP,
        'if status == "ok" and (stop > n_written or',
        'if status == "ok" and (stop > n_written + 1 or',
        "epocher",
    ),
    Mutant("spin-waits-one-sample-short", EP, "stops.append(stop)", "stops.append(stop - 1)", "epocher"),
)


def copy_tree(root: Path, dest: Path) -> None:
    """Copy the tracked files of ``root`` as they are in its working tree (symlinks kept) into ``dest``."""
    files = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src, dst = root / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)


def run_tests(scratch: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str, str]:
    """``pytest -x -q`` on ``tests`` inside ``scratch``: (exit code, first failing test id or '', output tail)."""
    env = {**os.environ, "PYTHONPATH": str(scratch), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not gpu", *tests]
    try:
        proc = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timeout", ""
    found = re.search(r"^FAILED (\S+)", proc.stdout, re.M) or re.search(r"^ERROR (\S+)", proc.stdout, re.M)
    return proc.returncode, found.group(1) if found else "", (proc.stdout + proc.stderr)[-3000:]


def mutate(scratch: Path, m: Mutant) -> str:
    """Apply ``m`` in ``scratch``; return the original text (raises if ``old`` is not unique)."""
    path = scratch / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise ValueError(f"mutant {m.name}: snippet found {text.count(m.old)} times in {m.path}; update the mutant")
    path.write_text(text.replace(m.old, m.new))
    return text


def markdown(rows: list[dict]) -> str:
    killed = sum(r["status"] == "killed" for r in rows)
    equivalent = sum(bool(r["equivalent"]) for r in rows)
    stale = sum(r["status"] == "stale" for r in rows)
    scored = len(rows) - equivalent - stale
    lines = [
        f"Score: **{killed} / {scored}** non-equivalent mutants killed ({100 * killed / max(scored, 1):.0f} %); "
        f"{equivalent} equivalent" + (f"; {stale} stale (snippet no longer in the code)." if stale else "."),
        "",
        "| mutant | file | result | first failing test / reason |",
        "|---|---|---|---|",
    ]
    for r in rows:
        why = r["equivalent"] if r["status"] == "survived" and r["equivalent"] else r["test"]
        lines.append(f"| `{r['name']}` | `{r['path']}` | {r['status']} | {why} |")
    return "\n".join(lines) + "\n"


def run_mutant(scratch: Path, m: Mutant, timeout: float) -> dict:
    """Apply ``m`` in ``scratch``, run its tests and restore the file: one result row (``stale`` if ``old`` moved)."""
    row = {"name": m.name, "path": m.path, "status": "stale", "test": "", "equivalent": "", "seconds": 0}
    t0 = time.perf_counter()
    try:
        original = mutate(scratch, m)
    except ValueError as err:  # the code moved on: report the mutant as stale and keep going
        return {**row, "test": str(err)}
    try:
        rc, test, _ = run_tests(scratch, TESTS[m.tests], timeout)
    finally:
        (scratch / m.path).write_text(original)
    status = "survived" if rc == 0 else "killed"
    return {
        **row,
        "status": status,
        "test": test,
        "equivalent": m.equivalent,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=(), help="mutant names to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run")
    p.add_argument("--out", help="folder for mutation.json and mutation.md")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        print(f"mutation.py: error: --only: unknown mutants {sorted(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(
                f"{m.name:36s} {m.path:32s} {TESTS[m.tests]}" + (f"  [equivalent: {m.equivalent}]" * bool(m.equivalent))
            )
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="hmavd-mutation-") as tmp:
        scratch = Path(tmp)
        copy_tree(ROOT, scratch)
        for key in sorted({m.tests for m in chosen}):  # the unmutated code must pass first
            rc, test, tail = run_tests(scratch, TESTS[key], args.timeout)
            if rc != 0:
                print(tail, file=sys.stderr)
                print(
                    f"mutation.py: error: tests {TESTS[key]} fail before mutation ({test}); fix them first",
                    file=sys.stderr,
                )
                return 2
        for m in chosen:
            rows.append(run_mutant(scratch, m, args.timeout))
            r = rows[-1]
            print(f"{r['status']:8s} {m.name:36s} {r['test'] or m.equivalent}", flush=True)
    md = markdown(rows)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mutation.json").write_text(json.dumps(rows, indent=1))
        (out / "mutation.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
