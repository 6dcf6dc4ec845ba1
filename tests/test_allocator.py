"""The model actor's allocator settings keep activations mapped from one batch to the next."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resnet_batch.model.settings import ALLOCATOR_ENV

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own

# Minor page faults of three resnet18 forward passes after two warm-up passes, on a thread
# other than the main one (Ray runs the model on such a thread, where glibc gives it an arena
# of its own unless told otherwise).
FAULTS_PER_PASS = """
import resource, threading, torch, torchvision
torch.set_num_threads(1)
model, x = torchvision.models.resnet18().eval(), torch.rand(16, 3, 224, 224)
def passes():
    with torch.inference_mode():
        model(x); model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            model(x)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=passes); t.start(); t.join()
"""


def page_faults(env: dict) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_PASS], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_allocator_env_stops_per_batch_page_faults():
    default = page_faults({})
    assert default > 10_000  # glibc's default: each pass maps its large activations and faults them in anew
    assert page_faults(ALLOCATOR_ENV) < default // 20
