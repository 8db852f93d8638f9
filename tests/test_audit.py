"""The audit ledger: hash chain, tamper detection at the exact line, torn-tail recovery,
redaction at one point, blob offload, and failing loudly when the disk refuses a write."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentkit import secrets
from agentkit._canonical import dumps
from agentkit.audit import GENESIS, Ledger, read_blob, show_ledger, verify_ledger
from agentkit.cli import app
from agentkit.errors import ConfigError, RunFailed
from agentkit.events import EventBus
from agentkit.runtime import Runtime
from agentkit.secrets import REDACTED
from agentkit.task import ModelSpec, TaskSpec

runner = CliRunner()

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\n-----END RSA PRIVATE KEY-----"
SECRET = "configured-secret-value-42"


def emit_sample(ledger: Ledger, n: int = 6) -> None:
    bus = EventBus("run1", sinks=[ledger.append])
    bus.emit("run.started", {"goal": "find tide pools", "ünïcode": "naïve café ✓"})
    for i in range(n - 2):
        bus.emit("tool.call", {"tool": "web_fetch", "arguments": {"url": f"https://e.org/{i}"},
                               "score": 0.30000000000000004 + i}, node_id=f"n{i}")
    bus.emit("run.finished", {"status": "succeeded"})


def make_ledger(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "run.jsonl"
    with Ledger(path) as ledger:
        emit_sample(ledger, n)
    return path


def verify_cli(path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", str(path)])
    return result.exit_code, result.stdout + result.stderr


def test_chain_verifies_and_links_every_line(tmp_path: Path) -> None:
    path = make_ledger(tmp_path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(6))
    assert records[0]["prev"] == GENESIS
    assert all(records[i]["prev"] == records[i - 1]["hash"] for i in range(1, 6))
    assert set(records[0]) == {"seq", "ts", "kind", "run_id", "node_id", "data", "prev", "hash"}
    result = verify_ledger(path)
    assert result.ok and result.count == 6 and result.head == records[-1]["hash"]
    code, output = verify_cli(path)
    assert code == 0 and "intact, 6 records" in output
    assert result.finished and "has not finished" not in output


def test_verify_says_when_the_run_never_finished(tmp_path: Path) -> None:
    """A chain that is intact but has no ``run.finished`` at its end (a run still going, or a
    killed one) verifies (exit 0) and says the run has not finished, and how to continue it."""
    path = tmp_path / "run.jsonl"
    with Ledger(path) as ledger:
        bus = EventBus("r1", sinks=[ledger.append])
        bus.emit("run.started", {"goal": "t"})
        bus.emit("node.started", {}, node_id="a")
    assert not verify_ledger(path).finished
    code, output = verify_cli(path)
    assert code == 0 and "intact, 2 records" in output and "agentkit resume" in output


def _line_of(data: bytes, pos: int) -> int:
    """The 0-based line holding byte `pos` (a newline belongs to the line it ends)."""
    return data.count(b"\n", 0, pos)


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_flipping_any_single_byte_is_caught_at_its_line(tmp_path: Path, mask: int) -> None:
    """Every byte position of the ledger, flipped, makes verify fail naming that line's seq,
    as tampering: not even a flipped final newline passes for a torn (crash) tail."""
    path = make_ledger(tmp_path)
    original = path.read_bytes()
    for pos in range(len(original)):
        tampered = bytearray(original)
        tampered[pos] ^= mask
        path.write_bytes(bytes(tampered))
        result = verify_ledger(path)
        assert not result.ok, f"flip at byte {pos} went unnoticed"
        assert result.first_bad_seq == _line_of(original, pos), (pos, result)
        assert result.state == "tampered", (pos, result)


def test_cli_verify_exits_1_naming_the_tampered_seq(tmp_path: Path) -> None:
    path = make_ledger(tmp_path)
    original = path.read_bytes()
    step = max(1, len(original) // 40)
    for pos in range(0, len(original), step):
        tampered = bytearray(original)
        tampered[pos] ^= 0x04
        path.write_bytes(bytes(tampered))
        code, output = verify_cli(path)
        assert code == 1, (pos, output)
        assert f"TAMPERED at seq {_line_of(original, pos)}:" in output, (pos, output)


def test_edit_with_recomputed_hash_is_caught_at_the_next_line(tmp_path: Path) -> None:
    """Re-hashing an edited line only moves the break to the next line's `prev`."""
    import hashlib

    path = make_ledger(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[2])
    record["data"]["tool"] = "run_code"
    del record["hash"]
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    lines[2] = body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'
    path.write_bytes(b"".join(lines))
    result = verify_ledger(path)
    assert not result.ok and result.first_bad_seq == 3 and "prev" in str(result.reason)


