#!/usr/bin/env bash
# A trained edgevit checkpoint, turned into the three foreign forms users bring (make_sources.py),
# each taken through import -> quantize -> validate -> build --check as a new user would.
#   bash benchmarks/bring_your_own/run.sh runs/d28/checkpoint.pt DATA_FOLDER OUT_DIR
set -euo pipefail
ckpt=$1 data=$2 out=$3
here=$(dirname "$0")
python "$here/make_sources.py" "$ckpt" "$out/src"
read -r size mean std < <(python - "$ckpt" <<'PY'
import sys, torch
p = torch.load(sys.argv[1], weights_only=True)["preprocess"]
print(p["size"], " ".join(map(str, p["mean"])), " ".join(map(str, p["std"])))
PY
)
pre=(--size "$size" --mean "$mean" --std "$std" --resize squash --interpolation bilinear --labels "$out/src/labels.txt")
edgevit import "$out/src/timm.pth" -o "$out/timm.onnx" --num-heads "$(python -c "import torch,sys; print(torch.load(sys.argv[1], weights_only=True)['model_config']['num_heads'])" "$ckpt")" "${pre[@]}"
edgevit import "$out/src/hf" -o "$out/hf.onnx"
edgevit import "$out/src/foreign.onnx" -o "$out/foreign.onnx" "${pre[@]}"
for m in timm hf foreign; do
    edgevit quantize "$out/$m.onnx" --data "$data" -q
    edgevit validate "$out/$m.onnx" "$out/$m.int8.onnx" --data "$data" --split test --stem "validation-$m" -q
    python -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"$m: agreement {d['agreement']:.2f}%, drop {d['drop']:+.2f} points, mean KL {d['mean_kl']:.2e} on {d['num_images']} test images\")" "$out/validation-$m.json"
    edgevit build "$out/$m.int8.onnx" --check | tail -1
done
