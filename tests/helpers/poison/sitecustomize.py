"""Test-only, on PYTHONPATH of a run's processes: a chat that holds POISON-PILL kill -9s the rank's vLLM engine
core (the rank itself when the core runs in it) as it is put in flight, one that holds HANG-PILL stops it (SIGSTOP), so a line's request ends the engine at
the process boundary as a real poison or hang would. Only vLLM's LLM.enqueue_chat is wrapped; the runner is not."""

import importlib.abc
import importlib.util
import os
import signal
import sys

MARKS = {"POISON-PILL": signal.SIGKILL, "HANG-PILL": signal.SIGSTOP}


def _core_pids(llm) -> list:
    """The engine core's processes; the rank's own when the core runs in it (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    resources = getattr(llm.llm_engine.engine_core, "resources", None)
    return [proc.pid for proc in resources.engine_manager.processes] if resources else [os.getpid()]


def _wrap(cls) -> None:
    original = cls.enqueue_chat

    def enqueue_chat(self, messages, *args, **kwargs):
        text = repr(messages)
        for mark, sig in MARKS.items():
            if mark in text:
                for pid in _core_pids(self):
                    os.kill(pid, sig)
        return original(self, messages, *args, **kwargs)

    cls.enqueue_chat = enqueue_chat


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "vllm.entrypoints.llm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            _wrap(module.LLM)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
