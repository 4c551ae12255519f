"""Build `wheels/`: what the lent GPU machine lacks for the GPU check, as cp312 manylinux x86-64 wheels.

    python benchmarks/build_wheels.py [--dest wheels]

The machine (see `MACHINE_PACKAGES`) has no package index; `benchmarks/gpu_check.sh` installs this folder with
`pip install --no-index --find-links wheels/ --no-deps -r wheels/requirements.txt` and imports the project from the
checkout. `WHEELS` is `datasets` and `lm-eval` with the packages they import that the machine lacks, pinned to the
versions tested here; `--no-deps`, because their declared extras (scikit-learn, nltk, rouge-score...) are imported
only by metrics the project never scores. vLLM (hundreds of MB of CUDA libraries) cannot travel, so the vLLM checks
record `skipped`. The folder must stay under `MAX_BYTES` (what travels with the checkout) and is never committed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
MAX_BYTES = 64 * 2**20
# The lent machine's distributions (Python 3.12, torch 2.11.0+cu130, no network), as its description lists them.
MACHINE_PACKAGES = (
    "torch==2.11.0",
    "transformers==5.17.0",
    "accelerate==1.15.0",
    "peft",
    "huggingface_hub==1.33.0",
    "tokenizers==0.23.2",
    "safetensors",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "pyarrow",
    "pyyaml",
    "jinja2",
    "filelock",
    "tqdm",
    "pytest",
    "tensorboard",
)
# What it lacks: datasets and lm-eval, and the packages they import that are not in MACHINE_PACKAGES (nor pulled in
# by them: huggingface_hub brings fsspec, httpx and packaging; accelerate brings psutil).
WHEELS = (
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
    "xxhash==4.1.0",
    "requests==2.34.2",
    "urllib3==2.7.0",
    "idna==3.21",
    "charset-normalizer==3.4.7",
    "certifi==2026.5.20",
    "lm-eval==0.4.13",
    "sacrebleu==2.6.0",
    "portalocker==4.4.2",
    "regex==2026.5.9",
    "tabulate==0.10.0",
    "colorama==0.4.6",
    "lxml==6.2.0",
)
# Import name -> distribution, where they differ (for the check that every import of the checks is covered).
IMPORT_NAMES = {
    "yaml": "pyyaml",
    "lm_eval": "lm-eval",
    "huggingface_hub": "huggingface_hub",
    "charset_normalizer": "charset-normalizer",
    "google": "tensorboard",
    "tensorboard": "tensorboard",
}
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--platform", "manylinux2014_x86_64", "--no-deps"]


def distribution(requirement: str) -> str:
    return requirement.split("==")[0].lower().replace("_", "-")


def available_distributions() -> set[str]:
    """Distributions the check can import on the machine: its own and the wheel folder's."""
    return {distribution(r) for r in MACHINE_PACKAGES + WHEELS}


def build(dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.whl"):
        stale.unlink()
    done = subprocess.run([sys.executable, "-m", "pip", "download", *PLATFORM, "-d", str(dest), *WHEELS], check=False)
    if done.returncode != 0:
        return done.returncode
    (dest / "requirements.txt").write_text("\n".join(WHEELS) + "\n")
    size = sum(path.stat().st_size for path in dest.iterdir())
    print(f"{dest}: {len(list(dest.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB (limit {MAX_BYTES / 2**20:.0f} MiB)")
    if size > MAX_BYTES:
        print(f"too large: {dest} must stay under {MAX_BYTES / 2**20:.0f} MiB to travel with the checkout")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=REPOSITORY / "wheels", help="the wheel folder (default wheels/)")
    return build(parser.parse_args().dest)


if __name__ == "__main__":
    sys.exit(main())
