"""Runner vs raw vLLM on the same prompts, in one invocation, legs interleaved A/B then B/A.

    python benchmarks/bench_vs_raw.py --model-dir DIR [--dummy] --prompts 4000 --input-len 128 --output-len 256 \
        --rounds 2 --modes per_tile,server_per_node --out benchmarks/results/NAME.json

Each leg is its own process, so each starts its engine on an empty GPU:
  raw       vllm.LLM(...).generate(prompts) in a fresh interpreter (this file's `raw` sub-command)
  per_tile  python -m runner mode=per_tile (1 rank, cluster=nvidia_1gpu)
  server    python -m runner mode=server_per_node (1 host, the completion endpoint, chat with --until-eos;
            --server-files N splits the prompts into N input files, as a job over many files would have)
Prompts are text of exactly --input-len tokens (random whole-word tokens, checked to re-encode to that length),
sampling is greedy with ignore_eos, so every leg generates prompts x output-len tokens. --until-eos instead sends
each prompt as a chat turn (raw: LLM.chat; runner: prompt_style=chat) and stops answers at EOS, so they end at
lengths of their own and requests no longer start and finish in waves (real weights only: random ones never reach
EOS; SmolLM2 ends about half its answers to these prompts within 5-54 tokens, the rest run to --output-len).
Throughput is output tokens / generation seconds (engine start excluded, reported apart).
"""

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_prompts(model_dir: str, n: int, input_len: int, seed: int) -> list:
    """n texts of exactly input_len tokens: random whole words (" word" is one token), which re-encode to the
    same tokens, so almost no draw is rejected (random token ids re-encode to another length ~99% of the time)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    vocab = range(min(tok.vocab_size, 50000))
    words = [w for w in tok.batch_decode([[i] for i in vocab]) if w[1:].isalpha() and w[0] == " " and len(w) > 2]
    words = [w for w, ids in zip(words, tok(words, add_special_tokens=False).input_ids) if len(ids) == 1]
    rng = random.Random(seed)
    prompts = []
    while len(prompts) < n:
        batch = ["".join(rng.choices(words, k=input_len)).strip() for _ in range(n - len(prompts))]
        lengths = tok(batch, add_special_tokens=False).input_ids
        prompts += [text for text, ids in zip(batch, lengths) if len(ids) == input_len]
    return prompts


def cached_prompts(args, work: Path) -> Path:
    """The prompts file of these arguments, made once (a later --append call reuses it)."""
    key = f"{args.prompts}x{args.input_len}-seed{args.seed}"
    path = work / f"prompts-{key}" / "0.in"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        prompts = make_prompts(args.model_dir, args.prompts, args.input_len, args.seed)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(prompts) + "\n")
        tmp.replace(path)
    return path


def raw_leg(args) -> dict:
    """The baseline: vLLM's own offline API, nothing around it."""
    prompts = Path(args.prompts_file).read_text().splitlines()
    t0 = time.monotonic()  # engine start includes importing vLLM, as runner's does (10 s on a CPU, more when cold)
    from vllm import LLM, SamplingParams

    llm = LLM(model=args.model_dir, **json.loads(args.engine))
    t1 = time.monotonic()
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=not args.until_eos, seed=0)
    if args.until_eos:
        outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
    else:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    t2 = time.monotonic()
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"leg": "raw", "engine_start_s": t1 - t0, "generate_s": t2 - t1, "output_tokens": tokens,
            "output_tokens_per_s": tokens / (t2 - t1), "wall_s": t2 - t0}