def test_deleted_and_reordered_lines_are_caught(tmp_path: Path) -> None:
    path = make_ledger(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    deleted = verify_ledger(path)
    assert not deleted.ok and deleted.first_bad_seq == 2 and "seq 3 where 2" in str(deleted.reason)
    path.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    moved = verify_ledger(path)
    assert not moved.ok and moved.first_bad_seq == 1


def test_cut_tail_caught_with_exported_head(tmp_path: Path) -> None:
    path = make_ledger(tmp_path)
    head = verify_ledger(path).head
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    assert verify_ledger(path).ok  # a chain alone cannot see a cut tail...
    result = verify_ledger(path, expected_head=head)  # ...the exported head can
    assert not result.ok and result.first_bad_seq == 5
    cli = runner.invoke(app, ["audit", "verify", str(path), "--expect-head", head])
    assert cli.exit_code == 1 and "TAMPERED at seq 5" in cli.stdout


def test_torn_last_line_is_reported_then_recovered_on_reopen(tmp_path: Path) -> None:
    path = make_ledger(tmp_path, n=4)
    torn = b'{"data":{"tool":"web_fetch","arguments":{"url":"https://e.org/x'
    with path.open("ab") as fh:
        fh.write(torn)  # a crash in the middle of a write
    result = verify_ledger(path)
    assert not result.ok and result.first_bad_seq == 4 and "torn last line" in str(result.reason)
    assert result.state == "incomplete" and result.count == 4  # a crash, not tampering
    code, output = verify_cli(path)
    assert code == 3 and "INCOMPLETE (torn last line at seq 4)" in output
    assert "TAMPERED" not in output

    with Ledger(path) as ledger:  # reopen: cut the torn bytes, say so, continue the chain
        EventBus("run2", sinks=[ledger.append]).emit("run.started", {"goal": "resume"})
    records = [json.loads(line) for line in path.read_text().splitlines()]
    recovered = records[4]
    assert recovered["kind"] == "recovered" and recovered["seq"] == 4
    assert recovered["data"]["cut_bytes"] == len(torn)
    assert recovered["data"]["cut_preview"].startswith('{"data":{"tool"')
    assert records[5]["kind"] == "run.started" and records[5]["seq"] == 5
    assert verify_ledger(path).ok


def test_torn_first_line_recovers_from_genesis(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"data":{"go')
    with Ledger(path) as ledger:
        ledger.record("run.started", {}, run_id="r", node_id=None, ts=1.0)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["recovered", "run.started"]
    assert records[0]["prev"] == GENESIS and verify_ledger(path).ok


def test_reopening_a_clean_ledger_continues_the_chain_silently(tmp_path: Path) -> None:
    path = make_ledger(tmp_path, n=3)
    with Ledger(path) as ledger:
        ledger.record("note", {"x": 1}, run_id="r", node_id=None, ts=2.0)
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds == ["run.started", "tool.call", "run.finished", "note"]
    assert verify_ledger(path).ok


def test_secrets_are_redacted_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with Ledger(path, secrets=[SECRET]) as ledger:
        bus = EventBus("r", sinks=[ledger.append])
        bus.emit("model.request", {
            "headers": {"Authorization": "Bearer abcdef0123456789", "x-api-key": "k-123456",
                        "Cookie": "session=abc", "content-type": "application/json"},
            "body": {"messages": [{"role": "user", "content": f"my key is {SECRET}!"}],
                     "password": "hunter2", "max_tokens": 100},
            "note": "sk-proj-ABCDEFGHIJKLMNOPQRST and sk-ant-api03-zyxwvutsrqponm",
            "aws": "AKIAIOSFODNN7EXAMPLE", "pem": PEM, "bearer_text": "use Bearer tok_0123456789ab"})
    text = path.read_text()
    for leaked in (SECRET, "abcdef0123456789", "k-123456", "session=abc", "hunter2",
                   "sk-proj-ABCDEFGH", "sk-ant-api03", "AKIAIOSFODNN7EXAMPLE", "MIIEowIBAAKCAQEA",
                   "tok_0123456789ab"):
        assert leaked not in text, leaked
    data = json.loads(text)["data"]
    assert data["headers"]["Authorization"] == REDACTED
    assert data["headers"]["content-type"] == "application/json"
    assert data["body"]["max_tokens"] == 100  # 'tokens' counts are not credentials
    assert data["body"]["messages"][0]["content"] == f"my key is {REDACTED}!"
    assert verify_ledger(path).ok


CREDENTIAL_KEYS = ["authorization", "Proxy-Authorization", "X-API-KEY", "x-goog-api-key",
                   "api-key", "api_key", "apiKey", "cookie", "Set-Cookie", "passwd", "Password",
                   "secret", "client_secret", "token", "refresh_token", "X-Auth-Token",
                   "db-password", "openai_api_key", "Stripe-Api-Key"]


@pytest.mark.parametrize("key", CREDENTIAL_KEYS)
@pytest.mark.parametrize("nested", [False, True])
def test_every_credential_key_form_is_redacted(tmp_path: Path, key: str, nested: bool) -> None:
    """Each form a credential key takes, alone in an event (so no other key lets it through
    the cheap pre-check), as a plain value and holding a mapping; counts are kept."""
    path = tmp_path / "run.jsonl"
    value: Any = {"v": "s3cr3t-value"} if nested else "s3cr3t-value"
    with Ledger(path) as ledger:
        ledger.record("tool.result", {"result": {key: value}, "max_tokens": 9, "tokens": 3},
                      run_id="r", node_id=None, ts=1.0)
    text = path.read_text()
    assert "s3cr3t-value" not in text
    data = json.loads(text)["data"]
    assert data["result"][key] == REDACTED and data["max_tokens"] == 9 and data["tokens"] == 3


def test_a_credential_key_after_keys_that_only_end_like_one_is_redacted(tmp_path: Path) -> None:
    """The cheap pre-check looks at every key ending like a credential's: a harmless one
    (``call_key``, ``monkey``, ``tokens``) before the real one does not let the event through,
    nor does a name spelt with the characters a case-insensitive regex reads as ASCII."""
    path = tmp_path / "run.jsonl"
    keys = ["openai_api_key", "\u017fecret", "api_\u212aey", "db-pa\u017f\u017fword"]
    with Ledger(path) as ledger:
        for key in keys:
            ledger.record("tool.result", {"call_key": "a#1/a#1/1/t0", "monkey": "banana",
                                          "max_tokens": 9, "z": {key: "s3cr3t-value"}},
                          run_id="r", node_id=None, ts=1.0)
    lines = path.read_text().splitlines()
    assert "s3cr3t-value" not in "".join(lines)
    for key, line in zip(keys, lines, strict=True):
        data = json.loads(line)["data"]
        assert data["z"][key] == REDACTED
        assert (data["call_key"], data["monkey"], data["max_tokens"]) == ("a#1/a#1/1/t0", "banana", 9)


def test_key_redaction_equals_the_regex_pass_it_skips() -> None:
    """Seeded random events whose keys are glued from credential-like pieces: the pre-check
    never lets through an event the key regexes would change (and changes what they do)."""
    def regex_only(text: str) -> str:
        if secrets._SECRET_KEY_NESTED.search(text):
            return dumps(secrets._redact_keys_deep(json.loads(text)))
        return secrets._SECRET_KEY.sub(
            lambda m: m.group(0).split('":', 1)[0] + f'":"{REDACTED}"', text)

    pieces = ["api_key", "call_key", "KEY", "x-api-key", "monkey", "Token", "tokens", "refresh_",
              'a"token', "passwd", "pass", "word", "secret", "client_", "cookie", "Set-",
              "authorization", "Proxy-", "apiKey", "-", "_", " ", "\\", "\u0130", "\u0131",
              "\u017f", "\u212a", "e", "y", "\u00e9"]
    values: list[Any] = ["v", 1, None, True, [1, "x"], {"k": "v"}, "", 'token":']
    rng = random.Random(7)

    def event(depth: int = 0) -> dict[str, Any]:
        return {"".join(rng.choices(pieces, k=rng.randint(1, 3))):
                event(depth + 1) if depth < 2 and rng.random() < 0.3 else rng.choice(values)
                for _ in range(rng.randint(1, 4))}

    changed = 0
    for _ in range(3000):
        text = dumps(event())
        assert secrets.redact_keys(text) == regex_only(text), text
        changed += secrets.redact_keys(text) != text
    assert 500 < changed < 2500  # both kinds of event were drawn


def test_runtime_ledger_redacts_the_keys_its_models_name(tmp_path: Path) -> None:
    import asyncio

    task = TaskSpec(name="t", goal="g", model="m",
                    models={"m": ModelSpec(model="x", api_key_env="MY_PROVIDER_KEY")})
    runtime = Runtime(task, ledger_dir=tmp_path, environ={"MY_PROVIDER_KEY": "pk-live-998877665544"})

    async def go() -> None:
        async with runtime:
            runtime.emit("model.request", {"echo": "sent pk-live-998877665544 upstream"})

    asyncio.run(go())
    assert runtime.ledger_path is not None
    text = runtime.ledger_path.read_text()
    assert "pk-live-998877665544" not in text and REDACTED in text
    assert verify_ledger(runtime.ledger_path).ok


def test_large_strings_offloaded_to_blobs_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    page = "".join(f"line {i}: tide pools hold anemones\n" for i in range(4000))  # ~140 KB
    with Ledger(path) as ledger:
        ledger.record("url.fetched", {"url": "https://e.org", "text": page, "small": "s"},
                      run_id="r", node_id="n1", ts=1.0)
    line = path.read_text()
    assert len(line) < 2000
    ref = json.loads(line)["data"]["text"]
    assert ref["size"] == len(page.encode()) and ref["preview"] == page[:512]
    assert read_blob(path, ref) == page
    assert verify_ledger(path).ok
    blob = path.with_name("run.jsonl.blobs") / ref["$blob"]
    blob.write_text(page.replace("anemones", "starfish"))
    result = verify_ledger(path)
    assert not result.ok and result.first_bad_seq == 0 and "blob" in str(result.reason)


def test_failed_write_stops_the_run(tmp_path: Path) -> None:
    """/dev/full refuses every write with ENOSPC: the sink raises, so the run cannot go on."""
    ledger = Ledger("/dev/full", fsync="always")
    bus = EventBus("r", sinks=[ledger.append])
    with pytest.raises(RunFailed, match="No space left|unaudited"):
        bus.emit("run.started", {})
    with pytest.raises(RunFailed, match="failed earlier"):
        bus.emit("tool.call", {})
    ledger.close()


def test_buffered_lines_are_written_in_order_on_close(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    ledger = Ledger(path, fsync="never", batch_bytes=10_000_000, flush_events=1_000_000,
                    flush_after_s=3600)
    for i in range(500):
        ledger.record("tick", {"i": i}, run_id="r", node_id=None, ts=float(i))
    assert path.read_bytes() == b""  # still buffered
    ledger.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["data"]["i"] for r in records] == list(range(500))
    assert verify_ledger(path).ok


def test_unknown_fsync_policy_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fsync"):
        Ledger(tmp_path / "x.jsonl", fsync="sometimes")


def test_unusual_payload_values_are_recorded_not_crashed_on(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with Ledger(path) as ledger:
        ledger.record("x", {"path": Path("/a/b"), "raw": b"\x00\x01", "tags": {"b", "a"},
                            "tuple": (1, 2), "model": ModelSpec(model="m")},
                      run_id="r", node_id=None, ts=1.0)
    data = json.loads(path.read_text())["data"]
    assert data["path"] == "/a/b" and data["raw"]["$bytes"] == 2 and data["tags"] == ["a", "b"]
    assert data["tuple"] == [1, 2] and data["model"]["model"] == "m"


def test_show_ledger_prints_a_timeline(tmp_path: Path) -> None:
    path = make_ledger(tmp_path)
    lines = list(show_ledger(path))
    assert len(lines) == 6 and "run.started" in lines[0] and "web_fetch" in lines[1]
    result = runner.invoke(app, ["audit", "show", str(path)])
    assert result.exit_code == 0 and "run.finished" in result.stdout
    missing = runner.invoke(app, ["audit", "show", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such ledger" in missing.stderr


def test_blob_threshold_counts_utf8_bytes_and_odd_text_never_crashes(tmp_path: Path) -> None:
    """30,000 CJK characters are 90 KB of UTF-8: offloaded. A lone surrogate (from bytes
    decoded with surrogateescape) is written as '?' rather than stopping the run."""
    path = tmp_path / "run.jsonl"
    with Ledger(path) as ledger:
        data: dict[Any, Any] = {"cjk": "中" * 30_000, "odd": "a\udcffb", 7: "int key"}
        ledger.record("x", data,
                      run_id="r", node_id=None, ts=1.0)
    data = json.loads(path.read_text())["data"]
    assert data["cjk"]["size"] == 90_000 and read_blob(path, data["cjk"]) == "中" * 30_000
    assert data["odd"] == "a?b" and data["7"] == "int key"
    assert verify_ledger(path).ok


def test_data_orjson_refuses_is_still_recorded_in_canonical_form(tmp_path: Path) -> None:
    """The ledger encodes with orjson and falls back to json's encoder for what orjson
    refuses: integers beyond 64 bits, keys that are not strings, nesting deeper than 254.
    Either way the line holds canonical JSON (sorted keys, no spaces, UTF-8), the same text
    json.dumps writes, and the chain verifies."""
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    samples: list[dict[Any, Any]] = [
        {"b": 2**80, "a": -(2**70)},
        {3: "int key", "z": {"y": 1, "x": [1.5, None, True]}},
        {"deep": deep},
        {"z": "naïve café ✓ 中", "a": {"c": 0.30000000000000004, "b": "\u2028\n\"q\""}},
    ]
    path = tmp_path / "run.jsonl"
    with Ledger(path) as ledger:
        for i, data in enumerate(samples):
            ledger.record("x", data, run_id="r", node_id=None, ts=float(i))
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # not splitlines: U+2028
    for data, line in zip(samples, lines, strict=True):
        written = line[len('{"data":'):line.index(',"kind":"x"')]
        canonical = {str(k): v for k, v in data.items()}
        assert written == json.dumps(canonical, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False)
    assert verify_ledger(path).ok and verify_ledger(path).count == len(samples)


@pytest.mark.parametrize("fsync, written_at_once", [("always", True), ("interval", True),
                                                    ("close", False), ("never", False)])
def test_fsync_policies_decide_when_lines_reach_the_file(tmp_path: Path, fsync: str,
                                                         written_at_once: bool) -> None:
    path = tmp_path / "run.jsonl"
    ledger = Ledger(path, fsync=fsync, fsync_interval_s=0.0, flush_after_s=3600)
    for i in range(3):
        ledger.record("tick", {"i": i}, run_id="r", node_id=None, ts=float(i))
        on_disk = len(path.read_bytes().splitlines())
        assert on_disk == (i + 1 if written_at_once else 0), (fsync, i, on_disk)
    ledger.record("node.finished", {}, run_id="r", node_id="n", ts=3.0)  # a milestone
    assert len(path.read_bytes().splitlines()) == 4
    ledger.close()
    assert verify_ledger(path).ok and verify_ledger(path).count == 4
