"""Hostile chat templates in model folders: work bombs the jinja sandbox does not stop.

transformers renders a folder's ``chat_template.jinja`` in jinja's sandbox, which blocks
attribute escapes and caps ``range`` but not work: nested loops, ``'x' * 10**9``, a macro that
calls itself twice, a string doubled in a loop. refseg reads the template when the folder loads
and refuses, in one line, anything but the constructs the official Qwen-VL templates use.
"""

from __future__ import annotations

import json

import pytest

from tests.hostile.harness import run_cli_cases, run_python

#: The shape of the official Qwen3-VL template (tools, reversed scan, counters, tool calls).
QWEN3_VL = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}{{- messages[0].content }}{%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}{{- content.text }}{%- endif %}
            {%- endfor %}
        {%- endif %}
    {%- endif %}
    {%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}{{- message.content }}{%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif 'text' in content %}{{- content.text }}{%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- if '</think>' in content %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if tool_call.function %}{%- set tool_call = tool_call.function %}{%- endif %}
                {{- tool_call.arguments | tojson }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"""

NESTED_RANGES = "{% for a in range(99999) %}{% for b in range(99999) %}{% for c in range(99999) %}x{% endfor %}{% endfor %}{% endfor %}"  # noqa: E501

HOSTILE = {
    "nested-ranges": NESTED_RANGES,
    "deep-loops": "{% for a in messages %}" * 4 + "{% endfor %}" * 4,
    "repeat": "{{ 'x' * 1000000000 }}",
    "escape": "{{ messages.__class__.__mro__ }}",
    "macro": "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "doubling": "{% set ns = namespace(x='a') %}{% for m in messages %}{% for c in m.content %}"
    "{% set ns.x = ns.x + ns.x %}{% endfor %}{% endfor %}",
    "concat-doubling": "{% set ns = namespace(x='a') %}{% for m in messages %}"
    "{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "center": "{{ 'x' | center(1000000000) }}",
    "format": "{{ '%s%s' % (messages, messages) }}",
    "string-loop": "{% for c in 'abc' %}{% endfor %}",
    "lipsum": "{{ lipsum(1000) }}",
    "recursive": "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
    "unclosed": "{% for m in messages %}",
}


def test_official_shapes_are_accepted():
    from refseg.grounding.chat_template import check_chat_template
    from refseg.testing.tiny_vlm import chat_template

    for template in (QWEN3_VL, chat_template(None), chat_template("You are a helper.")):
        assert check_chat_template(template, "t") == template


def test_hostile_templates_are_refused_without_rendering():
    """Every case in one child, under the harness's limits: each must be one line."""
    code = f"""
        import json
        from refseg.errors import RefsegError
        from refseg.grounding.chat_template import check_chat_template
        out = {{}}
        for name, template in {HOSTILE!r}.items():
            try:
                check_chat_template(template, "chat_template.jinja")
                out[name] = "accepted"
            except RefsegError as exc:
                out[name] = str(exc)
        print(json.dumps(out))
    """
    done = run_python(code, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, message in json.loads(done.stdout).items():
        assert message != "accepted", name
        assert "\n" not in message and "chat_template.jinja" in message, (name, message)


@pytest.fixture(scope="module")
def outcomes(tiny_qwen3_vl_dir, tmp_path_factory):
    """``refseg segment`` on two copies of the tiny model folder, in one limited child: one
    with a hostile chat template, one whose weights are a pickle (``pytorch_model.bin``)
    instead of safetensors (transformers refused the pickle too, with a 60-line traceback)."""
    import pickle

    from tests.conftest import ASSETS

    root = tmp_path_factory.mktemp("chat-templates")
    image = str(ASSETS / "astronaut.jpg")
    cases = {}
    for name in ("template", "pickle"):
        folder = root / name
        folder.mkdir()
        for item in tiny_qwen3_vl_dir.iterdir():
            weights = item.name.endswith((".safetensors", ".index.json"))
            template = item.name == "chat_template.jinja"
            if not (weights and name == "pickle") and not (template and name == "template"):
                (folder / item.name).symlink_to(item)
        if name == "template":
            (folder / "chat_template.jinja").write_text(NESTED_RANGES)
        else:
            (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
        cases[name] = ["segment", image, "the astronaut", "--grounder", f"qwen3-vl:{folder}"]
    return run_cli_cases(cases, timeout=60)


def test_a_model_folder_with_a_hostile_template_is_one_line(outcomes):
    out = outcomes["template"]
    assert out.one_line_error, out.stderr[-2000:]
    assert "chat template refused" in out.stderr


def test_a_model_folder_with_only_a_pickle_is_one_line(outcomes):
    out = outcomes["pickle"]
    assert out.one_line_error, out.stderr[-2000:]
    assert "pytorch_model.bin" in out.stderr and "safetensors" in out.stderr
