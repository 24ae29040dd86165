"""Run every benchmark in order (about 3 hours on 2 cores), then refresh the README tables.

The training benchmark comes first: the quantization, compression and storage benchmarks
start from the checkpoint it writes (runs/bench/fmnist_mobilenet_v2_050/).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMANDS = [
    ["train_fashion_mnist.py", "--epochs", "10", "--width", "0.5"],
    ["deploy_latency.py", "--runs", "100"],
    ["prune_fashion_mnist.py", "latency", "--runs", "100"],
    ["quantize_fashion_mnist.py", "--qat-epochs", "1"],
    ["compress_fashion_mnist.py", "latency224", "search"],
    ["compression_fashion_mnist.py", "storage", "kd", "restructure"],
    ["prune_fashion_mnist.py", "accuracy", "--seeds", "0", "1", "2"],
]

if __name__ == "__main__":
    failed = []
    for cmd in COMMANDS:
        print("==", " ".join(cmd), flush=True)
        if subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]]).returncode:
            failed.append(cmd[0])
    subprocess.run([sys.executable, str(HERE.parent / "tools" / "update_readme.py")], check=True)
    sys.exit(f"failed: {failed}" if failed else 0)
