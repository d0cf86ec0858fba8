"""Write tests/data/mcmc_two_level_reference.npz: the sampler's two-level (and one-level)
output before multi-level delayed acceptance existed (run at commit b44b5e2).

    PYTHONPATH=$PWD python tests/data/make_mcmc_two_level_reference.py

tests/test_mcmc_multilevel.py checks that today's sampler reproduces it bit for bit.
"""

from pathlib import Path

import numpy as np

from tests.test_mcmc_multilevel import _two_level_runs

if __name__ == "__main__":
    out = Path(__file__).with_name("mcmc_two_level_reference.npz")
    np.savez(out, **_two_level_runs())
    print(out)
