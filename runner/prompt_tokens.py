"""Count the tokens of prompts as vLLM will, without the engine and, on most launches, without transformers.

vLLM renders a chat prompt through the model's chat template and tokenizes the text without special tokens; a
completion prompt is tokenized with them. Importing transformers (and torch with it) takes 6 s or more on a
login node, so the template is rendered once, around a placeholder, with transformers, and what it puts before
and after the message (and the special tokens a completion prompt gets) is cached under $RUNNER_CACHE_DIR or
~/.cache/runner by the tokenizer files' content. Later launches count with the Rust `tokenizers` library alone.

A template that does not insert the message as it is (it trims or rewrites it) has no such seams: then every
prompt is rendered through transformers, exact but slower.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from runner import atomic

# a message with blanks at both ends: a template that trims or rewrites messages does not keep it as it is
_SLOT = " \x00runner-prompt-slot\x00 "
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                    "special_tokens_map.json")
_CACHE_FORMAT = b"2"


class PromptCounter:
    def __init__(self, model_path: str, chat: bool):
        self.model_path = Path(model_path)
        self.chat = chat
        self.digest = tokenizer_digest(self.model_path)
        seams = _cached_seams(self.model_path)
        self._prefix, self._suffix, self._special = seams.get("prefix"), seams.get("suffix"), seams["special"]
        self._trim = seams.get("trim", False)
        tokenizer_json = self.model_path / "tokenizer.json"
        self._fast = _raw_tokenizer(tokenizer_json) if tokenizer_json.is_file() else None
        self._hf = None
        self.exact_estimates = not chat and self._fast is not None
        self._overhead = self._seam_tokens() if chat and self._fast is not None else None

    def estimates(self, prompts: List[str]) -> List[int]:
        """Each prompt's tokens: exact for completion prompts; for chat prompts the message's tokens plus the
        template's, which may differ from `exact` by a few tokens where the tokenizer merges across a seam."""
        if self._fast is None or (self.chat and self._overhead is None):
            return [self.exact(prompt) for prompt in prompts]
        if self.chat and self._trim:
            prompts = [prompt.strip() for prompt in prompts]
        counts = [len(one) for one in self._fast.encode_batch_fast(prompts, add_special_tokens=False)]
        extra = self._overhead if self.chat else self._special
        return [count + extra for count in counts]

    def exact(self, prompt: str) -> int:
        """The prompt's tokens as vLLM counts them."""
        if self._fast is not None and (not self.chat or self._overhead is not None):
            message = prompt.strip() if self._trim else prompt
            text = self._prefix + message + self._suffix if self.chat else prompt
            return len(self._fast.encode(text, add_special_tokens=False)) + (0 if self.chat else self._special)
        tokenizer = self._transformers()
        if not self.chat:
            return len(tokenizer(prompt)["input_ids"])
        return len(tokenizer(_render(tokenizer, prompt), add_special_tokens=False)["input_ids"])

    def _seam_tokens(self) -> Optional[int]:
        if self._prefix is None:
            return None
        return sum(len(self._fast.encode(text, add_special_tokens=False)) for text in (self._prefix, self._suffix))

    def _transformers(self):
        if self._hf is None:
            self._hf = _hf_tokenizer(self.model_path)
        return self._hf


def _raw_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _hf_tokenizer(model_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def _render(tokenizer, message: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)


def _seams(model_path: Path) -> dict:
    """What the chat template puts around a message, whether it trims the message (Llama 3's does), and the
    special tokens a completion prompt gets; no seams when the template rewrites the message otherwise."""
    tokenizer = _hf_tokenizer(model_path)
    special = len(tokenizer("x")["input_ids"]) - len(tokenizer("x", add_special_tokens=False)["input_ids"])
    found = {"special": special}
    try:
        rendered = _render(tokenizer, _SLOT)
        trim = _SLOT not in rendered and rendered == _render(tokenizer, _SLOT.strip())
    except ValueError:  # no chat template: vLLM cannot render chat prompts either
        return found
    prefix, slot, suffix = rendered.partition(_SLOT.strip() if trim else _SLOT)
    return {**found, "prefix": prefix, "suffix": suffix, "trim": trim} if slot else found


def cache_root() -> Path:
    return Path(os.environ.get("RUNNER_CACHE_DIR") or Path.home() / ".cache" / "runner")


def tokenizer_digest(model_path: Path) -> str:
    """A digest of the files that decide how the model's prompts are tokenized."""
    digest = hashlib.sha256(_CACHE_FORMAT)
    for name in _TOKENIZER_FILES:
        if (model_path / name).is_file():
            digest.update(name.encode() + (model_path / name).read_bytes())
    return digest.hexdigest()[:16]


def _cached_seams(model_path: Path) -> dict:
    cache = cache_root() / "chat-seams" / f"{tokenizer_digest(model_path)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    seams = _seams_in_child(model_path)
    atomic.write_json(cache, seams)  # concurrent launches read a whole entry or none
    return seams


def _seams_in_child(model_path: Path) -> dict:
    """_seams in a child process: importing transformers (and torch) writes into the environment, which the
    launcher's ranks would inherit (see runner.vllm_names)."""
    proc = subprocess.run([sys.executable, "-m", "runner.prompt_tokens", str(model_path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_seams(Path(sys.argv[1]))))
