"""The trainable MLP-ResNet of the SPEC family and one training run (docs/training.md).

:func:`build_model` (SPEC initialisation of a :class:`~resscale.network.ResNet`), :class:`TrainConfig`
(everything but depth, alpha, seed) and :func:`train_run` (one (depth, alpha, seed) trained on a
dataset of :mod:`resscale.datasets`, a JSON-friendly record). torch is imported inside functions.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache

from .blocks import BLOCKS, get_block
from .datasets import check_dataset_name, load_dataset
from .network import ResNet

OPTIMIZERS = ("adam", "sgd")
READOUTS = ("normal", "zero")
TORCH_ACTIVATIONS = ("erf", "tanh", "relu", "linear", "gelu")


# ------------------------------------------------------------------ helpers
def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("training needs PyTorch: pip install 'resscale[train]' (or pip install torch)") from exc
    return torch


def resolve_device(device: str = "cpu") -> str:
    """``cpu``, ``cuda`` or ``auto`` (cuda when available, else cpu)."""
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cpu":
        return "cpu"
    torch = _torch()
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    return "cpu"


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------ model
def torch_activation(name: str):
    """The torch function of a built-in activation name (user callables are not trainable here)."""
    torch = _torch()
    table = {"erf": torch.erf, "tanh": torch.tanh, "relu": torch.relu, "linear": lambda u: u,
             "gelu": torch.nn.functional.gelu}  # exact gelu u * Phi(u), as resscale.activations
    if name not in table:
        raise ValueError(f"training supports activations {TORCH_ACTIVATIONS}, got {name!r}")
    return table[name]


@lru_cache(maxsize=1)
def _model_class():
    torch = _torch()
    nn = torch.nn

    class MLPResNet(nn.Module):
        """h^0 = W^0 x + b^0; L blocks (full / reduced / two_layer / feedforward); logits = W^out h^L + b^out."""

        def __init__(self, d, width, n_classes, depth, alpha, block, activation):
            super().__init__()
            self.alpha = float(alpha)
            self.block = block
            self.activation = activation
            self.phi = torch_activation(activation)
            self.inp = nn.Linear(d, width)
            self.block_type = get_block(block)
            self.blocks = nn.ModuleList([nn.ModuleList(self.block_type.torch_layers(nn, width))
                                         for _ in range(depth)])
            self.readout = nn.Linear(width, n_classes)

        def features(self, x):
            """The residual stream h^L (before the readout), shape (batch, width)."""
            h = self.inp(x)
            a, phi, bt = self.alpha, self.phi, self.block_type
            for mods in self.blocks:  # the block's own layer (resscale.blocks)
                h = bt.torch_forward(mods, h, a, phi)
            return h

        def forward(self, x):
            return self.readout(self.features(x))

    return MLPResNet


def build_model(net: ResNet, d: int, width: int, n_classes: int, *, seed: int = 0,
                readout: str = "normal", dtype=None, device: str = "cpu"):
    """An MLP-ResNet of the SPEC family with the variances of ``net``, seeded.

    Initialisation (SPEC): W^0 ~ N(0, sigma_in2/d), b^0 ~ N(0, sigma_bin2);
    W^l ~ N(0, sigma_w2/N), b^l ~ N(0, sigma_b2) for l = 1..depth; readout
    W^out ~ N(0, 1/N), b^out = 0 (``readout="normal"``) or W^out = b^out = 0
    (``readout="zero"``). All parameters are trained.
    """
    torch = _torch()
    if not isinstance(net, ResNet):
        raise TypeError(f"net must be a resscale.ResNet, got {type(net).__name__}")
    if net.phi.name not in TORCH_ACTIVATIONS:
        raise ValueError(f"training supports activations {TORCH_ACTIVATIONS}, got {net.phi.name!r}")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    for name, v in (("d", d), ("width", width), ("n_classes", n_classes)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    dtype = torch.float32 if dtype is None else dtype
    model = _model_class()(int(d), int(width), int(n_classes), net.depth, net.alpha, net.block, net.phi.name)
    g = torch.Generator().manual_seed(int(seed))

    def normal_(p, var):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * math.sqrt(var))

    normal_(model.inp.weight, net.sigma_in2 / d)
    normal_(model.inp.bias, net.sigma_bin2)
    for mods in model.blocks:
        for lin in mods:  # W^l (and V^l for two_layer) ~ N(0, sigma_w2/N), biases ~ N(0, sigma_b2)
            normal_(lin.weight, net.sigma_w2 / width)
            normal_(lin.bias, net.sigma_b2)
    normal_(model.readout.weight, (1.0 / width) if readout == "normal" else 0.0)
    normal_(model.readout.bias, 0.0)
    return model.to(device=device, dtype=dtype)


# ------------------------------------------------------------------ one run
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run except (depth, alpha, seed)."""

    dataset: str = "digits"
    width: int = 64
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    momentum: float = 0.9          # SGD only
    activation: str = "erf"
    block: str = "full"
    sigma_w2: float = 1.0
    sigma_b2: float = 0.0
    sigma_in2: float = 1.0
    sigma_bin2: float = 0.0
    readout: str = "normal"
    test_fraction: float = 0.25
    split_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "dataset", check_dataset_name(self.dataset))
        for name in ("width", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.activation not in TORCH_ACTIVATIONS:
            raise ValueError(f"training supports activations {TORCH_ACTIVATIONS}, got {self.activation!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        self.network(1, 0.1)  # validates the variances

    def network(self, depth: int, alpha: float) -> ResNet:
        return ResNet(depth=depth, alpha=alpha, sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2,
                      sigma_in2=self.sigma_in2, sigma_bin2=self.sigma_bin2,
                      activation=self.activation, block=self.block)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Short hash of the config: cache files of a different config are never reused."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


def _evaluate(model, X, y, batch=4096):
    torch = _torch()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, X.shape[0], batch):
            logits = model(X[i:i + batch])
            yb = y[i:i + batch]
            loss_sum += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            finite = torch.isfinite(logits).all(dim=1)
            correct += int(((logits.argmax(dim=1) == yb) & finite).sum())
    n = X.shape[0]
    return loss_sum / n, correct / n


def train_run(config: TrainConfig, depth: int, alpha: float, seed: int, device: str = "cpu",
              data=None) -> dict:
    """Train one network; return a JSON-friendly record.

    ``seed`` fixes the initialisation and the minibatch order. Training stops
    early if the loss becomes non-finite (``diverged: true``); a non-finite
    logit row counts as a wrong prediction. ``train_loss`` is the cross-entropy
    on the whole training set after the last epoch (evaluation pass), or None
    after divergence; ``loss_curve`` holds the mean minibatch loss per epoch.
    """
    torch = _torch()
    net = config.network(depth, alpha)
    data = load_dataset(config.dataset, config.test_fraction, config.split_seed) if data is None else data
    device = resolve_device(device)
    t0 = time.perf_counter()
    Xtr = torch.as_tensor(data.X_train, device=device)
    ytr = torch.as_tensor(data.y_train, device=device)
    Xte = torch.as_tensor(data.X_test, device=device)
    yte = torch.as_tensor(data.y_test, device=device)
    model = build_model(net, data.d, config.width, data.n_classes, seed=seed,
                        readout=config.readout, device=device)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    g = torch.Generator().manual_seed(10_007 * int(seed) + 1)
    n = Xtr.shape[0]
    curve, diverged = [], False
    for _epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n, generator=g).to(device)
        total, steps = torch.zeros((), device=device), 0
        for i in range(0, n, config.batch_size):
            idx = perm[i:i + config.batch_size]
            loss = torch.nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            steps += 1
        mean_loss = float(total) / steps
        curve.append(_finite_or_none(mean_loss))
        if not math.isfinite(mean_loss):
            diverged = True
            break
    model.eval()
    train_loss, train_acc = _evaluate(model, Xtr, ytr)
    test_loss, test_acc = _evaluate(model, Xte, yte)
    if not math.isfinite(train_loss):
        diverged = True
    return dict(depth=int(depth), alpha=float(alpha), seed=int(seed),
                test_accuracy=float(test_acc), train_loss=_finite_or_none(train_loss),
                train_accuracy=float(train_acc), test_loss=_finite_or_none(test_loss),
                diverged=bool(diverged), loss_curve=curve, epochs_run=len(curve),
                time_s=time.perf_counter() - t0, device=device)
