"""The pre-flight length check with the real SmolLM2 tokenizer (no engine): exact counts where they matter."""

import os
import random
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from runner import preflight
from runner.errors import ConfigError
from runner.models import build_smollm2
from runner.schema import LinesInputConfig, OpenAIBatchInputConfig, PerTileConfig

@pytest.fixture(autouse=True, scope="module")
def _own_cache(tmp_path_factory):
    """This module's checks cache under a folder of their own (the chat seams are computed once in it)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RUNNER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


MODEL = build_smollm2(Path(os.path.expanduser("~/.cache/runner/models/SmolLM2-135M-Instruct")))
WORDS = "gene protein cell the of what is describe why\n how regulation, expression; pathway 42 é".split(" ")


def _cfg(folder: Path, style: str, on_too_long: str = "error", limit: int = 120, max_tokens: int = 20,
         model: Path = MODEL):
    mode = {**OmegaConf.to_container(OmegaConf.structured(PerTileConfig)), "prompt_style": style,
            "on_too_long": on_too_long}
    lines = {**OmegaConf.to_container(OmegaConf.structured(LinesInputConfig)), "path": str(folder)}
    return OmegaConf.create({"mode": mode, "input": lines, "model": {"path": str(model), "engine": {"max_model_len": limit}},
                             "cluster": {"engine": {}}, "sampling": {"max_tokens": max_tokens}})


def _lines(count: int):
    """Random lines, some with leading or trailing blanks, which the tokenizer may merge with the template's."""
    rng = random.Random(7)
    words = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 90))).replace("\n", " ") for _ in range(count))
    return [rng.choice(["", "  ", "\t", " \u00a0"]) + line + rng.choice(["", " ", "  \t"]) for line in words]


def _trimming_model(folder: Path) -> Path:
    """SmolLM2's tokenizer with a chat template that trims the message, as Llama 3's does."""
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(MODEL / name, folder / name)
    template = (MODEL / "chat_template.jinja").read_text()
    assert "message['content']" in template
    (folder / "chat_template.jinja").write_text(template.replace("message['content']", "message['content'] | trim"))
    return folder


@pytest.mark.parametrize("style", ["chat", "completion", "chat-trimmed"])
def test_the_lines_found_are_exactly_those_vllm_would_count_too_long(tmp_path, style):
    lines = _lines(400)
    (tmp_path / "0.in").write_text("".join(f"{line}\n" for line in lines))
    model = _trimming_model(tmp_path / "model") if style == "chat-trimmed" else MODEL
    style = style.split("-")[0]
    tokenizer = AutoTokenizer.from_pretrained(model)

    def exact(text):  # as vLLM counts a prompt: the rendered chat turn without special tokens, or the raw text
        if style == "completion":
            return len(tokenizer(text)["input_ids"])
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    expected = {n: exact(text) for n, text in enumerate(lines, start=1) if exact(text) > 100}
    assert 50 < len(expected) < 350  # the limit cuts through the lines, so the seam margin is exercised
    report = preflight.check(_cfg(tmp_path, style, on_too_long="record", model=model), [tmp_path / "0.in"])
    assert report.too_long == {"0.in": expected} and report.lines == 400


def test_a_refusal_names_the_count_the_first_lines_and_the_longest(tmp_path):
    (tmp_path / "0.in").write_text("short\n" + "".join(f"{' '.join(['word'] * n)}\n" for n in range(200, 208)))
    with pytest.raises(ConfigError) as err:
        preflight.check(_cfg(tmp_path, "completion"), [tmp_path / "0.in"])
    message = str(err.value)
    assert message.startswith("8 of 9 input lines do not fit: prompt tokens + sampling.max_tokens=20 > "
                              "max_model_len=120 (0.in:2, 0.in:3, 0.in:4, 0.in:5, 0.in:6 and 3 more; longest prompt 207")
    assert "\n" not in message


def test_an_openai_batch_request_is_checked_against_the_jobs_max_tokens_unless_it_brings_its_own(tmp_path):
    """A request with its own max_tokens is left to vLLM (which knows both numbers when it is sent): counting
    the job's max_tokens for it would refuse, or with on_too_long=record never send, a request that fits."""
    import json

    long = " ".join(["word"] * 110)  # fits with max_tokens 5 in 120, not with the job's 20
    rows = [{"custom_id": name, "url": "/v1/completions", "body": {"prompt": long, **own}}
            for name, own in (("own", {"max_tokens": 5}), ("job", {}))]
    (tmp_path / "0.in").write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = _cfg(tmp_path, "completion", on_too_long="record")
    cfg.input = {**OmegaConf.to_container(OmegaConf.structured(OpenAIBatchInputConfig)), "path": str(tmp_path)}
    report = preflight.check(cfg, [tmp_path / "0.in"])
    assert list(report.too_long["0.in"]) == [2]


def test_the_ranks_get_the_reasons_and_a_later_launch_with_none_too_long_leaves_no_stale_list(tmp_path):
    (tmp_path / "0.in").write_text("short\n" + " ".join(["word"] * 300) + "\n")
    listing = tmp_path / "too_long.json"
    preflight.write_for_ranks(preflight.check(_cfg(tmp_path, "chat", "record"), [tmp_path / "0.in"]), listing)
    reasons = preflight.read_for_rank(listing, "0.in")
    assert list(reasons) == [2] and "> max_model_len=120" in reasons[2]
    assert preflight.read_for_rank(listing, "1.in") == {}
    preflight.write_for_ranks(preflight.check(_cfg(tmp_path, "chat", "record", limit=2048), [tmp_path / "0.in"]),
                              listing)
    assert not listing.exists()


def test_without_max_model_len_the_models_own_context_is_used(tmp_path):
    cfg = _cfg(tmp_path, "chat")
    del cfg.model.engine["max_model_len"]
    assert preflight.max_model_len(cfg) == 8192  # SmolLM2's max_position_embeddings


def test_an_unchanged_file_is_not_tokenized_again_and_a_changed_one_is(tmp_path):
    path = tmp_path / "0.in"
    path.write_text("short\n" + " ".join(["word"] * 300) + "\n")
    cfg = _cfg(tmp_path, "chat", "record")
    first = preflight.check(cfg, [path])
    again = preflight.check(cfg, [path])
    with open(path, "a") as f:
        f.write(" ".join(["word"] * 400) + "\n")
    changed = preflight.check(cfg, [path])
    assert first.too_long == again.too_long == {"0.in": {2: first.too_long["0.in"][2]}}
    assert sorted(changed.too_long["0.in"]) == [2, 3] and changed.lines == 3
    assert [first.tokenized, again.tokenized, changed.tokenized] == [2, 0, 3]


def test_a_server_host_records_the_lines_found_too_long_without_sending_them(tmp_path):
    """No server exists here: a line that reached the network would fail, not come back as this record."""
    import asyncio

    from runner.client import FileClient
    from runner.readers import Entry, Request
    from runner.job import typed_mode
    from runner.schema import ServerPerNodeConfig

    mode = typed_mode(OmegaConf.structured(ServerPerNodeConfig))
    client = FileClient(None, mode, "m", {"max_tokens": 4}, too_long={"a.txt": {2: "too long: the prompt is 9 tokens"}})
    record = asyncio.run(client.answer("a.txt", Entry(2, "a long line", Request("a long line"))))
    assert (record["status"], record["error"], record["line"], record["output_tokens"]) == (
        "ERROR", "too long: the prompt is 9 tokens", 2, 0)
