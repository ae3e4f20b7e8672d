#!/usr/bin/env bash
# The GPU benchmark and the CPU-vs-CUDA agreement checks, in one run on a CUDA machine
# (docs/gpu.md says how to build the binary). Ours next to PyTorch (bench/peers/torch_*.py,
# eager and, where torch.compile works, compiled) on the same GPU; then the same checkpoint
# sampled on both devices with the same seed, a posterior with a model prior (DPS, which
# needs the network's input gradients) and an imputation, on the GPU.
#
#   SCOREGEN=path/to/scoregen OUT=dir bash bench/gpu.sh
set -u
B=${SCOREGEN:-./scoregen}
OUT=${OUT:-out-gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
here=$(cd "$(dirname "$0")" && pwd)
# The CUDA 13 runtime libraries: from the environment, else from PyTorch's wheels.
if ! ldd "$B" | grep -q "libcublas.so.13 => /"; then
  NV=$($PY -c "import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))" 2>/dev/null)
  LIBS=$(find "$NV/nvidia" -name 'lib*.so*' \( -name 'libcudart.so.13*' -o -name 'libcublas*.so.13*' -o -name 'libcurand.so.10*' -o -name 'libnvrtc.so.13*' \) -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
  export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:-}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
ldd "$B" | grep -E "cuda|cublas|curand|nvrtc|not found"
nproc

sec() { echo; echo "== $*"; }
timed() { local t0=$(date +%s.%N); "$@"; local rc=$?; awk -v a="$t0" -v b="$(date +%s.%N)" -v rc=$rc 'BEGIN { printf "wall %.2f s (rc %d)\n", b - a, rc }'; }

sec "MLP training, steps/s (ours: scoregen bench train; batch 512)"
$B --device cuda bench train --dims 2,64 --steps 300
$PY "$here/peers/torch_mlp.py" train --dim 2 --steps 300
$PY "$here/peers/torch_mlp.py" train --dim 64 --steps 300
timeout 100 $PY "$here/peers/torch_mlp.py" train --dim 64 --steps 300 --compile 2>&1 | tail -1
$B --device cpu bench train --dims 2,64 --steps 300

sec "MLP inference, batch 4096 x 64 (ours includes the host <-> device copies)"
$B --device cuda bench train --only infer --infer-batch 4096
$PY "$here/peers/torch_mlp.py" infer --batch 4096
$B --device cpu bench train --only infer --infer-batch 4096

sec "U-Net (digits, batch 64): scoregen train, two lengths"
for s in 100 400; do
  timed $B --quiet --device cuda train --data builtin:digits --model unet --steps $s --checkpoint-every 100000 --out "$OUT/unet$s"
done
$PY "$here/peers/torch_unet.py" --steps 30
timeout 100 $PY "$here/peers/torch_unet.py" --steps 30 --compile 2>&1 | tail -2

sec "Same checkpoint, CPU and CUDA, same seed: samples must agree to f32 rounding"
$B --quiet train --data builtin:moons --steps 1500 --seed 3 --out "$OUT/moons_cpu" | tail -2
$B --quiet --device cuda train --data builtin:moons --steps 1500 --seed 3 --out "$OUT/moons_cuda" | tail -2
for dev in cpu cuda; do
  for smp in ddim heun em; do
    $B --quiet --device $dev sample --model "$OUT/moons_cpu" --n 2000 --steps 200 --sampler $smp --seed 5 --out "$OUT/s_${smp}_$dev.csv"
  done
  $B --quiet --device $dev sample --model "$OUT/moons_cuda" --n 2000 --steps 200 --sampler ddim --seed 5 --out "$OUT/t_ddim_$dev.csv"
done
$B eval --samples "$OUT/t_ddim_cuda.csv" --reference "$OUT/s_ddim_cpu.csv" 2>&1 | head -4
$PY - "$OUT" <<'EOF'
import sys, numpy as np
o = sys.argv[1]
for s in ["ddim", "heun", "em"]:
    a = np.loadtxt(f"{o}/s_{s}_cpu.csv", delimiter=",")
    b = np.loadtxt(f"{o}/s_{s}_cuda.csv", delimiter=",")
    d = np.abs(a - b)
    print(f"{s}: max |cpu - cuda| {d.max():.3g}, median {np.median(d):.3g}, scale {np.abs(a).max():.3g}")
EOF

sec "Posterior with the model prior on the GPU (DPS uses the input gradients; MCGdiff the SMC)"
cat > "$OUT/prob.json" <<EOF
{"prior": {"kind": "model", "path": "$(cd "$OUT" && pwd)/moons_cpu"},
 "operator": {"kind": "mask", "observed": [0], "dim": 2}, "y": [0.5], "sigma_y": 0.05}
EOF
for m in dps mcgdiff tds; do
  for dev in cpu cuda; do
    timed $B --quiet --device $dev posterior --problem "$OUT/prob.json" --method $m --n 1000 --particles 100 --steps 200 --seed 1 --out "$OUT/p_${m}_$dev.csv"
  done
done
$PY - "$OUT" <<'EOF'
import sys, numpy as np
o = sys.argv[1]
for m in ["dps", "mcgdiff", "tds"]:
    try:
        a = np.loadtxt(f"{o}/p_{m}_cpu.csv", delimiter=",")
        b = np.loadtxt(f"{o}/p_{m}_cuda.csv", delimiter=",")
    except Exception as e:
        print(m, "missing", e); continue
    print(f"{m}: mean cpu {a.mean(0).round(4)} cuda {b.mean(0).round(4)}; sd cpu {a.std(0).round(4)} cuda {b.std(0).round(4)}; max |diff| {np.abs(a-b).max():.3g}")
EOF

sec "Imputation on the GPU (penguins; short training)"
for dev in cpu cuda; do
  timed $B --quiet --device $dev impute --data builtin:penguins --train-steps 600 --em-rounds 1 --em-steps 300 --seed 2 --out "$OUT/peng_$dev.csv"
done