def runner_leg(mode: str, args, prompts_dir: Path, name: str, engine: dict) -> dict:
    run = Path(args.work_dir).resolve() / name
    overrides = [
        f"mode={mode}", f"cluster={args.cluster}", "cluster.ranks_per_node=1", "model.source=path", f"model.path={args.model_dir}",
        # the prompts only: the raw leg's result and log lie beside them
        f"model.name={Path(args.model_dir).name}", f"input.path={prompts_dir}/*.in",
        f"mode.prompt_style={'chat' if args.until_eos else 'completion'}", "sampling.temperature=0.0",
        f"sampling.max_tokens={args.output_len}", f"+sampling.ignore_eos={str(not args.until_eos).lower()}",
        "+sampling.seed=0", f"hydra.run.dir={run}",
        *[f"+model.engine.{k}={json.dumps(v)}" for k, v in engine.items() if k not in ("dtype", "max_model_len")],
        f"model.engine.dtype={engine.get('dtype', 'bfloat16')}",
        f"model.engine.max_model_len={engine.get('max_model_len', 2048)}",
    ]
    if mode == "server_per_node":
        overrides += ["input=lines", "input.id_fields=[]",
                      "input.template='{line}'", f"mode.concurrency={args.concurrency}",
                      f"mode.scratch_dir={run}/scratch"]
    overrides += args.override
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "runner", *overrides], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"runner {mode} failed:\n{proc.stderr[-4000:]}")
    stats = json.loads((run / "summary.json").read_text())["per_worker"][0]
    logs = [run / "logs" / "run0.log", run / "logs" / "host0" / "vllm-serve.log"]
    facts = engine_facts("".join(p.read_text(errors="replace") for p in logs if p.exists()))
    return {**facts, "log": str(logs[0]), "leg": mode, "engine_start_s": stats["engine_start_s"], "generate_s": stats["generate_s"],
            "output_tokens": stats["output_tokens"], "output_tokens_per_s": stats["output_tokens"] / stats["generate_s"],
            "wall_s": wall, "concurrency": args.concurrency if mode == "server_per_node" else None,
            **({"record_s": stats["record_s"]} if "record_s" in stats else {})}


def run_raw_in_subprocess(args, prompts_file: Path, engine: dict) -> dict:
    result_file = prompts_file.with_name("raw-result.json")
    argv = [sys.executable, __file__, "raw", "--model-dir", args.model_dir, "--prompts-file", str(prompts_file),
            "--output-len", str(args.output_len), "--engine", json.dumps(engine), "--out", str(result_file),
            *(["--until-eos"] if args.until_eos else [])]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    log = prompts_file.with_name(f"raw-{int(time.time())}.log")  # vLLM's own log (it writes to stdout)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"raw leg failed:\n{proc.stderr[-4000:]}")
    result = json.loads(result_file.read_text())
    result.update(wall_s=time.monotonic() - t0, log=str(log), **engine_facts(log.read_text()))
    return result


_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_KV_GIB = re.compile(r"Available KV cache memory: ([\d.]+) GiB")


def engine_facts(log_text: str) -> dict:
    """What vLLM's own log says of the engine a leg ran: its KV cache (a smaller one preempts sooner)."""
    tokens, gib = _KV_TOKENS.search(log_text), _KV_GIB.search(log_text)
    return {"kv_cache_tokens": int(tokens.group(1).replace(",", "")) if tokens else None,
            "kv_cache_gib": float(gib.group(1)) if gib else None}


def compare(args) -> dict:
    engine = {"dtype": "bfloat16", "max_model_len": args.input_len + args.output_len + 64,  # 64: room for a chat template
              **({"load_format": "dummy"} if args.dummy else {}), **json.loads(args.engine)}
    work = Path(args.work_dir).resolve() / f"prompts-{Path(args.model_dir).name}"
    work.mkdir(parents=True, exist_ok=True)
    prompts_file = cached_prompts(args, work)
    earlier = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).exists() else {}
    legs = earlier.get("legs", [])
    first = 1 + max((leg["round"] for leg in legs), default=-1)
    commands = earlier.get("commands", []) + [shlex.join(["python3", *sys.argv])]
    result = {"config": {**vars(args), "engine": engine}, "commands": commands, "legs": legs, "device": _device_name()}
    for rnd in range(first, first + args.rounds):
        for leg in leg_order(rnd, args.modes.split(",")):
            if leg == "raw":
                _leg(legs, rnd, "raw", lambda: run_raw_in_subprocess(args, prompts_file, engine))
            else:
                folder = split_prompts(prompts_file, args.server_files if leg == "server_per_node" else 1)
                name = f"{leg}-{rnd}-{int(time.time())}"
                _leg(legs, rnd, leg, lambda: runner_leg(leg, args, folder, name, engine))
            save(result, args.out)
    return result


