"""Which server of a host takes the next request (runner/server_pool.py), over real processes standing in for
the servers' process groups (no engine: the routing reads only whether each process lives, restarts and gives
up); the real servers are in tests/test_servers_per_host.py."""

import asyncio
import subprocess

from omegaconf import OmegaConf

from runner.client import Supervisor
from runner.schema import ServerPerNodeConfig
from runner.server import VllmServer
from runner.server_pool import ServerPool


def _supervisors(tmp_path, count):
    mode = OmegaConf.structured(ServerPerNodeConfig)
    supervisors = []
    for i in range(count):
        server = VllmServer("/no/model", "m", 0, {}, [], tmp_path / f"serve{i}.log", {})
        server.proc = subprocess.Popen(["sleep", "60"])
        supervisors.append(Supervisor(server, mode))
    return supervisors


def test_requests_go_to_the_least_outstanding_serving_server_and_none_once_all_gave_up(tmp_path):
    supervisors = _supervisors(tmp_path, 3)
    first, second, third = supervisors

    async def route():
        pool = ServerPool(supervisors, per_server=4)
        assert pool.capacity == 12
        with pool.sending(await pool.pick()), pool.sending(await pool.pick()):
            assert pool.outstanding == [1, 1, 0] and await pool.pick() is third
            third.server.proc.kill()
            third.server.proc.wait()
            assert await pool.pick() is first  # a dead server takes nothing, before any health check
        first.ready.clear()  # restarting
        assert await pool.pick() is second
        second.failed = "gave up"
        waiting = asyncio.create_task(pool.pick())  # no server serves: the request waits for one
        await asyncio.sleep(0.1)
        assert not waiting.done()
        first.ready.set()
        first.on_change()  # what a finished restart calls
        assert await asyncio.wait_for(waiting, 1) is first
        first.failed = third.failed = "gave up"
        assert await pool.pick() is None and "server 1: gave up" in pool.failed
        assert pool.sent == [1, 1, 0]

    try:
        asyncio.run(route())
    finally:
        for s in supervisors:
            s.server.proc.kill()
            s.server.proc.wait()
