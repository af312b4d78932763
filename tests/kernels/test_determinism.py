"""A seeded fused step gives the same bits whether numba compiles the kernels or loads them from its cache.

Reductions over samples (value and bias gradients) used to be reassociated by LLVM, and a fresh compile and a
cached one summed in different orders; they are now summed in explicit lanes in one fixed order.
"""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, sys
import torch
import sparta.nn.mlp as M
from sparta.nn import SparseMLP
if sys.argv[1] == "layer":
    M.LAYER_MODE_CONNECTIONS = 100  # the layer-by-layer kernels (gather_sddmm) as well
torch.manual_seed(0)
m = SparseMLP([60, 80, 70, 5], density=0.3, activation="allrelu", dropout=0.3)
m.seed_dropout(1)
x = torch.randn(130, 60)
torch.nn.functional.cross_entropy(m(x), torch.randint(0, 5, (130,))).backward()
h = hashlib.sha1()
for p in m.parameters():
    h.update(p.grad.numpy().tobytes())
print(h.hexdigest())
"""


@pytest.mark.parametrize("mode", ["tiles", "layer"])
def test_fresh_compile_and_cache_give_the_same_gradients(tmp_path, mode):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=600)
            for _ in range(2)]  # the first compiles and fills the cache, the second loads from it
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    assert os.listdir(tmp_path / "cache"), "numba cached nothing: the test compared two fresh compiles"
    assert runs[0].stdout == runs[1].stdout