def leg_order(rnd: int, modes: list) -> list:
    """Raw first in even rounds, last in odd ones, the runner's legs mirrored (A B C, C B A): a drift of the
    machine over a call (clocks, heat, caches warming, a neighbour's load) then favours neither side, and the
    first mode's leg runs right beside its raw leg in every round, so its ratio spans the least of the drift."""
    return ["raw", *modes] if rnd % 2 == 0 else [*reversed(modes), "raw"]


def split_prompts(prompts_file: Path, files: int) -> Path:
    """The same prompts in `files` input files (server_per_node answers a host's files one after another, as a
    job over many files does); 1: the prompts file's own folder."""
    if files <= 1:
        return prompts_file.parent
    folder = prompts_file.parent / f"split-{files}"
    if not folder.exists():
        lines = prompts_file.read_text().splitlines()
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(exist_ok=True)
        per_file = -(-len(lines) // files)
        for i in range(files):
            (tmp / f"part{i:04d}.in").write_text("".join(f"{line}\n" for line in lines[i * per_file:(i + 1) * per_file]))
        tmp.rename(folder)
    return folder


def save(result: dict, out) -> str:
    """Write the result so far (after every leg: a call stopped at its time limit keeps the legs it ran)."""
    result["ratios"] = ratios(result["legs"])
    text = json.dumps(result, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text


def _leg(legs: list, rnd: int, name: str, run) -> None:
    """Run one leg; a failed leg is recorded with its error and the benchmark goes on."""
    started_at = round(time.time(), 1)  # epoch seconds: lines the leg up with GPU samples taken beside it
    try:
        legs.append({"round": rnd, "started_at": started_at, **run()})
    except SystemExit as e:
        legs.append({"round": rnd, "leg": name, "error": str(e)[-3000:]})
    print(json.dumps(legs[-1]), flush=True)


def ratios(legs: list) -> dict:
    """Runner / raw throughput, each runner leg against the raw leg of its own round, and the mean."""
    out = {}
    ok = [leg for leg in legs if "error" not in leg]
    for mode in sorted({leg["leg"] for leg in ok} - {"raw"}):
        per_round = []
        for leg in (x for x in ok if x["leg"] == mode):
            raw = next((x for x in ok if x["leg"] == "raw" and x["round"] == leg["round"]), None)
            if raw:
                per_round.append(round(leg["output_tokens_per_s"] / raw["output_tokens_per_s"], 4))
        out[mode] = {"per_round": per_round, "mean": round(sum(per_round) / max(len(per_round), 1), 4)}
    raw = [leg["output_tokens_per_s"] for leg in ok if leg["leg"] == "raw"]
    if len(raw) > 1:  # how far raw vLLM alone moves between rounds: a ratio closer to 1 than this is noise
        out["raw_spread"] = round(max(raw) / min(raw), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["compare", "raw"], nargs="?", default="compare")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--dummy", action="store_true", help="load_format=dummy: random weights, real shapes")
    parser.add_argument("--prompts", type=int, default=4000)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="per_tile,server_per_node")
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--server-files", type=int, default=1,
                        help="split the prompts into this many input files for server_per_node (same lines in all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--until-eos", action="store_true",
                        help="chat turns, answers stop at EOS (lengths vary) instead of ignore_eos (all --output-len)")
    parser.add_argument("--cluster", default="nvidia_1gpu", help="runner cluster option (local_cpu for a smoke test)")
    parser.add_argument("--out")
    parser.add_argument("--work-dir", default=str(ROOT / "outputs" / "bench"), help="prompts and each leg's run folder")
    parser.add_argument("--append", action="store_true",
                        help="add this invocation's rounds to the legs already in --out (one device call per round)")
    parser.add_argument("--prompts-file")
    parser.add_argument("--engine", default="{}", help="extra vLLM engine arguments (JSON), for every leg")
    parser.add_argument("--override", action="append", default=[],
                        help="a runner config override for the runner legs, e.g. mode.max_in_flight=1536 (repeatable)")
    args = parser.parse_args()
    if args.until_eos and args.dummy:
        parser.error("--until-eos needs real weights: with --dummy no answer reaches EOS")
    if args.what == "raw":
        Path(args.out).write_text(json.dumps(raw_leg(args)))
        return
    print(save(compare(args), args.out))


def _device_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001 - informational only
        return os.uname().machine


if __name__ == "__main__":
    main()
