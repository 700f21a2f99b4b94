"""``lichen chat``: a terminal chat against any Lichen (or OpenAI-compatible) gateway.

On a terminal it prompts, streams each answer as it is generated and keeps the
conversation; ``/model NAME`` switches models, ``/reset`` forgets the history,
``/quit`` leaves. Through a pipe it reads one message per line from stdin,
prints each answer on stdout, and exits at end of input (status 1 if any
request failed), so it composes with shell scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TextIO

import httpx
import typer

HELP = "commands: /model [NAME]  /reset  /quit  (anything else is sent as a message)"


class ChatError(Exception):
    """The gateway refused or failed a request; the message is safe to show."""


@dataclass
class ChatSession:
    """A conversation with a gateway over its OpenAI-compatible HTTP API."""

    url: str
    model: str = "auto"
    api_key: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    timeout_s: float = 300.0
    history: list[dict[str, str]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"

    def _body(self, text: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [*messages, *self.history, {"role": "user", "content": text}],
            "stream": True,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def ask(self, client: httpx.Client, text: str) -> Iterator[str]:
        """Stream the answer to ``text``; the exchange joins the history once it completes."""
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        parts: list[str] = []
        with client.stream(
            "POST", self.endpoint, json=self._body(text), headers=headers, timeout=self.timeout_s
        ) as response:
            if response.status_code >= 400:
                raise ChatError(_error_message(response.read(), response.status_code))
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    raise ChatError(_error_message(payload.encode(), 500))
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        parts.append(piece)
                        yield piece
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "".join(parts)},
        ]


def _error_message(raw: bytes, status: int) -> str:
    try:
        err = json.loads(raw).get("error")
        message = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        message = None
    return f"{message or 'request failed'} (HTTP {status})"


def _command(session: ChatSession, line: str, err: TextIO) -> bool:
    """Handle a ``/command``; return False to quit."""
    name, _, arg = line.partition(" ")
    if name in ("/quit", "/exit", "/q"):
        return False
    if name == "/model":
        if arg.strip():
            session.model = arg.strip()
        print(f"model: {session.model}", file=err)
    elif name == "/reset":
        session.history.clear()
        print("history cleared", file=err)
    else:
        print(HELP, file=err)
    return True


def run_chat(session: ChatSession, stdin: TextIO, stdout: TextIO, err: TextIO) -> int:
    """The chat loop; returns the exit status."""
    interactive = stdin.isatty()
    failed = False
    if interactive:
        print(f"chatting with {session.url} (model {session.model}); {HELP}", file=err)
    with httpx.Client() as client:
        while True:
            if interactive:
                print("you> ", end="", file=err, flush=True)
            line = stdin.readline()
            if not line:
                if interactive:
                    print(file=err)  # Ctrl-D: leave the shell's prompt on a line of its own
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not _command(session, text, err):
                    break
                continue
            try:
                for piece in session.ask(client, text):
                    stdout.write(piece)
                    stdout.flush()
                stdout.write("\n")
                stdout.flush()
            except ChatError as error:
                failed = True
                print(f"error: {error}", file=err)
            except httpx.HTTPError as exc:
                failed = True
                print(f"error: cannot reach {session.url} ({type(exc).__name__})", file=err)
            except KeyboardInterrupt:
                stdout.write("\n")
                if not interactive:
                    raise
    return 1 if failed else 0


def chat_command(
    url: Annotated[str, typer.Option(help="Gateway base URL.")] = "http://127.0.0.1:8470",
    model: Annotated[str, typer.Option(help="Model name, or auto.")] = "auto",
    api_key: Annotated[
        str | None, typer.Option(help="API key for the gateway.", envvar="LICHEN_API_KEY")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length cap.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
) -> None:
    """Chat with a gateway in the terminal (or answer stdin lines through a pipe)."""
    session = ChatSession(
        url=url,
        model=model,
        api_key=api_key,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    try:
        status = run_chat(session, sys.stdin, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        status = 130
    raise typer.Exit(status)
