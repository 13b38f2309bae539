"""Analyse the JSON of scripts/gpu_relu_check.py: theory vs 1/N-extrapolated Monte-Carlo.

For each relu point and entry (V_abcd = N Cov(Khat^L), M_ab = N (E Khat^L - K^L)) fits
the per-width estimates x_N +- se_N by weighted least squares:

    lin-all   x_N = a + b/N            over all widths
    lin-top3  x_N = a + b/N            over the 3 largest widths
    quad-all  x_N = a + b/N + c/N^2    over all widths

and prints the intercept a +- SE, the theory value and dev = (theory - a)/SE, plus
chi^2/dof of each fit (a bad linear chi^2 means curvature in 1/N: the small-N
extrapolation was biased).

    python scripts/analyse_relu_check.py relu_check.json [--markdown]
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def wls(x, y, se, deg):
    X = np.vander(np.asarray(x, float), deg + 1, increasing=True)
    w = 1.0 / np.asarray(se, float) ** 2
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    c = cov @ (X.T @ (w * np.asarray(y, float)))
    r = (np.asarray(y) - X @ c) / np.asarray(se)
    dof = max(len(y) - deg - 1, 1)
    return c[0], math_sqrt(cov[0, 0]), float(r @ r) / dof if len(y) > deg + 1 else float("nan")


def math_sqrt(v):
    return float(np.sqrt(max(v, 0.0)))


def entries(P):
    e = [("V", (0, 0, 0, 0)), ("V", (0, 1, 0, 1)), ("V", (0, 0, 1, 1)), ("M", (0, 0)), ("M", (0, 1))]
    if P == 3:
        e += [("V", (0, 1, 1, 2)), ("M", (1, 2)), ("M", (1, 1))]
    return e


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--write-doc", default=None, metavar="PATH",
                    help="also write the markdown table into PATH (e.g. docs/validation.md) between "
                         "<!-- relu-large-n --> markers")
    args = ap.parse_args(argv)
    if args.write_doc:
        import contextlib
        import io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main([args.json, "--markdown"])
        _write(args.write_doc, buf.getvalue(), args.json)
        args.markdown = True
    d = json.load(open(args.json))
    print(f"device {d.get('device')}, total {d.get('total_seconds', float('nan')):.0f} s" + ("\n" if args.markdown else ""))
    fits = [("lin-all", None, 1), ("lin-top3", 3, 1), ("quad-all", None, 2)]
    if args.markdown:
        print("| point | entry | theory | " + " | ".join(f"{f} (a +- SE, dev, chi2/dof)" for f, _, _ in fits)
              + " | x_N at largest N |")
        print("|---|---|---|" + "---|" * len(fits) + "---|")
    for name, rec in d["points"].items():
        Ns = sorted(int(n) for n in rec["widths"])
        P = len(rec["K0"])
        if not args.markdown:
            print(f"\n{name}: widths {Ns}, networks {[rec['widths'][str(n)]['S'] for n in Ns]}")
        for q, ix in entries(P):
            th = float(np.array(rec[f"{q}_theory"])[ix])
            x = np.array([np.array(rec["widths"][str(n)][q])[ix] for n in Ns])
            se = np.array([np.array(rec["widths"][str(n)][f"{q}_se"])[ix] for n in Ns])
            inv = 1.0 / np.array(Ns, float)
            cells = []
            for fname, top, deg in fits:
                sl = slice(-top, None) if top else slice(None)
                if len(x[sl]) < deg + 1:
                    cells.append("n/a")
                    continue
                a, sa, chi = wls(inv[sl], x[sl], se[sl], deg)
                cells.append(f"{a:.4f} +- {sa:.4f} ({(th - a) / sa:+.2f}, {chi:.2f})")
            last = f"{x[-1]:.4f} +- {se[-1]:.4f}"
            lab = f"{q}{''.join(map(str, ix))}"
            if args.markdown:
                print(f"| {name} | {lab} | {th:.4f} | " + " | ".join(cells) + f" | {last} |")
            else:
                per = "  ".join(f"N={n}:{v:.3f}+-{s:.3f}" for n, v, s in zip(Ns, x, se))
                print(f"  {lab:7s} theory {th:10.4f} | " + " | ".join(f"{f}: {c}" for (f, _, _), c in zip(fits, cells)))
                print(f"          {per}")


def _write(path, table, src, marker="<!-- relu-large-n -->"):
    import os
    text = ("## relu finite-width check at large N (scripts/gpu_relu_check.py + scripts/analyse_relu_check.py)\n\n"
            f"Source: {os.path.basename(src)}. Per entry: theory and the MC intercept of three weighted fits in 1/N "
            "(lin-all: a + b/N over all widths; lin-top3: over the 3 largest widths; quad-all: a + b/N + c/N^2), "
            "each as a +- SE (dev = (theory - a)/SE, chi^2/dof). M_N uses the control variate.\n\n" + table)
    from resscale._storage import write_marked_section
    write_marked_section(path, text, marker)


if __name__ == "__main__":
    main()
