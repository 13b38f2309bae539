"""One validation layer for the public API, and the input-layer kernel.

Every public function and CLI command validates its arguments with the
helpers below, so that bad input always gives a clear error naming the
parameter (never a raw NumPy/SciPy traceback, never a silent NaN). One rule
for types, applied everywhere:

* real parameters accept Python ``int``/``float`` and NumPy real scalars (or
  0-d real arrays); strings (also numeric ones such as ``"1"``), bytes,
  ``bool``, complex numbers, ``None`` (unless allowed) and containers are
  refused with :class:`ParameterTypeError` (a ``TypeError`` that is also a
  ``ValueError``);
* integer parameters (width, depth, workers, n_grid, ...) must be integral
  (``int``, NumPy integer, or a float with an integral value such as ``8.0``);
  ``8.5``, ``"8"``, ``[8]`` and ``True`` are refused;
* arrays (X, K0) must be real numeric: complex, string and object arrays are
  refused, not cast (NumPy would drop the imaginary part with only a warning).

Helpers (all return the validated, converted value):

``check_real(name, value, lo=None, hi=None, strict_lo=False, strict_hi=False, allow_none=False)``
``check_scalar(name, value, lo=None, hi=None, strict_lo=False)``  (alias of check_real)
``check_int(name, value, lo=None, hi=None, allow_none=False)``
``check_bool(name, value)``, ``check_choice(name, value, choices)``
``check_range(name, value, lo=0.0)``   exactly two finite increasing values > lo
``as_finite_array(name, value, ndim=None)``
``check_kernel(name, K0, positive_diagonal=True)``
``check_memory(name, n_bytes, what, limit_gb=None)``   refuse before allocating
``memory_limit_bytes()``
``check_work(name, n_flops, what)``   refuse a computation that would run for days
``check_depth(value)``   the number of layers, 1 <= depth <= MAX_DEPTH
``check_alphas(value, name="alphas")``   a grid of alphas (finite, >= 0, 1-D)
``scale_culprits(net, q0=None, K0=None, kernel_name="K0")``   names of huge scale parameters
``check_finite_result(what, arrays, net, ...)``   OverflowError naming the parameter, never inf/NaN

``input_kernel(net, X=None, K0=None)`` returns the layer-0 kernel (theory.md Eq. 1.5)

    K^0_ab = sigma_in2 * x_a . x_b / d + sigma_bin2

for data X of shape (P, d), or validates a directly given K0 (P, P): real,
finite, symmetric, positive semi-definite with a positive diagonal. Exactly
one of X and K0 is required.
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np

PSD_TOL = 1e-10
_DEFAULT_MEMORY_FRACTION = 0.25


class ParameterTypeError(TypeError, ValueError):
    """A parameter of the wrong type (also a ValueError, so ``except ValueError`` catches it)."""


class MemoryLimitError(ValueError, MemoryError):
    """A computation refused before allocating: its memory estimate exceeds the limit."""


class WorkLimitError(ValueError):
    """A computation refused before running: its work estimate exceeds the limit (RESSCALE_MAX_WORK)."""


# The layer recursions cost ~1e-5 s (mean field, P = 2) to ~1e-3 s (callable activations, response
# function) per layer; the package is used at depth up to 1e4 and tested to 1e5. Beyond 1e6 layers
# no computation finishes in reasonable time and the float64 layer sums (log S, log-scales)
# lose their relative precision, so ResNet refuses such depths (e.g. 10**40, or the float 1e308).
MAX_DEPTH = 10 ** 6
_SECONDS_PER_LAYER = 1e-5   # the cheapest layer (mean field, closed-form phi, P = 2): for the estimate
_DEFAULT_MAX_WORK = 1e16    # floating-point operations: about a day at 1e11 flop/s
_FLOPS_PER_SECOND = 1e10    # for the time estimate in messages (one core, NumPy)


def _describe(value) -> str:
    r = repr(value)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{r} ({type(value).__name__})"


# ------------------------------------------------------------------ scalars
def _real_scalar(name, value):
    """``value`` as a Python float, or ParameterTypeError naming ``name``."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise ParameterTypeError(f"{name} must be a real number, got {_describe(value)}")
    return float(value)


# smallest normal float64: a subnormal input variance q0 makes every arithmetic step ~100x slower
# (analytic_alpha at q0 = 5e-324 took 44 s), so q0 must be at least this
Q0_MIN = float(np.finfo(float).tiny)


def check_real(name, value, lo=None, hi=None, strict_lo=False, strict_hi=False, allow_none=False):
    """A finite float in [lo, hi] (open ends with ``strict_lo`` / ``strict_hi``); None if allowed."""
    if value is None and allow_none:
        return None
    v = _real_scalar(name, value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (strict_lo and v <= lo)):
        raise ValueError(f"{name} must be {'>' if strict_lo else '>='} {lo:g}, got {value!r}")
    if hi is not None and (v > hi or (strict_hi and v >= hi)):
        raise ValueError(f"{name} must be {'<' if strict_hi else '<='} {hi:g}, got {value!r}")
    return v


