#!/usr/bin/env bash
# Where the GPU pays: the same user commands on both devices as the batch and the particle
# count grow (MLP training, U-Net and MLP sampling), start-up cancelled by two run lengths.
#
#   SCOREGEN=path/to/scoregen OUT=dir bash bench/gpu-scale.sh
set -u
B=${SCOREGEN:-./scoregen}
OUT=${OUT:-out-gpu-scale}
DEVICES=${DEVICES:-"cpu cuda"}
S=${SCALE:-1}   # divide the run lengths (a dry run on a CPU: SCALE=10 DEVICES=cpu)
mkdir -p "$OUT"
# Wall seconds of a command.
wall() { local t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }
# rate LABEL UNIT PER N1 N2 CMD... : runs CMD with @N@ replaced by N1 then N2 and prints
# PER * (N2 - N1) / (t2 - t1).
rate() {
  local label=$1 unit=$2 per=$3 n1=$4 n2=$5; shift 5
  local t1 t2
  t1=$(wall "${@//@N@/$n1}"); t2=$(wall "${@//@N@/$n2}")
  awk -v l="$label" -v u="$unit" -v p="$per" -v a="$n1" -v b="$n2" -v x="$t1" -v y="$t2" \
    'BEGIN { printf "%-48s %12.1f %s   (%s: %.2f s, %s: %.2f s)\n", l, p * (b - a) / (y - x), u, a, x, b, y }'
}
$B --quiet train --data builtin:moons --steps $((1500 / S)) --seed 3 --out "$OUT/moons" >/dev/null
$B --quiet train --data builtin:digits --model unet --steps 5 --out "$OUT/unet" >/dev/null
for dev in $DEVICES; do
  echo "== device $dev"
  for bs in 512 4096 32768; do
    rate "moons MLP train, batch $bs" "steps/s" 1 $((100 / S)) $((400 / S)) \
      $B --quiet --device $dev train --data builtin:moons --batch $bs --steps @N@ --checkpoint-every 100000 --out "$OUT/m_${dev}_${bs}_@N@"
  done
  for n in 4096 65536 262144; do
    rate "moons sample (ddim), $n particles" "particle-steps/s" $n $((10 / S + 1)) $((50 / S + 1)) \
      $B --quiet --device $dev sample --model "$OUT/moons" --n $n --steps @N@ --sampler ddim --seed 1 --out "$OUT/s.npy"
  done
  for n in 512 2048; do
    rate "U-Net sample (ddim), $n images" "evals/s" $n $((3 / S + 1)) $((13 / S + 1)) \
      $B --quiet --device $dev sample --model "$OUT/unet" --null-class --n $n --steps @N@ --sampler ddim --out "$OUT/u.npy"
  done
  rate "U-Net train, batch 256" "steps/s" 1 $((40 / S + 1)) $((160 / S + 1)) \
    $B --quiet --device $dev train --data builtin:digits --model unet --batch 256 --steps @N@ --checkpoint-every 100000 --out "$OUT/u_${dev}_@N@"
done
