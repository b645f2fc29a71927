#!/usr/bin/env bash
# One-shot GPU check: run it once on a CUDA machine and it gives everything. On a lent H100 the
# sections env, export_cpu, train and torch took 159 s together; every section has its own time
# limit (all five at their limits: 18 minutes).
#
#   bash benchmarks/gpu_check.sh                  # all sections; results in $OUT if set, else benchmarks/results/gpu_check/
#   bash benchmarks/gpu_check.sh env export_cpu   # only these sections, in this order
#
# 1. environment: GPU, driver, Python and which of our dependencies are importable (what is missing
#    is printed, never fatal);
# 2. the PyTorch student at fp16 on the GPU, random weights, egosim-tiny and edge-0.5b: vision
#    forward, prefill and per-token decode latency distributions (p50/p90/p99), peak GPU memory,
#    and the GPU's own ceilings (device-to-device copy bandwidth, fp16 GEMM) with the achieved
#    fractions for decode (bandwidth) and vision (compute);
# 3. the benchmark harness (exo2ego-edge bench) on a random-weight egosim-tiny INT8 bundle with
#    whatever ONNX Runtime providers are installed (CPU only when onnxruntime-gpu is absent);
# 4. training on the GPU through torchrun (one process, NCCL, bf16 autocast): the quick config's
#    init, 2 and 3 plain and with FSDP2 (run.fsdp=true), and how far apart the two students are;
#    it writes real H.264 clips, so it needs PyAV (carry its wheel where the image lacks it);
# 5. export_cpu: benchmarks/export_bench.py on the host CPU (FP32 vs INT8 vision graphs on ONNX
#    Runtime's CPU provider), to measure INT8 where the CPU has int8 dot-product instructions.
#
# Section names: env torch harness train export_cpu.
# Settings: E2E_CPU_THREADS (export_cpu's ONNX Runtime threads, default 2), E2E_TRAIN_DEVICE and
# E2E_TRAIN_PRECISION (train's run.device / run.precision, default cuda / bf16), PYTHON.
#
# The package need not be installed: the repo's layer folders (runtime/, export/, train/) are
# mapped onto the exo2ego_edge package through a symlink shim on PYTHONPATH.
set -u
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$REPO/benchmarks/results/gpu_check}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"  # absolute: the sections run from another folder
PY="${PYTHON:-python3}"
START=$(date +%s)

