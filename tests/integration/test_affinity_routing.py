"""Prefix affinity over the real wire: a conversation's turns stay on the node that holds it."""

from __future__ import annotations

from typing import Any

from fakes import ANSWER, FakeEngine, LocalNetwork

from lichen.routing.scheduler import Scheduler


def _scheduler(net: LocalNetwork) -> Scheduler:
    scheduler = net.completions.router.scheduler
    assert isinstance(scheduler, Scheduler)
    return scheduler


async def _ask(net: LocalNetwork, messages: list[dict[str, Any]]) -> str:
    response = await net.client.post(
        "/v1/chat/completions", json={"model": "fake-model", "messages": messages}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def _served(engines: list[FakeEngine]) -> list[int]:
    return [len(e.requests) for e in engines]


async def test_each_conversation_stays_on_the_node_that_holds_it(
    net: LocalNetwork,
) -> None:
    engines = [FakeEngine() for _ in range(3)]
    for i, engine in enumerate(engines):
        await net.add_node(engine, f"n{i}")
    system = {"role": "system", "content": "Answer briefly. " * 60}
    conversations: list[list[dict[str, Any]]] = [
        [system, {"role": "user", "content": f"conversation {c} " + "q " * 300}] for c in range(3)
    ]
    scheduler = _scheduler(net)
    homes = [0, 1, 2]
    for home, history in zip(homes, conversations, strict=True):
        # Turn 1 of each conversation on a node of the test's choosing (the others blocked);
        # left alone, sequential turns would all go to the most trusted idle node.
        target = net.nodes[home].peer_id
        scheduler.blocked = lambda pid, target=target: pid != target
        answer = await _ask(net, history)
        assert answer == "".join(ANSWER) and len(engines[home].requests) == 1
        history.append({"role": "assistant", "content": answer})
    scheduler.blocked = None
    for turn in range(2, 5):
        for home, history in zip(homes, conversations, strict=True):
            history.append({"role": "user", "content": f"turn {turn} " + "more " * 100})
            before = _served(engines)
            history.append({"role": "assistant", "content": await _ask(net, history)})
            served = [a - b for a, b in zip(_served(engines), before, strict=True)]
            assert served.index(1) == home, f"turn {turn} left its node"
    table = scheduler.affinity
    assert table is not None
    assert all(isinstance(d, int) for node in table.nodes() for d in table.held(node))
