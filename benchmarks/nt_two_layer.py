"""neural-tangents' NNGP of the two-layer block (issue 13 check; runs in .bench-venv, no resscale import).

The SPEC block h^l = h^{l-1} + alpha (V^l phi(W^l h^{l-1} + b^l) + a^l) written in stax:

    branch = serial(Dense(N, W_std=sqrt(sw2), b_std=sqrt(sb2)), Phi(),
                    Dense(N, W_std=alpha sqrt(sw2), b_std=alpha sqrt(sb2)))
    block  = serial(FanOut(2), parallel(Identity(), branch), FanInSum())
    net    = serial(Dense(N, W_std=sqrt(sigma_in2), b_std=sqrt(sigma_bin2)), repeat(block, L))

(both summands are Gaussian and independent, so FanInSum adds their kernels). Reads a JSON
job from argv[1] ({"X": [[...]], "depth", "alpha", "sigma_w2", "sigma_b2", "sigma_in2",
"sigma_bin2", "activation": "erf" | "relu"}) and prints the NNGP K^L as JSON.
"""
import json
import math
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from neural_tangents import stax  # noqa: E402


def main():
    job = json.loads(open(sys.argv[1]).read())
    X = jnp.asarray(job["X"], dtype=jnp.float64)
    a, sw, sb = job["alpha"], math.sqrt(job["sigma_w2"]), math.sqrt(job["sigma_b2"])
    phi = {"erf": stax.Erf(), "relu": stax.Relu()}[job["activation"]]
    branch = stax.serial(stax.Dense(512, W_std=sw, b_std=sb), phi, stax.Dense(512, W_std=a * sw, b_std=a * sb))
    block = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch), stax.FanInSum())
    layers = [stax.Dense(512, W_std=math.sqrt(job["sigma_in2"]), b_std=math.sqrt(job["sigma_bin2"]))]
    layers += [block] * int(job["depth"])
    _, _, kernel_fn = stax.serial(*layers)
    K = kernel_fn(X, X, "nngp")
    print(json.dumps({"K": [[float(v) for v in row] for row in K]}))


if __name__ == "__main__":
    main()
