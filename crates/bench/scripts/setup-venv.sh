#!/usr/bin/env bash
# Installs the PyTorch + PEFT baseline of `openledger bench train` into the venv "$1" (made
# here), from PyPI, for CPU use only.
#
# PyPI's Linux torch wheel is a CUDA build that depends on ~6 GB of nvidia-* / triton / cuda-*
# wheels. For CPU training only the shared libraries that torch's own .so files name as
# DT_NEEDED must exist (they are loaded at `import torch`); so torch is installed with
# --no-deps, then exactly those nvidia wheels (--no-deps), then cuDNN's engine libraries,
# which are only dlopen'ed on a GPU, are deleted (~0.8 GB), then transformers/peft/safetensors
# and their pure dependencies (--no-deps, versions pinned together). Not installed: triton,
# cuda-bindings, cuda-toolkit, cusolver, nvtx, cccl (GPU-only). About 3.5 GB on disk.
#
# Refuses to start with less than OPENLEDGER_BENCH_MIN_FREE_GB (default 9) GB free on the
# venv's file system. Exit status: 0 = ready; 3 = not enough disk; other = pip failed.
set -euo pipefail

VENV=${1:?usage: setup-venv.sh VENV_DIR}
PY=${OPENLEDGER_BENCH_PYTHON:-python3}
need=${OPENLEDGER_BENCH_MIN_FREE_GB:-9}
mkdir -p "$(dirname "$VENV")"
free=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print int($4 / 1048576)}')
if (( free < need )); then
  echo "only ${free} GB free on $(dirname "$VENV"); the PyTorch venv needs ${need} GB free (OPENLEDGER_BENCH_MIN_FREE_GB)" >&2
  exit 3
fi

"$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check -q --no-deps "$@"; }

pip_install torch==2.15.0
# The DT_NEEDED libraries of libtorch_cpu/libtorch_cuda/libc10_cuda/libtorch_nvshmem.
pip_install nvidia-cuda-runtime==13.2.86 nvidia-cublas==13.4.1.3 nvidia-cuda-nvrtc==13.2.86 \
  nvidia-cuda-cupti==13.2.86 nvidia-cusparse==12.7.10.12 nvidia-cufft==12.2.0.57 \
  nvidia-cufile==1.17.1.22 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 \
  nvidia-cudnn-cu13==9.26.0.51 nvidia-nvshmem-cu13==3.7.2 nvidia-nvjitlink==13.5.37
for f in "$VENV"/lib/python3*/site-packages/nvidia/cudnn/lib/libcudnn_*.so.9; do rm -f "$f"; done
pip_install filelock==4.2.12 typing_extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 \
  networkx==3.6.1 Jinja2==3.1.6 MarkupSafe==3.0.4 fsspec==2026.9.0 numpy==2.4.6 \
  setuptools==84.2.1
pip_install transformers==5.23.0 peft==0.21.2 safetensors==0.8.0 tokenizers==0.23.3 \
  huggingface_hub==2.4.0 accelerate==1.15.0 hf-xet==1.8.0 httpx2==2.16.2 httpcore2==2.16.2 \
  anyio==4.16.0 h11==0.16.0 idna==3.20 click==8.5.1 typer==0.29.2 shellingham==1.5.4 \
  rich==15.0.0 Pygments==2.21.0 markdown-it-py==4.3.0 mdurl==0.1.2 annotated-doc==0.0.7 \
  packaging==26.3 PyYAML==6.0.3 regex==2026.11.15 tqdm==4.70.1 psutil==7.2.2 \
  truststore==0.10.5 pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 \
  typing-inspection==0.4.5
"$VENV/bin/python" -c "import torch, transformers, peft, safetensors; print('torch', torch.__version__)"