SHIM="$(mktemp -d)"
trap 'rm -rf "$SHIM"' EXIT
mkdir -p "$SHIM/exo2ego_edge"
for entry in "$REPO"/exo2ego_edge/*; do ln -s "$entry" "$SHIM/exo2ego_edge/$(basename "$entry")"; done
for layer in runtime export train; do ln -s "$REPO/$layer" "$SHIM/exo2ego_edge/$layer"; done
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
# Python puts the working directory first on sys.path for stdin scripts: run from the shim so the
# repo's bare exo2ego_edge/ folder (without the layers) is not what gets imported.
cd "$SHIM"
export E2E_OUT="$OUT"

echo "== gpu_check: results -> $OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"

# --- 1. environment ------------------------------------------------------------------------------
section_env() {
timeout 60 "$PY" - <<'PY'
import importlib, importlib.metadata as md, json, os, platform, sys
mods = ["torch", "transformers", "safetensors", "onnx", "onnxruntime", "onnxscript", "tokenizers", "av",
        "click", "numpy", "pynvml", "tensorrt", "pycuda", "matplotlib", "psutil", "sympy", "tqdm"]
found, missing = {}, []
for m in mods:
    try:
        mod = importlib.import_module(m)
        found[m] = getattr(mod, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        missing.append(f"{m} ({type(e).__name__})")
env = {"python": platform.python_version(), "found": found, "missing": missing}
try:
    import torch
    env["cuda"] = torch.cuda.is_available()
    if env["cuda"]:
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": p.name, "memory_bytes": p.total_memory, "sm": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
except Exception as e:  # noqa: BLE001
    env["cuda_error"] = str(e)
try:
    import onnxruntime as ort
    env["ort_providers"] = ort.get_available_providers()
except Exception:  # noqa: BLE001
    env["ort_providers"] = []
json.dump(env, open(os.path.join(os.environ["E2E_OUT"], "env.json"), "w"), indent=2)
print("python", env["python"], "| found:", ", ".join(f"{k} {v}" for k, v in found.items()))
print("MISSING:", ", ".join(missing) or "nothing")
print("GPU:", env.get("gpu"), "| ORT providers:", env["ort_providers"])
PY
}

# --- 2. PyTorch student at fp16 ------------------------------------------------------------------
section_torch() {
timeout 170 "$PY" - <<'PY'
import json, os, sys, time
out = os.environ["E2E_OUT"]
try:
    import numpy as np
    import torch
    import transformers  # noqa: F401 - the model's towers are transformers modules
except ImportError as e:
    print(f"SKIP torch student: {e.name} is missing")
    json.dump({"skipped": f"{e.name} missing"}, open(os.path.join(out, "torch_fp16.json"), "w"))
    sys.exit(0)
if not torch.cuda.is_available():
    print("SKIP torch student: no CUDA device")
    json.dump({"skipped": "no CUDA"}, open(os.path.join(out, "torch_fp16.json"), "w"))
    sys.exit(0)
from exo2ego_edge.config import ModelConfig
from exo2ego_edge.model import Exo2Ego

dev = torch.device("cuda")
torch.set_grad_enabled(False)

def stats(ms):
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}

def timed(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(runs):
        t = time.perf_counter(); fn(); torch.cuda.synchronize(); ms.append((time.perf_counter() - t) * 1e3)
    return ms

def ceilings():
    # Device-to-device copy (read + write) and a large fp16 GEMM: the GPU's own roofline.
    x = torch.empty(256 << 20, dtype=torch.float16, device=dev); y = torch.empty_like(x)
    copy_ms = min(timed(lambda: y.copy_(x), 10))
    a = torch.randn(8192, 8192, dtype=torch.float16, device=dev); b = torch.randn_like(a)
    gemm_ms = min(timed(lambda: a @ b, 10))
    del x, y, a, b
    return {"copy_gbps": 2 * (256 << 20) * 2 / (copy_ms / 1e3) / 1e9, "gemm_fp16_tflops": 2 * 8192**3 / (gemm_ms / 1e3) / 1e12}

def vision_flops(cfg, frames):
    v = cfg.vision
    seq = v.grid ** 2 + (1 if v.family == "clip" else 0)
    per_layer = 2 * seq * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size) + 4 * seq * seq * v.hidden_size
    patch = 2 * seq * 3 * v.patch_size**2 * v.hidden_size
    return frames * (v.num_layers * per_layer + patch)

ceil = ceilings()
print(f"GPU ceilings: copy {ceil['copy_gbps']:.0f} GB/s, fp16 GEMM {ceil['gemm_fp16_tflops']:.0f} TFLOP/s")
report = {"ceilings": ceil, "presets": {}}
for preset, frame_counts in (("egosim-tiny", (4, 16)), ("edge-0.5b", (8, 16))):
    t0 = time.perf_counter()
    torch.manual_seed(0)
    cfg = ModelConfig.from_name(preset)
    model = Exo2Ego(cfg, student=True).to(dev, torch.float16).eval()
    llm = model.llm
    params = sum(p.numel() for p in llm.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.parameters())
    entry = {"build_s": time.perf_counter() - t0, "llm_params": params, "settings": []}
    for frames in frame_counts:
        torch.cuda.reset_peak_memory_stats()
        clip = torch.randint(0, 255, (1, frames, cfg.vision.image_size, cfg.vision.image_size, 3), dtype=torch.uint8, device=dev)
        vision_ms = timed(lambda: model(clip), 20)
        visual = model(clip)
        prompt_len = 30 + visual.shape[1] + 32
        embeds = torch.randn(1, prompt_len, cfg.llm.hidden_size, dtype=torch.float16, device=dev)
        prefill_ms = timed(lambda: llm(inputs_embeds=embeds, use_cache=True), 10)
        new = 32
        token_ms = []
        for _ in range(3):  # 3 generations x 31 steps
            res = llm(inputs_embeds=embeds, use_cache=True)
            past, nxt = res.past_key_values, res.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            for _ in range(new - 1):
                t = time.perf_counter()
                res = llm(input_ids=nxt, past_key_values=past, use_cache=True)
                past, nxt = res.past_key_values, res.logits[:, -1:].argmax(-1)
                nxt.item()  # the host needs the token id before the next step: part of real latency
                token_ms.append((time.perf_counter() - t) * 1e3)
        ctx = prompt_len + new / 2
        kv = 2 * cfg.llm.num_layers * cfg.llm.num_kv_heads * cfg.llm.head_dim * ctx * 2
        decode_bound_ms = (weight_bytes + kv) / (ceil["copy_gbps"] * 1e9) * 1e3
        vflops = vision_flops(cfg, frames)
        vision_bound_ms = vflops / (ceil["gemm_fp16_tflops"] * 1e12) * 1e3
        s = {"frames": frames, "prompt_tokens": prompt_len, "new_tokens": new,
             "vision_ms": stats(vision_ms), "prefill_ms": stats(prefill_ms), "decode_per_token_ms": stats(token_ms),
             "decode_tokens_per_s": 1e3 / float(np.median(token_ms)),
             "decode_fraction_of_bandwidth_bound": decode_bound_ms / float(np.median(token_ms)),
             "vision_flops_analytic": vflops, "vision_fraction_of_fp16_gemm_bound": vision_bound_ms / float(np.median(vision_ms)),
             "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated()}
        entry["settings"].append(s)
        print(f"{preset} {frames}f fp16: vision p50 {s['vision_ms']['p50']:.2f} ms, prefill({prompt_len}) p50 "
              f"{s['prefill_ms']['p50']:.2f} ms, decode p50 {s['decode_per_token_ms']['p50']:.2f} ms/token "
              f"(p99 {s['decode_per_token_ms']['p99']:.2f}; {100 * s['decode_fraction_of_bandwidth_bound']:.1f}% of bandwidth bound), "
              f"peak {s['peak_gpu_memory_bytes'] / 2**30:.2f} GiB")
    report["presets"][preset] = entry
    del model, llm
    torch.cuda.empty_cache()
json.dump(report, open(os.path.join(out, "torch_fp16.json"), "w"), indent=2)
PY
}

# --- 3. the harness on a bundle --------------------------------------------------------------------
section_harness() {
timeout 110 "$PY" - <<'PY'
import json, logging, os, sys
out = os.environ["E2E_OUT"]
need = ["torch", "transformers", "onnx", "onnxruntime", "tokenizers", "click", "safetensors"]
missing = []
for m in need:
    try:
        __import__(m)
    except Exception:  # noqa: BLE001
        missing.append(m)
if missing:
    print(f"SKIP harness: missing {', '.join(missing)} (the bundle build needs torch/transformers/onnx; "
          "the runtime needs onnxruntime/tokenizers; the CLI needs click)")
    json.dump({"skipped": f"missing {missing}"}, open(os.path.join(out, "bench_tiny_int8.json"), "w"))
    sys.exit(0)
logging.basicConfig(level=logging.WARNING)
try:
    import av  # noqa: F401
except ImportError:
    print("note: PyAV (av) is missing: video decode is not measured, frames are fed directly")
import onnxruntime as ort
from exo2ego_edge.export.random_bundle import build_random_bundle
from exo2ego_edge.perf import harness as bench_harness
bundle = build_random_bundle("egosim-tiny", "int8", cache_dir=os.path.join(out, "bundles"), max_frames=16)
device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
cfg = bench_harness.BenchConfig(frames=[4, 16], runs=10, warmup=2, device=device)
report = bench_harness.run_benchmark(bundle, cfg)
json.dump(report, open(os.path.join(out, "bench_tiny_int8.json"), "w"), indent=2)
open(os.path.join(out, "bench_tiny_int8.md"), "w").write(bench_harness.to_markdown(report))
problems = bench_harness.schema_problems(report)
print(f"harness on ORT {device}: schema {'ok' if not problems else problems}")
for r in report["results"]:
    if "skipped" not in r:
        print(f"  {r['frames']} frames: decode p50 {r['stages_ms']['decode_per_token']['p50']:.3f} ms/token, "
              f"vision p50 {r['stages_ms']['vision']['p50']:.2f} ms, ttft p50 {r['stages_ms']['ttft']['p50']:.1f} ms")
PY
rm -rf "$OUT/bundles"
}

# --- 4. training: plain vs FSDP2 on the GPU -----------------------------------------------------------
section_train() {
TRAIN="$(mktemp -d)"
timeout 60 "$PY" - "$TRAIN" "$REPO/tests" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from helpers.datasets import make_dataset  # real H.264 clips (PyAV)
clips = make_dataset(Path(sys.argv[1]) / "data")
open(Path(sys.argv[1]) / "clips.txt", "w").write(",".join(clips))
open(Path(sys.argv[1]) / "train.py", "w").write("from exo2ego_edge.cli import main\nmain()\n")
PY
for mode in plain fsdp; do
  extra=""; [ "$mode" = fsdp ] && extra="run.fsdp=true"
  timeout 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "$TRAIN/train.py" train \
    --config egosim-tiny-quick --stages init,2,3 "data.clips=[$(cat "$TRAIN/clips.txt" 2>/dev/null)]" \
    run.output_dir="$TRAIN/$mode" data.cache_dir="$TRAIN/cache" run.device="${E2E_TRAIN_DEVICE:-cuda}" \
    run.precision="${E2E_TRAIN_PRECISION:-bf16}" $extra > "$OUT/train_$mode.log" 2>&1 \
    && echo "training ($mode): ok" || echo "training ($mode): FAILED, see $OUT/train_$mode.log"
done
timeout 60 "$PY" - "$TRAIN" <<'PY'
import json, os, sys
from exo2ego_edge.model import load_student
try:
    a, b = (load_student(os.path.join(sys.argv[1], m, "student")).model.state_dict() for m in ("plain", "fsdp"))
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    print(f"plain vs FSDP2 students: max |diff| {diff:.2e} over {len(a)} tensors")
    json.dump({"max_abs_diff": diff, "tensors": len(a)}, open(os.path.join(os.environ["E2E_OUT"], "train_fsdp.json"), "w"))
except Exception as e:  # noqa: BLE001 - a failed run was reported above
    print(f"plain vs FSDP2 comparison skipped: {type(e).__name__}: {e}")
PY
rm -rf "$TRAIN"
}

# --- 5. the export benchmark on this machine's CPU --------------------------------------------------
# The INT8 vision speed-up depends on the CPU's int8 dot-product instructions (VNNI / AMX), which the
# 2-core AVX2 development machine lacks; a GPU box's host CPU usually has them. Same script, same
# thread count as the committed export_cpu.md, ORT's CPU provider.
section_export_cpu() {
if timeout 300 "$PY" "$REPO/benchmarks/export_bench.py" --presets egosim-tiny edge-0.5b --no-bundles \
    --threads "${E2E_CPU_THREADS:-2}" --tag device_cpu --out-dir "$OUT" > "$OUT/export_cpu.log" 2>&1; then
  echo "export benchmark on the host CPU: ok"
  grep -E "^Machine|^## |onnx_(fp32|int8)" "$OUT/export_device_cpu.md"
else
  echo "export benchmark on the host CPU: FAILED"; tail -n 20 "$OUT/export_cpu.log"
fi
}

# Sections to run: the arguments, in order (default: all of them). Every name is checked before
# any section runs: a typo must not cost the minutes of the sections before it.
SECTIONS=(env torch harness train export_cpu)
[ $# -gt 0 ] && SECTIONS=("$@")
for s in "${SECTIONS[@]}"; do
  declare -F "section_$s" >/dev/null || { echo "unknown section '$s' (env torch harness train export_cpu)"; exit 2; }
done
for s in "${SECTIONS[@]}"; do
  "section_$s"
  echo "== $s done ($(( $(date +%s) - START )) s)"
done
echo "== gpu_check finished in $(( $(date +%s) - START )) s; files:"
ls -l "$OUT"
