#!/usr/bin/env python
"""Mutation check of the physics tests (issue 14).

Each mutant is a small change to the physics (a term of V, M, S_N, the finite-width
response, the reduced recursion or the simulator scaled by 0.9 / 1.1, or dropped). It is
applied, one at a time, to a *copy* of the repository in a temporary directory (the tree is
copied, git is not touched), and the test suite is run in that copy:

    python -m pytest -x -q -p no:cacheprovider tests/test_physics_power.py          (default suite:
    python -m pytest -x -q -p no:cacheprovider --ignore=<those files> tests           fast physics first)
    python -m pytest -x -q -p no:cacheprovider -m slow tests/test_physics_power_slow.py   (slow suite,
    python -m pytest -x -q -p no:cacheprovider -m slow --ignore=<those files> tests       if it survived)

with PYTHONPATH pointing at the copy (the script checks that ``resscale.__file__`` lies in
the copy). A mutant is "caught" when a suite fails, "survived" when both pass, and "stale"
when its source snippet is no longer found (counts as a failure: keep the list current when
the code changes; a new term gets its mutants). Before the mutants the unmutated copy must
pass both suites (the baseline; ``--skip-baseline`` to skip it).

Usage:
    python scripts/mutation_check.py                 # all mutants, table on stdout
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --only F_SELF_x1.1 --only R_T3_x1.05
    python scripts/mutation_check.py --jobs 2 --out docs/validation.md

Exit status: 0 if every mutant was caught, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- mutation:start -->", "<!-- mutation:end -->"
# fast physics tests run first so that caught mutants fail fast under -x
FIRST = ["tests/test_physics_power.py", "tests/test_two_layer.py", "tests/test_full_next_order.py",
         "tests/test_full_kinks.py"]
FIRST_SLOW = ["tests/test_physics_power_slow.py"]
TIMEOUT = 1800  # seconds per pytest run

FW = "resscale/finite_width/"
_SIG = "Sig = T[l] @ Sig @ T[l].T + s * (T[l] @ cross + cross.T @ T[l].T) + s * s * cov_nu(l, l)"
_CFK = 't = np.einsum("kij,kjl->il", A, CfK)\n        V = V + t + t.T'
_CCR = 't = np.einsum("bij,bjl,bml->im", A[kk], Ccross, A[mm])\n            V = V + t + t.T'
_Q = "Q[:P2, :P2] = (a ** 2 * t1 + a ** 3 * t3 + a ** 4 * t4).reshape(P2, P2)"
_SRC_MK = "src[iK(x, y)] += a * ("
_SRC_K = "src[:P2] = 0.5 * a * a * sw2 * sw2 * np.einsum"
_SRC_M = "src[P2:] = 0.5 * a * sw2 ** 2 * d2mu * vdiag"
_QKM = "QKm = a ** 2 * (np.einsum"
_QKM3 = "+ a ** 3 * np.transpose(T3, (1, 2, 0))"
_DM = "return lin + 0.5 * quad"
_OFF = "dM[:, :, c, d] = dM[:, :, d, c] = 0.5 * g"
_SW = "scale = math.sqrt(plan.net.sigma_w2 / N)"
_SB = "sb = math.sqrt(plan.net.sigma_b2)"
_GB = "b = 0.0 if sb == 0.0 else draw[:, N * K:].reshape(S, N, 1) * sb"
_GW = "return ops.matmul(G, R) * scale, b"

# (id, file, exact source snippet, replacement, description)
MUTANTS = [
    # ---- interpolated full-block path (interpolated.py, docs/theory.md Sec. 4.9)
    ("I_SELF_x1.1", FW + "interpolated.py", "s * (curv[l] + 2.0 * Sf[l])", "s * (curv[l] + 2.2 * Sf[l])",
     "interpolated M: self-interaction x1.1"),
    ("I_CURV_x0.9", FW + "interpolated.py", "s * (curv[l] + 2.0 * Sf[l])", "s * (0.9 * curv[l] + 2.0 * Sf[l])",
     "interpolated M: curvature Psi'':Sigma x0.9"),
    ("I_SIGX_x1.1", FW + "interpolated.py", "+ s * (T[l] @ X[l] + _tr(X[l]) @ _tr(T[l]))",
     "+ 1.1 * s * (T[l] @ X[l] + _tr(X[l]) @ _tr(T[l]))", "interpolated M: walk cross term X(l) in Sigma x1.1"),
    ("I_SIGD_x0.9", FW + "interpolated.py", "+ s * s * Cdiag[l]", "+ 0.9 * s * s * Cdiag[l]",
     "interpolated M: same-layer Cov(nu) in Sigma x0.9"),
    ("I_XI_x1.1", FW + "interpolated.py", "Y = s * Js[k] + Y @ T[k]", "Y = 1.1 * s * Js[k] + Y @ T[k]",
     "interpolated M: self-interaction chain Xi x1.1"),
    ("I_VROW_x1.1", FW + "interpolated.py", 't = np.einsum("kij,kjl->il", A[:L - 1], Rall)',
     't = 1.1 * np.einsum("kij,kjl->il", A[:L - 1], Rall)', "interpolated V: cross-layer row sums x1.1"),
    ("I_CFK_x0.9", FW + "interpolated.py", 't = np.einsum("kij,kjl->il", A, CfK)',
     't = 0.9 * np.einsum("kij,kjl->il", A, CfK)', "interpolated V: Cov(f, hh) term x0.9"),
    ("I_DIAG_x1.1", FW + "interpolated.py", 'np.einsum("kij,kjl,kml->im", A, Cdiag, A, optimize=True)',
     '1.1 * np.einsum("kij,kjl,kml->im", A, Cdiag, A, optimize=True)', "interpolated V: same-layer term x1.1"),
    # ---- full block M (full.py)
    ("F_SELF_x1.1", FW + "full.py", "Msrc[l] = curv + 2.0 * selfterm", "Msrc[l] = curv + 2.2 * selfterm",
     "full M: self-interaction term x1.1"),
    ("F_SELF_x0.9", FW + "full.py", "Msrc[l] = curv + 2.0 * selfterm", "Msrc[l] = curv + 1.8 * selfterm",
     "full M: self-interaction term x0.9"),
    ("F_SELF_drop", FW + "full.py", "Msrc[l] = curv + 2.0 * selfterm", "Msrc[l] = curv + 0.0 * selfterm",
     "full M: self-interaction dropped"),
    ("F_XI_x1.1", FW + "full.py", "acc = acc + Js[m] @ (s * chi)", "acc = acc + 1.1 * Js[m] @ (s * chi)",
     "full M: self-interaction chain Xi (i > k part) x1.1"),
    ("F_XI_drop", FW + "full.py", "acc = acc + Js[m] @ (s * chi)", "acc = acc + 0.0 * Js[m] @ (s * chi)",
     "full M: self-interaction chain Xi (i > k part) dropped"),
    ("F_CURV_x0.9", FW + "full.py", "Msrc[l] = curv + 2.0 * selfterm", "Msrc[l] = 0.9 * curv + 2.0 * selfterm",
     "full M: curvature Psi'':Sigma x0.9"),
    ("F_CURV_x1.1", FW + "full.py", "Msrc[l] = curv + 2.0 * selfterm", "Msrc[l] = 1.1 * curv + 2.0 * selfterm",
     "full M: curvature Psi'':Sigma x1.1"),
    ("F_CURV_drop", FW + "full.py", "Msrc[l] = curv + 2.0 * selfterm", "Msrc[l] = 0.0 * curv + 2.0 * selfterm",
     "full M: curvature Psi'':Sigma dropped"),
    ("F_HESS_x1.1", FW + "linalg.py", "H[:, :, c * P + d] = (Jp - Jm) / (2 * h)",
     "H[:, :, c * P + d] = 1.1 * (Jp - Jm) / (2 * h)", "Psi'' (_hess_G) x1.1 (full and reduced curvature)"),
    ("F_SIGX_drop", FW + "full.py", _SIG, _SIG.replace("+ s * (T[l]", "+ 0.0 * s * (T[l]"),
     "full M: walk cross term Cov(k1, nu) dropped from the Sigma update"),
    ("F_SIGX_x0.9", FW + "full.py", _SIG, _SIG.replace("+ s * (T[l]", "+ 0.9 * s * (T[l]"),
     "full M: walk cross term Cov(k1, nu) in Sigma x0.9"),
    ("F_SIGX_x1.1", FW + "full.py", _SIG, _SIG.replace("+ s * (T[l]", "+ 1.1 * s * (T[l]"),
     "full M: walk cross term Cov(k1, nu) in Sigma x1.1"),
    ("F_SIGN_x0.9", FW + "full.py", _SIG, _SIG.replace("+ s * s * cov_nu", "+ 0.9 * s * s * cov_nu"),
     "full M: same-layer Cov(nu) in Sigma x0.9"),
    ("F_SIGN_x1.1", FW + "full.py", _SIG, _SIG.replace("+ s * s * cov_nu", "+ 1.1 * s * s * cov_nu"),
     "full M: same-layer Cov(nu) in Sigma x1.1"),
    ("F_M_x1.1", FW + "full.py", "M = 0.5 * Ek2", "M = 0.55 * Ek2", "full/feedforward M: overall x1.1"),
    # ---- full block V (full.py)
    ("F_VCKK_x1.1", FW + "full.py", "V_ind = CKK + diag_part", "V_ind = 1.1 * CKK + diag_part",
     "full V: output term Cov(h^L h^L) x1.1"),
    ("F_VDIAG_x0.9", FW + "full.py", "V_ind = CKK + diag_part", "V_ind = CKK + 0.9 * diag_part",
     "full V: same-layer driver term x0.9"),
    ("F_VCFK_x0.9", FW + "full.py", _CFK, _CFK.replace("V = V + t + t.T", "V = V + 0.9 * (t + t.T)"),
     "full V: Cov(f(h^k), h^L h^L) term x0.9"),
    ("F_VCFK_x1.1", FW + "full.py", _CFK, _CFK.replace("V = V + t + t.T", "V = V + 1.1 * (t + t.T)"),
     "full V: Cov(f(h^k), h^L h^L) term x1.1"),
    ("F_VCROSS_x0.9", FW + "full.py", _CCR, _CCR.replace("V = V + t + t.T", "V = V + 0.9 * (t + t.T)"),
     "full V: cross-layer Cov(f(h^k), f(h^m)) x0.9"),
    ("F_VCROSS_x1.1", FW + "full.py", _CCR, _CCR.replace("V = V + t + t.T", "V = V + 1.1 * (t + t.T)"),
     "full V: cross-layer Cov(f(h^k), f(h^m)) x1.1"),
    # ---- reduced block (reduced.py)
    ("R_MK_x1.05", FW + "reduced.py", _SRC_MK, "src[iK(x, y)] += 1.05 * a * (",
     "reduced M: m-K coupling source x1.05"),
    ("R_MK_x0.9", FW + "reduced.py", _SRC_MK, "src[iK(x, y)] += 0.9 * a * (", "reduced M: m-K coupling source x0.9"),
    ("R_MK_x1.1", FW + "reduced.py", _SRC_MK, "src[iK(x, y)] += 1.1 * a * (", "reduced M: m-K coupling source x1.1"),
    ("R_MK_drop", FW + "reduced.py", _SRC_MK, "src[iK(x, y)] += 0.0 * a * (",
     "reduced M: m-K coupling source dropped"),
    ("R_CURV_x0.9", FW + "reduced.py", _SRC_K, _SRC_K.replace("0.5 * a", "0.45 * a"),
     "reduced M: curvature source Psi''(Z):Sigma_KK x0.9"),
    ("R_CURV_x1.1", FW + "reduced.py", _SRC_K, _SRC_K.replace("0.5 * a", "0.55 * a"),
     "reduced M: curvature source Psi''(Z):Sigma_KK x1.1"),
    ("R_SRCM_x0.9", FW + "reduced.py", _SRC_M, _SRC_M.replace("0.5 * a", "0.45 * a"),
     "reduced M: mean-channel source mu'':Sigma x0.9"),
    ("R_SRCM_x1.1", FW + "reduced.py", _SRC_M, _SRC_M.replace("0.5 * a", "0.55 * a"),
     "reduced M: mean-channel source mu'':Sigma x1.1"),
    ("R_T1_x0.9", FW + "reduced.py", _Q, _Q.replace("(a ** 2 * t1", "(0.9 * a ** 2 * t1"),
     "reduced V: alpha^2 K x C noise term x0.9"),
    ("R_T1_x1.1", FW + "reduced.py", _Q, _Q.replace("(a ** 2 * t1", "(1.1 * a ** 2 * t1"),
     "reduced V: alpha^2 K x C noise term x1.1"),
    ("R_T3_x1.05", FW + "reduced.py", _Q, _Q.replace("+ a ** 3 * t3", "+ 1.05 * a ** 3 * t3"),
     "reduced V: alpha^3 t3 term x1.05 (non-odd phi only)"),
    ("R_T3_x0.9", FW + "reduced.py", _Q, _Q.replace("+ a ** 3 * t3", "+ 0.9 * a ** 3 * t3"),
     "reduced V: alpha^3 t3 term x0.9"),
    ("R_T3_x1.1", FW + "reduced.py", _Q, _Q.replace("+ a ** 3 * t3", "+ 1.1 * a ** 3 * t3"),
     "reduced V: alpha^3 t3 term x1.1"),
    ("R_T4_x0.9", FW + "reduced.py", _Q, _Q.replace("+ a ** 4 * t4", "+ 0.9 * a ** 4 * t4"),
     "reduced V: alpha^4 (E4 - GG) term x0.9"),
    ("R_T4_x1.1", FW + "reduced.py", _Q, _Q.replace("+ a ** 4 * t4", "+ 1.1 * a ** 4 * t4"),
     "reduced V: alpha^4 (E4 - GG) term x1.1"),
    ("R_QKM_x1.1", FW + "reduced.py", _QKM, "QKm = 1.1 * a ** 2 * (np.einsum",
     "reduced: Q_Km alpha^2 term x1.1"),
    ("R_QKM3_x1.1", FW + "reduced.py", _QKM3, "+ 1.1 * a ** 3 * np.transpose(T3, (1, 2, 0))",
     "reduced: Q_Km alpha^3 term x1.1"),
    ("R_QMM_x1.1", FW + "reduced.py", "Q[P2:, P2:] = a ** 2 * C", "Q[P2:, P2:] = 1.1 * a ** 2 * C",
     "reduced: Q_mm x1.1"),
    ("R_JMU_x1.1", FW + "reduced.py", "J[iK(x, y), iM(x)] += a * mu[y]", "J[iK(x, y), iM(x)] += 1.1 * a * mu[y]",
     "reduced recursion: drift Jacobian dK/dm x1.1"),
    # ---- finite-width sensitivity S_N (sensitivity.py)
    ("S_HESS_x1.1", FW + "sensitivity.py", _DM, "return lin + 0.55 * quad", "S_N: delta-method 1/2 Hess c : V x1.1"),
    ("S_HESS_x0.9", FW + "sensitivity.py", _DM, "return lin + 0.45 * quad", "S_N: delta-method 1/2 Hess c : V x0.9"),
    ("S_LIN_x1.1", FW + "sensitivity.py", _DM, "return 1.1 * lin + 0.5 * quad", "S_N: grad c . M x1.1"),
    ("S_LIN_x0.9", FW + "sensitivity.py", _DM, "return 0.9 * lin + 0.5 * quad", "S_N: grad c . M x0.9"),
    # ---- finite-width response (response.py)
    ("RESP_OFF_x2", FW + "response.py", _OFF, "dM[:, :, c, d] = dM[:, :, d, c] = 1.0 * g",
     "finite-width response dM/dK0: off-diagonal x2"),
    ("RESP_OFF_x1.1", FW + "response.py", _OFF, "dM[:, :, c, d] = dM[:, :, d, c] = 0.55 * g",
     "finite-width response dM/dK0: off-diagonal x1.1"),
    ("RESP_DIAG_x1.1", FW + "response.py", "dM[:, :, c, c] = g", "dM[:, :, c, c] = 1.1 * g",
     "finite-width response dM/dK0: diagonal x1.1"),
    ("RESP_N_x0.9", FW + "response.py", "return chi + dM / width", "return chi + 0.9 * dM / width",
     "finite-width response: 1/N term x0.9"),
    # ---- simulator (simulation_samplers.py)
    ("SIM_W_x1.1", "resscale/simulation_samplers.py", _SW, "scale = math.sqrt(1.1 * plan.net.sigma_w2 / N)",
     "simulator: weight variance x1.1 (both samplers)"),
    ("SIM_W_x0.9", "resscale/simulation_samplers.py", _SW, "scale = math.sqrt(0.9 * plan.net.sigma_w2 / N)",
     "simulator: weight variance x0.9 (both samplers)"),
    ("SIM_B_x1.1", "resscale/simulation_samplers.py", _SB, "sb = math.sqrt(1.1 * plan.net.sigma_b2)",
     "simulator: bias variance x1.1 (both samplers)"),
    ("SIM_B_x0.9", "resscale/simulation_samplers.py", _SB, "sb = math.sqrt(0.9 * plan.net.sigma_b2)",
     "simulator: bias variance x0.9 (both samplers)"),
    ("SIM_GRAM_B_x1.1", "resscale/simulation_samplers.py", _GB, _GB + " * 1.1 ** 0.5",
     "gram sampler (default): bias variance x1.1"),
    ("SIM_GRAM_W_x1.1", "resscale/simulation_samplers.py", _GW, "return ops.matmul(G, R) * scale * 1.1 ** 0.5, b",
     "gram sampler (default): weight variance x1.1"),
    # ---- two-layer block (resscale/blocks.py TwoLayerBlock, finite_width/two_layer.py; Eq. 3.6, 4.70-4.75)
    ("T_HIDDEN_x1.1", FW + "two_layer.py", "t_hidden = alpha ** 4 * sigma_w2 ** 2 * (E4",
     "t_hidden = 1.1 * alpha ** 4 * sigma_w2 ** 2 * (E4", "two_layer V: hidden-layer (Ghat) noise x1.1"),
    ("T_WISHART_x1.1", FW + "two_layer.py", "return (t_cross + t_wishart + t_hidden)",
     "return (t_cross + 1.1 * t_wishart + t_hidden)", "two_layer V: Wishart noise of the branch x1.1"),
    ("T_CROSS_x1.1", FW + "two_layer.py", "return (t_cross + t_wishart + t_hidden)",
     "return (1.1 * t_cross + t_wishart + t_hidden)", "two_layer V: stream x branch noise x1.1"),
    ("T_CURV_x1.1", FW + "two_layer.py", "mvec = J @ mvec + 0.5 * a * a * sw2 ** 3",
     "mvec = J @ mvec + 0.55 * a * a * sw2 ** 3", "two_layer M: curvature G'':V x1.1"),
    ("T_JAC_x1.1", FW + "two_layer.py", "J = eye + a * a * sw2 * sw2 * JG", "J = eye + 1.1 * a * a * sw2 * sw2 * JG",
     "two_layer V/M: drift Jacobian x1.1"),
    ("T_TANGENT_x1.1", "resscale/blocks.py", "return JK + net.alpha * net.alpha * sw2 * sw2 * tangent_G(JK, A, Ba, Bb), Jm",
     "return JK + 1.1 * net.alpha * net.alpha * sw2 * sw2 * tangent_G(JK, A, Ba, Bb), Jm",
     "two_layer response tangent x1.1"),
    ("T_SENS_x1.1", "resscale/blocks.py", "np.log1p(a2 * sw2 * sw2 * A))", "np.log1p(1.1 * a2 * sw2 * sw2 * A))",
     "two_layer two-input sensitivity factor x1.1"),
    ("T_CONT_x1.1", "resscale/blocks.py", "sw2 * G + sb2, sw2 * sw2 * A", "sw2 * G + sb2, 1.1 * sw2 * sw2 * A",
     "two_layer continuum flow slope x1.1 (analytic alpha*)"),
    ("T_MF_BIAS_x1.1", "resscale/blocks.py", "(sw2 * layout.G(net.phi, sw2 * K + sb2) + sb2), m",
     "(sw2 * layout.G(net.phi, sw2 * K + sb2) + 1.1 * sb2), m", "two_layer mean field: output bias x1.1"),
    ("T_SIM_V_x1.1", "resscale/blocks.py", "h = h + alpha * (Y2[..., :P] + b2)",
     "h = h + alpha * (1.1 ** 0.5 * Y2[..., :P] + b2)", "two_layer simulator: V-layer variance x1.1"),
    # ---- next order in 1/N (next_order.py generic recursion, chains.py engines; docs/theory.md Sec. 4.12)
    ("N_T3T2_x1.1", FW + "next_order.py", 'np.einsum("pijk,ijk->p", T3, t2) / 6.0', 'np.einsum("pijk,ijk->p", T3, t2) / 6.0 * 1.1',
     "next order a2: 1/6 T3:t2 x1.1"),
    ("N_T4_x1.1", FW + "next_order.py", '0.125 * np.einsum("pijkl,ij,kl->p", T4, c1, c1)', '0.1375 * np.einsum("pijkl,ij,kl->p", T4, c1, c1)',
     "next order a2: 1/8 T4[c1, c1] x1.1"),
    ("N_HH_x1.1", FW + "next_order.py", 'HH = 0.5 * np.einsum(', 'HH = 0.55 * np.einsum(', "next order c2: 1/2 H c1 c1 H x1.1"),
    ("N_DQ_x1.1", FW + "next_order.py", '+ np.einsum("pqj,j->pq", dQ, a1) + hQ2 + R)', '+ 1.1 * np.einsum("pqj,j->pq", dQ, a1) + hQ2 + R)',
     "next order c2: Q'.a1 x1.1"),
    ("N_FF_T_x1.1", FW + "chains.py", 'T = net.sigma_w2 ** 3 * k3[0][P:, P:, P:]', 'T = 1.1 * net.sigma_w2 ** 3 * k3[0][P:, P:, P:]',
     "feed-forward chain: phi-step third cumulant T x1.1"),
    ("N_FF_READ_x1.1", FW + "chains.py", 'return self._to_x2(np.einsum("eac,ebd->eabcd", S, S)',
     'return self._to_x2(1.1 * np.einsum("eac,ebd->eabcd", S, S)', "feed-forward chain: Wishart readout noise (one term) x1.1"),
    # full block, next order (Sec. 4.12.5): V-statistic weights, moment tensors, tagged neuron, jets, controls
    ("FN_P1_x1.1", FW + "full_next_order.py", "V1 = (sym(0.5 * (o(f1x, f2xx) + o(f1y, f2yy)))",
     "V1 = (1.1 * sym(0.5 * (o(f1x, f2xx) + o(f1y, f2yy)))", "full next order V1: sym E f1 f2(X,X) x1.1"),
    ("FN_P2_x1.1", FW + "full_next_order.py", "+ 0.5 * o(f2xy, f2xy)", "+ 0.55 * o(f2xy, f2xy)",
     "full next order V1: 1/2 E f2(X,Y)^2 x1.1"),
    ("FN_P3_x1.1", FW + "full_next_order.py", "+ sym(0.5 * (o(f1x, f3xyy) + o(f1y, f3yxx))))",
     "+ 1.1 * sym(0.5 * (o(f1x, f3xyy) + o(f1y, f3yxx))))", "full next order V1: sym E f1 f3(X,Y,Y) x1.1"),
    ("FN_M3_x1.1", FW + "full_next_order.py", "M2 = f3xxx / 6.0 + f4 / 8.0", "M2 = 1.1 * f3xxx / 6.0 + f4 / 8.0",
     "full next order M2: 1/6 E f3(X,X,X) x1.1"),
    ("FN_M4_x1.1", FW + "full_next_order.py", "M2 = f3xxx / 6.0 + f4 / 8.0", "M2 = f3xxx / 6.0 + 1.1 * f4 / 8.0",
     "full next order M2: 1/8 E f4(X,X,Y,Y) x1.1"),
    ("FN_K3_x1.1", FW + "full_next_order.py", "+ pair + pair.transpose(0, 1, 3, 2) + pair.transpose(0, 3, 2, 1)",
     "+ 1.1 * pair + pair.transpose(0, 1, 3, 2) + pair.transpose(0, 3, 2, 1)",
     "full next order kappa3 (S_N order 2): one f1 f1 f2 placement x1.1"),
    ("FN_TENS_x1.1", FW + "full_next_order.py", "inner = sum(A[k, p, q] * d[2][q] for q in range(K5 + 1 - k - p))",
     "inner = sum((1.1 if k + p + q == 2 else 1.0) * A[k, p, q] * d[2][q] for q in range(K5 + 1 - k - p))",
     "full next order: second-order moment tensors of G (Eq. 4.106) x1.1"),
    ("FN_TAG_x1.05", FW + "full_next_order.py", 'x = x + a * np.einsum("bijc,bj->bic", Lc, seeds_x[:, l])',
     'x = x + 1.05 * a * np.einsum("bijc,bj->bic", Lc, seeds_x[:, l])', "full next order: tagged neuron step x1.05"),
    ("FN_OUT_x1.05", FW + "full_next_order.py",
     "return (J.mul(wP[:, None, None], Kj) + J.mul(t[:, None, None], J.outer(x, x))",
     "return (J.mul(wP[:, None, None], Kj) + 1.05 * J.mul(t[:, None, None], J.outer(x, x))",
     "full next order: tagged neuron readout x1.05"),
    ("FN_CV_x1.05", FW + "full_next_order.py", "known.append(np.asarray(V, dtype=float)",
     "known.append(1.05 * np.asarray(V, dtype=float)", "full next order: control-variate mean of V x1.05"),
    ("FN_JET3_x1.1", FW + "jets.py", "out = out + (derivs[k] / math.factorial(k))[..., None] * pw[k]",
     "out = out + ((1.1 if k == 3 else 1.0) * derivs[k] / math.factorial(k))[..., None] * pw[k]",
     "jets: third Taylor term of composed functions x1.1"),
    # relu in the full block (Sec. 4.12.6): arc-cosine jets, kink weights, delta' markers, relu^2 diagonal
    ("KN_GAA_x1.1", FW + "full_kinks.py", "G[:, a, a] = 0.5 * Kj[:, a, a]", "G[:, a, a] = 0.55 * Kj[:, a, a]",
     "relu full next order: arc-cosine G_aa jet x1.1"),
    ("KN_ACOS3_x1.1", FW + "full_kinks.py", "g.append(rho * g[0] / s)", "g.append(1.1 * rho * g[0] / s)",
     "relu full next order: third derivative of the arc-cosine J x1.1"),
    ("KN_P0_x1.1", FW + "full_kinks.py", "p0 = 1.0 / math.sqrt(2.0 * math.pi * var)",
     "p0 = 1.1 / math.sqrt(2.0 * math.pi * var)", "relu kink terms: density at the kink x1.1"),
    ("KN_DPRIME_x1.1", FW + "full_kinks.py", "m2.append(np.full(n, -sgn / h))", "m2.append(np.full(n, -1.1 * sgn / h))",
     "relu kink terms: delta' finite-difference marker x1.1"),
    ("KN_SQ3_x1.1", FW + "full_kinks.py", "sq[3] = 2.0 * d[2]", "sq[3] = 2.2 * d[2]",
     "relu kink terms: delta of relu^2 on the diagonal x1.1"),
]

_IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.egg-info", "build", "dist",
                                 ".venv", "venv", "*.pyc")
_procs = set()
_procs_lock = threading.Lock()
_tmpdirs = set()
_STOP = threading.Event()  # set on Ctrl-C: no new pytest runs are started


SRC = ROOT  # what each mutant copies: a snapshot of ROOT taken at start (others may edit ROOT meanwhile)


def _copy_tree(dst):
    shutil.copytree(SRC, dst, ignore=_IGNORE, symlinks=True)


def _run(cmd, cwd, timeout):
    env = dict(os.environ, PYTHONPATH=str(cwd), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    if _STOP.is_set():
        return 130, "[interrupted]"
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    with _procs_lock:
        _procs.add(p)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        _kill(p)
        out, _ = p.communicate()
        return 124, (out or "") + "\n[timeout]"
    finally:
        with _procs_lock:
            _procs.discard(p)


def _kill(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


QUICK = False  # --quick: only the FIRST files (development aid; not a mutation score)


def _suites(copy):
    first = [f for f in FIRST if (copy / f).is_file()]
    base = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    if QUICK:
        return [("quick", base + first)]
    first_slow = [f for f in FIRST_SLOW if (copy / f).is_file()]
    # pytest de-duplicates "file dir" into directory order, so the fast physics files run as their
    # own step and are then ignored: together the two steps are exactly the suite
    ign = [f"--ignore={f}" for f in first + first_slow]
    out = []
    if first:
        out.append(("default", base + first))
    out.append(("default", base + ign + ["tests"]))
    if first_slow:
        out.append(("slow", base + ["-m", "slow"] + first_slow))
    out.append(("slow", base + ["-m", "slow"] + ign + ["tests"]))
    return out


def _last_line(out):
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def _check_import(copy):
    rc, out = _run([sys.executable, "-c", "import resscale; print(resscale.__file__)"], copy, 120)
    path = out.strip().splitlines()[-1] if out.strip() else ""
    if rc != 0 or not Path(path).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the copy's package is not the one imported: {out.strip()!r}")


def run_one(mutant, timeout=TIMEOUT, keep_going=False):
    """Apply one mutant (or None: baseline) to a fresh copy and run the suites. Returns a result dict."""
    mid = "baseline" if mutant is None else mutant[0]
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f"resscale_mut_{mid}_"))
    _tmpdirs.add(tmp)
    try:
        copy = tmp / "repo"
        _copy_tree(copy)
        if mutant is not None:
            _, rel, old, new, _ = mutant
            f = copy / rel
            src = f.read_text() if f.is_file() else ""
            n = src.count(old)
            if n != 1:
                return dict(id=mid, result="stale", stage="-", detail=f"snippet found {n} times", time=time.time() - t0)
            f.write_text(src.replace(old, new))
        _check_import(copy)
        detail, stage = "", "-"
        for name, cmd in _suites(copy):
            rc, out = _run(cmd, copy, timeout)
            detail = _last_line(out)
            if rc not in (0, 5):            # 5: no tests collected in this step
                res = "caught" if mutant is not None else "FAILED"
                if rc == 124:
                    detail = "timeout"
                return dict(id=mid, result=res, stage=name, detail=detail, time=time.time() - t0)
        return dict(id=mid, result="survived" if mutant is not None else "passed", stage=stage, detail=detail,
                    time=time.time() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _tmpdirs.discard(tmp)


def table(results, mutants):
    desc = {m[0]: (m[1], m[4]) for m in mutants}
    rows = ["| mutant | file | change | result | caught by | time |", "|---|---|---|---|---|---|"]
    for r in results:
        f, d = desc.get(r["id"], ("", ""))
        rows.append(f"| {r['id']} | {f.replace('resscale/', '')} | {d} | {r['result']} | {r['stage']} | "
                    f"{r['time']:.0f} s |")
    n = len(results)
    c = sum(r["result"] == "caught" for r in results)
    s = sum(r["result"] == "survived" for r in results)
    st = sum(r["result"] == "stale" for r in results)
    score = f"**Score: {c}/{n} caught** ({s} survived, {st} stale)."
    return "\n".join(rows) + "\n\n" + score


def write_out(path, text):
    path = Path(path)
    block = f"{START}\n{text}\n{END}"
    doc = path.read_text() if path.is_file() else ""
    if START in doc and END in doc:
        pre, rest = doc.split(START, 1)
        _, post = rest.split(END, 1)
        doc = pre + block + post
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


def _cleanup():
    _STOP.set()
    with _procs_lock:
        procs = list(_procs)
    for p in procs:
        _kill(p)
    for t in list(_tmpdirs):
        shutil.rmtree(t, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", action="append", default=[], help="run only this mutant id (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    ap.add_argument("--out", help="write the table into this markdown file between the mutation markers")
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated suites first")
    ap.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per pytest run")
    ap.add_argument("--quick", action="store_true",
                    help="run only the fast physics files (development aid, implies --skip-baseline)")
    args = ap.parse_args(argv)

    def _term(signum, frame):      # SIGTERM: clean up like Ctrl-C
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    global QUICK
    QUICK = args.quick
    if args.quick:
        args.skip_baseline = True
    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m[0] for m in MUTANTS}
        if unknown:
            ap.error(f"unknown mutant id(s): {', '.join(sorted(unknown))}")
        mutants = [m for m in MUTANTS if m[0] in args.only]
    if args.list:
        for m in mutants:
            print(f"{m[0]:18s} {m[1]:38s} {m[4]}")
        return 0
    t0 = time.time()
    global SRC
    try:
        snap = Path(tempfile.mkdtemp(prefix="resscale_mut_snapshot_"))
        _tmpdirs.add(snap)
        shutil.copytree(ROOT, snap / "repo", ignore=_IGNORE, symlinks=True)
        SRC = snap / "repo"
        if not args.skip_baseline:
            bf = ThreadPoolExecutor(max_workers=1)
            fut = bf.submit(run_one, None, args.timeout)
            try:
                while not fut.done():
                    time.sleep(0.2)
            finally:
                bf.shutdown(wait=False, cancel_futures=True)
            b = fut.result()
            print(f"baseline: {b['result']} ({b['time']:.0f} s) {b['detail']}", flush=True)
            if b["result"] != "passed":
                print("the unmutated suite does not pass; mutation scores would be meaningless", file=sys.stderr)
                return 2
        results = {}

        def job(m):
            r = run_one(m, args.timeout)
            if _STOP.is_set():
                return r
            print(f"{r['id']:18s} {r['result']:9s} {r['stage']:8s} {r['time']:6.0f} s  {r['detail']}", flush=True)
            results[m[0]] = r
            return r

        ex = ThreadPoolExecutor(max_workers=max(1, args.jobs))
        futs = [ex.submit(job, m) for m in mutants]
        try:
            while not all(f.done() for f in futs):
                time.sleep(0.2)           # the main thread stays responsive to Ctrl-C
        finally:
            _STOP.set()
            ex.shutdown(wait=False, cancel_futures=True)
        for f in futs:
            f.result()
    except KeyboardInterrupt:
        _cleanup()
        print("interrupted; child processes killed, temporary copies removed", file=sys.stderr)
        return 130
    finally:
        _cleanup()
    ordered = [results[m[0]] for m in mutants]
    text = table(ordered, mutants)
    text += f" Total wall time {time.time() - t0:.0f} s (jobs = {args.jobs})."
    print(text)
    if args.out:
        write_out(args.out, text)
    return 0 if all(r["result"] == "caught" for r in ordered) else 1


if __name__ == "__main__":
    sys.exit(main())