def check_scalar(name, value, lo=None, hi=None, strict_lo=False):
    """A finite float in [lo, hi] (or (lo, hi] with strict_lo); see :func:`check_real`."""
    return check_real(name, value, lo=lo, hi=hi, strict_lo=strict_lo)


def check_int(name, value, lo=None, hi=None, allow_none=False):
    """An integer in [lo, hi] (int, NumPy integer, or an integral float such as 8.0); None if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    rng = (f" >= {lo}" if lo is not None else "") + (f" and <= {hi}" if hi is not None else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise ParameterTypeError(f"{name} must be an integer{rng}, got {_describe(value)}")
    if isinstance(value, (float, np.floating)):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{name} must be an integer{rng}, got {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an integer{rng}, got {value!r}")
    return v


def check_bool(name, value) -> bool:
    """A bool (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def check_choice(name, value, choices):
    """One of ``choices`` (strings compared exactly)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_range(name, value, lo=0.0):
    """Exactly two finite values (a, b) with lo < a < b; returns (a, b) as floats."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ParameterTypeError(f"{name} must be a pair (low, high), got {_describe(value)}")
    if len(value) != 2:
        raise ValueError(f"{name} must be exactly two values (low, high), got {len(value)}: {value!r}")
    a = check_real(f"{name}[0] (low)", value[0], lo=lo, strict_lo=True)
    b = check_real(f"{name}[1] (high)", value[1])
    if not b > a:
        raise ValueError(f"{name} must be increasing (low < high), got {tuple(value)!r}")
    return a, b


# ------------------------------------------------------------------ arrays
def as_finite_array(name: str, value, ndim: int | None = None) -> np.ndarray:
    """A finite real float64 array (complex, string and object arrays refused), with ``name`` in errors."""
    if value is None:
        raise ParameterTypeError(f"{name} must be a real numeric array, got None")
    if isinstance(value, (str, bytes)):
        raise ParameterTypeError(f"{name} must be a real numeric array, got {_describe(value)}")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular numeric array: {exc}") from None
    kind = raw.dtype.kind
    if kind == "c":
        raise ParameterTypeError(f"{name} must be real, got a complex array (dtype {raw.dtype}); "
                                 "pass np.real(...) explicitly if the imaginary part is zero")
    if kind == "O":
        flat = raw.ravel()
        if not all(isinstance(v, (numbers.Real, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                   for v in flat):
            bad = next(v for v in flat if not isinstance(v, (numbers.Real, np.integer, np.floating))
                       or isinstance(v, (bool, np.bool_)))
            raise ParameterTypeError(f"{name} must be a real numeric array, it contains {_describe(bad)}")
    elif kind not in "biuf":
        raise ParameterTypeError(f"{name} must be a real numeric array, got dtype {raw.dtype}")
    arr = np.asarray(raw, dtype=float)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def check_kernel(name, K0=None, positive_diagonal: bool = True) -> np.ndarray:
    """Validate a (P, P) kernel: real, finite, symmetric, PSD (1e-10 relative), positive diagonal.

    ``check_kernel("K0", K0)``; the older order ``check_kernel(K0, "K0")`` is accepted too.
    Refuses complex input (not cast), NaN/inf, a non-square or asymmetric matrix, a negative
    eigenvalue and (with ``positive_diagonal``) a zero diagonal entry, for which the
    correlations c_ab = K_ab / sqrt(K_aa K_bb) are undefined.
    """
    if not isinstance(name, str):  # legacy order check_kernel(K0, name)
        name, K0 = (K0 if isinstance(K0, str) else "K0"), name
    K0 = as_finite_array(name, K0, ndim=2)
    P = K0.shape[0]
    if K0.shape != (P, P):
        raise ValueError(f"{name} must be square (P, P), got shape {K0.shape}")
    scale = float(np.max(np.abs(K0)))
    if scale > 1e300:
        raise ValueError(f"{name} has entries of magnitude {scale:.3g}: too large for float64 arithmetic")
    scale = max(scale, 1e-300)
    if not np.allclose(K0, K0.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError(f"{name} must be symmetric")
    if positive_diagonal:
        d = np.diag(K0)
        if np.any(d <= 0.0):
            i = int(np.argmin(d))
            raise ValueError(f"{name} must have a positive diagonal (every input a positive norm), "
                             f"got {name}[{i}, {i}] = {d[i]!r}")
    lam_min = float(np.linalg.eigvalsh(K0).min())
    if lam_min < -PSD_TOL * scale:
        raise ValueError(f"{name} must be positive semi-definite (smallest eigenvalue {lam_min:.3g})")
    return 0.5 * (K0 + K0.T)


# ------------------------------------------------------------------ memory
def _env_limit(var: str, unit: str):
    """The positive finite number in environment variable ``var``, or None when it is unset/empty."""
    env = os.environ.get(var)
    if not env:
        return None
    try:
        x = float(env)
    except ValueError:
        raise ValueError(f"{var} must be a number of {unit}, got {env!r}") from None
    if not x > 0 or not math.isfinite(x):
        raise ValueError(f"{var} must be a finite number > 0, got {env!r}")
    return x


def memory_limit_bytes() -> float:
    """Memory limit of :func:`check_memory`: RESSCALE_MAX_MEMORY_GB, else 25% of physical memory."""
    gb = _env_limit("RESSCALE_MAX_MEMORY_GB", "GB")
    if gb is not None:
        return gb * 1e9
    try:
        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 16e9
    return _DEFAULT_MEMORY_FRACTION * min(total, _cgroup_limit_bytes())


_CGROUP_FILES = ("/sys/fs/cgroup/memory.max",                     # cgroup v2
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes")   # cgroup v1


def _cgroup_limit_bytes() -> float:
    """The container's memory limit (cgroup v2 or v1), inf when there is none: inside a container
    SC_PHYS_PAGES reports the host's memory, and a job sized on that is killed by the OOM killer."""
    for path in _CGROUP_FILES:
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 2 ** 60:
            return float(text)
    return math.inf


def check_memory(name: str, n_bytes, what: str, limit_gb=None) -> float:
    """Refuse (MemoryLimitError, a ValueError) a computation whose estimate exceeds the limit.

    ``name`` is the parameter to change (e.g. "P (number of inputs)"), ``n_bytes`` the
    estimate, ``what`` a description ("response_function: the (P, P, P, P) tangent").
    The limit is ``limit_gb`` or :func:`memory_limit_bytes`. Returns the estimate in GB.
    """
    n_bytes = float(n_bytes)
    limit = memory_limit_bytes() if limit_gb is None else float(limit_gb) * 1e9
    if not n_bytes <= limit:
        raise MemoryLimitError(
            f"{what} would need about {n_bytes / 1e9:.3g} GB, above the limit of {limit / 1e9:.3g} GB "
            f"(default 25% of physical memory; set RESSCALE_MAX_MEMORY_GB to change it); reduce {name}")
    return n_bytes / 1e9


def max_work() -> float:
    """Work limit of :func:`check_work` in floating-point operations: RESSCALE_MAX_WORK, else 1e16."""
    w = _env_limit("RESSCALE_MAX_WORK", "floating-point operations")
    return _DEFAULT_MAX_WORK if w is None else w


def check_work(name: str, n_flops, what: str) -> float:
    """Refuse (WorkLimitError, a ValueError) a computation whose work estimate exceeds the limit.

    ``name`` is the parameter to change, ``n_flops`` the estimate in floating-point operations
    (may be a Python int of any size, or inf), ``what`` a description. The limit is
    RESSCALE_MAX_WORK (default 1e16, about a day on one core). Returns the estimate.
    """
    try:
        n = float(n_flops)
    except OverflowError:
        n = math.inf
    limit = max_work()
    if not n <= limit:
        raise WorkLimitError(
            f"{what} would need about {n:.3g} floating-point operations (~{n / _FLOPS_PER_SECOND:.3g} s at "
            f"{_FLOPS_PER_SECOND:.0e} flop/s), above the limit of {limit:.3g} (set RESSCALE_MAX_WORK to "
            f"change it); reduce {name}")
    return n


def check_depth(value, name: str = "depth") -> int:
    """The number of layers: an integer 1 <= depth <= MAX_DEPTH (10**6), with the time estimate."""
    v = check_int(name, value, lo=1)
    if v > MAX_DEPTH:
        raise ValueError(
            f"{name} must be <= {MAX_DEPTH:,} layers, got {value!r}: the layer recursions would take at "
            f"least ~{v * _SECONDS_PER_LAYER:.3g} s (~{_SECONDS_PER_LAYER:g} s per layer) and their float64 "
            f"layer sums lose precision beyond ~1e6 layers")
    return v


def check_alphas(value, name: str = "alphas") -> np.ndarray:
    """A grid of residual scalings: a scalar or a non-empty 1-D real array, finite and >= 0.

    Strings, bools, complex and object values are refused with a message naming ``name``
    (same type rule as every other parameter). Returns a 1-D float64 array.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{name} must be a real number or a 1-D array of them, got {_describe(value)}")
    if isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
        raise ParameterTypeError(f"{name} must contain real numbers, got {_describe(value)}")
    a = as_finite_array(name, value)
    a = np.atleast_1d(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-D array, got shape {a.shape}")
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0, got min {a.min()!r}")
    return a


_SCALE_NAMES = ("alpha", "sigma_w2", "sigma_b2", "sigma_in2", "sigma_bin2")


def scale_culprits(net=None, q0=None, K0=None, kernel_name: str = "K0", alphas=None,
                   threshold: float = 1e6) -> str:
    """A phrase naming the scale parameters of a call that are large (> threshold), for an
    overflow message: e.g. "sigma_w2 = 1e+200 (net), q0 = 1e+100". The parameters that set
    the kernel's scale are always listed at the end, so the message names every candidate."""
    big = []
    if net is not None:
        for n in _SCALE_NAMES:
            v = getattr(net, n, None)
            if v is not None and abs(float(v)) > threshold:
                big.append(f"{n} = {float(v):.3g} (net)")
    if q0 is not None and abs(float(q0)) > threshold:
        big.append(f"q0 = {float(q0):.3g}")
    if K0 is not None:
        m = float(np.max(np.abs(K0)))
        if m > threshold:
            big.append(f"{kernel_name} (largest kernel entry {m:.3g})")
    if alphas is not None:
        m = float(np.max(np.abs(alphas))) if np.size(alphas) else 0.0
        if m > threshold:
            big.append(f"alphas (up to {m:.3g})")
    return ", ".join(big)


def check_finite_result(what: str, arrays: dict, *, net=None, q0=None, K0=None, kernel_name: str = "K0",
                        advice: str = "") -> None:
    """Raise OverflowError (naming the parameters that set the scale) if any array is not finite.

    ``arrays`` maps a result's name (e.g. "V") to its array (None entries are skipped). Used by
    the numerics at their exit, so that no inf/NaN is returned without an error.
    """
    bad = [k for k, v in arrays.items() if v is not None and not np.all(np.isfinite(np.asarray(v, dtype=float)))]
    if not bad:
        return
    culprits = scale_culprits(net, q0=q0, K0=K0, kernel_name=kernel_name)
    cause = f"the large input(s) {culprits}" if culprits else "the scale of the inputs"
    raise OverflowError(
        f"{what}: {', '.join(bad)} not finite (overflow of float64), caused by {cause}; reduce the scale of "
        f"{kernel_name}, the variances sigma_w2 / sigma_b2 or alpha of net, or depth" + advice)


# ------------------------------------------------------------------ kernels
def input_kernel(net, X=None, K0=None) -> np.ndarray:
    """Layer-0 kernel from data X (P, d) through the random input layer, or a validated K0."""
    if (X is None) == (K0 is None):
        raise ValueError("exactly one of X (data, shape (P, d)) and K0 (kernel, shape (P, P)) is required")
    if K0 is not None:
        return check_kernel("K0", K0)
    X = as_finite_array("X", X)
    if X.ndim == 1:
        raise ValueError(f"X must be 2-D (P, d), got shape {X.shape}; use X[None, :] for one input")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (P, d), got shape {X.shape}")
    d = X.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", X, X)
        K = net.sigma_in2 * (X @ X.T) / d + net.sigma_bin2
    if not np.all(np.isfinite(sq)) or not np.all(np.isfinite(K)) or float(np.max(np.abs(K))) > 1e300:
        i = int(np.argmax(~np.isfinite(sq))) if not np.all(np.isfinite(sq)) else int(np.argmax(sq))
        raise ValueError(f"X is too large: the squared norm of row {i} (or the input kernel) overflows "
                         "float64; rescale X")
    diag = np.diag(K)
    if np.any(diag <= 0.0):
        i = int(np.argmin(diag))
        raise ValueError(f"X row {i} gives a zero input-layer variance (K0[{i}, {i}] = {diag[i]!r}: "
                         "a zero row with sigma_bin2 = 0, or sigma_in2 = sigma_bin2 = 0); "
                         "correlations are undefined")
    return 0.5 * (K + K.T)


def two_input_kernel(c0, q0=1.0) -> np.ndarray:
    """K0 for two inputs of equal norm q0 and correlation c0 (validated)."""
    c0 = check_real("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_real("q0", q0, lo=Q0_MIN)
    if q0 > 1e300:
        raise ValueError(f"q0 must be <= 1e300, got {q0!r}")
    return q0 * np.array([[1.0, c0], [c0, 1.0]])


def random_unit_kernel(P: int, seed: int = 0, d: int = 8) -> np.ndarray:
    """Unit-diagonal kernel of P random inputs: K = X X^T / d + 0.2 I for X ~ N(0, 1)^(P x d),
    normalised to K_aa = 1 (the P-growth benchmarks and tests of the finite-width node path)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(int(P), int(d)))
    K = X @ X.T / d + 0.2 * np.eye(int(P))
    s = np.sqrt(np.diag(K))
    return K / np.outer(s, s)
