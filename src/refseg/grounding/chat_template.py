"""Chat templates from model folders: only the constructs a Qwen-VL template uses.

A model folder's ``chat_template.jinja`` is a program someone else wrote, rendered for every
prompt. transformers renders it in jinja's sandbox, which stops attribute escapes and caps
``range`` but not work: three nested ``range(100000)`` loops, ``'x' * 10**9``, a macro that
calls itself twice, or a loop that doubles a string each turn exhaust time or memory inside a
single render, where nothing can interrupt it. So the template is read (parsed, never run) when
the model folder loads, and refused in one line unless it keeps to what the official Qwen-VL
templates do:

* loops only over the conversation's own lists (``messages``, ``tools``, a message's
  ``content`` or ``tool_calls``, reversed or sliced), at most :data:`MAX_LOOP_DEPTH` deep,
  never ``recursive``;
* calls only to ``namespace``, ``raise_exception``, ``strftime_now`` and string methods that
  cannot grow their input (``split``, ``strip``, ``startswith`` ...);
* no ``*``, ``**``, ``/``, ``//`` or ``%`` (repetition and formatting), no macros, call blocks,
  includes or imports, no attribute or key starting with ``_``;
* filters and tests from a fixed list, with small constant arguments;
* a variable updated from itself only as a counter (``n.value = n.value + 1``) or through
  methods that cannot lengthen it (``content = content.split('</think>')[-1]``).

Each of these bounds one way a render's cost can grow; together they make a render's work a
small multiple of the template and the messages.
"""

from __future__ import annotations

from typing import Any

from refseg.errors import ModelError

__all__ = ["MAX_LOOP_DEPTH", "MAX_TEMPLATE_BYTES", "check_chat_template"]

#: Deepest loop nesting (the official templates nest two: messages, then their parts).
MAX_LOOP_DEPTH = 3
#: A chat template is a few kilobytes (Qwen3-VL's is ~6 KB).
MAX_TEMPLATE_BYTES = 256 * 1024

_CALLS = frozenset({"namespace", "raise_exception", "strftime_now"})
_METHODS = frozenset(
    {
        "split", "rsplit", "strip", "lstrip", "rstrip", "startswith", "endswith", "lower",
        "upper", "title", "capitalize", "items", "keys", "values", "get", "splitlines",
    }
)  # fmt: skip
_FILTERS = frozenset(
    {
        "length", "count", "tojson", "trim", "string", "first", "last", "reverse", "list",
        "items", "dictsort", "safe", "e", "escape", "lower", "upper", "title", "capitalize",
        "int", "float", "abs", "default", "d", "join", "selectattr", "rejectattr", "select",
        "reject", "map", "unique", "min", "max", "sort",
    }
)  # fmt: skip
_TESTS = frozenset(
    {
        "string", "defined", "undefined", "none", "mapping", "sequence", "iterable", "number",
        "true", "false", "boolean", "integer", "float", "sameas", "eq", "ne", "equalto", "in",
        "lt", "gt", "le", "ge", "odd", "even", "divisibleby", "lower", "upper", "callable",
    }
)  # fmt: skip
#: What a loop may run over: these names, or these attributes/keys of anything.
_LOOP_ROOTS = frozenset({"messages", "tools", "documents"})
_LOOP_FIELDS = frozenset({"content", "tool_calls", "tools", "images", "videos"})
#: Filters a loop's list may go through (none of them makes it longer).
_LOOP_FILTERS = frozenset(
    {"reverse", "list", "selectattr", "rejectattr", "select", "reject", "unique", "items"}
)
#: Largest integer a filter or test argument may be (an indent, a count).
_MAX_ARG = 64


class _Refused(Exception):
    pass


def check_chat_template(template: Any, where: str) -> str:
    """``template`` if it keeps to the constructs above; else a one-line :class:`ModelError`
    naming ``where`` (the file) and the first construct refused."""
    import jinja2

    if not isinstance(template, str) or not template:
        raise ModelError(f"{where}: the chat template is not text")
    if len(template.encode("utf-8", errors="replace")) > MAX_TEMPLATE_BYTES:
        raise ModelError(f"{where}: the chat template is over {MAX_TEMPLATE_BYTES // 1024} KiB")
    try:
        tree = _environment().parse(template)
    except (jinja2.TemplateError, RecursionError) as exc:
        first = " ".join(str(exc).split())[:120]
        raise ModelError(f"{where}: unreadable chat template ({first})") from None
    try:
        _walk(tree, 0)
    except _Refused as exc:
        raise ModelError(
            f"{where}: chat template refused: {exc} (refseg runs only templates built like "
            "the official Qwen-VL ones)"
        ) from None
    except RecursionError:
        raise ModelError(f"{where}: chat template refused: nested too deeply") from None
    return template


def _environment() -> Any:
    """A parser knowing the tags transformers adds (loop controls, ``{% generation %}``)."""
    from jinja2 import Environment, nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = frozenset({"generation"})

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return Environment(extensions=["jinja2.ext.loopcontrols", Generation])


def _walk(node: Any, depth: int) -> None:
    from jinja2 import nodes

    refused = (nodes.Macro, nodes.CallBlock, nodes.Include, nodes.Import, nodes.FromImport)
    if isinstance(node, (*refused, nodes.Extends)):
        raise _Refused(f"{type(node).__name__.lower()} (line {node.lineno})")
    if isinstance(node, (nodes.Mul, nodes.Pow, nodes.Div, nodes.FloorDiv, nodes.Mod)):
        raise _Refused(f"the {node.operator!r} operator (line {node.lineno})")
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        raise _Refused(f"attribute {node.attr!r} (line {node.lineno})")
    keyed = isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
    key = node.arg.value if keyed else None
    if isinstance(key, str) and key.startswith("_"):
        raise _Refused(f"key {node.arg.value!r} (line {node.lineno})")
    if isinstance(node, nodes.Call):
        _check_call(node)
    if (isinstance(node, nodes.Filter) and node.node is not None) or isinstance(node, nodes.Test):
        _check_filter(node)
    if isinstance(node, (nodes.Assign, nodes.AssignBlock)):
        _check_assign(node)
    if isinstance(node, nodes.For):
        if node.recursive:
            raise _Refused(f"a recursive loop (line {node.lineno})")
        if depth + 1 > MAX_LOOP_DEPTH:
            raise _Refused(f"loops nested over {MAX_LOOP_DEPTH} deep (line {node.lineno})")
        _check_loop_list(node.iter, node.lineno)
        _walk(node.iter, depth)
        for child in (node.target, node.test):
            if child is not None:
                _walk(child, depth)
        for child in [*node.body, *node.else_]:
            _walk(child, depth + 1)
        return
    for child in node.iter_child_nodes():
        _walk(child, depth)


def _check_call(node: Any) -> None:
    from jinja2 import nodes

    if node.dyn_args is not None or node.dyn_kwargs is not None:
        raise _Refused(f"a call with *args or **kwargs (line {node.lineno})")
    target = node.node
    if isinstance(target, nodes.Name) and target.name in _CALLS:
        return
    if isinstance(target, nodes.Getattr) and target.attr in _METHODS:
        return
    name = getattr(target, "name", None) or getattr(target, "attr", None) or "an expression"
    raise _Refused(f"a call to {name!r} (line {node.lineno})")


def _check_filter(node: Any) -> None:
    from jinja2 import nodes

    allowed = _TESTS if isinstance(node, nodes.Test) else _FILTERS
    kind = "test" if isinstance(node, nodes.Test) else "filter"
    if node.name not in allowed:
        raise _Refused(f"the {node.name!r} {kind} (line {node.lineno})")
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        raise _Refused(f"a {kind} with *args or **kwargs (line {node.lineno})")
    for arg in [*node.args, *(k.value for k in node.kwargs)]:
        number = isinstance(arg, nodes.Const) and isinstance(arg.value, (int, float))
        if number and abs(arg.value) > _MAX_ARG:
            raise _Refused(f"{kind} {node.name!r} with argument {arg.value!r}")


def _names(node: Any) -> set[str]:
    """The variables (``x``, ``ns.attr``) an expression reads."""
    from jinja2 import nodes

    out = set()
    for sub in [node, *node.find_all((nodes.Name, nodes.Getattr))]:
        if isinstance(sub, nodes.Name):
            out.add(sub.name)
        elif isinstance(sub, nodes.Getattr) and isinstance(sub.node, nodes.Name):
            out.add(f"{sub.node.name}.{sub.attr}")
    return out


def _check_assign(node: Any) -> None:
    """A variable may be set from itself only as a counter (``x = x + 1``) or through string
    methods that cannot make it longer (``x = x.split(...)[-1].strip()``)."""
    from jinja2 import nodes

    target = node.target
    if isinstance(target, nodes.NSRef):
        name = f"{target.name}.{target.attr}"
    elif isinstance(target, nodes.Name):
        name = target.name
    else:
        return  # tuple unpacking: takes values apart, cannot grow one
    value = node.node if isinstance(node, nodes.Assign) else None
    if value is None:  # a {% set x %}...{% endset %} block
        reads = set().union(*(_names(n) for n in node.body)) if node.body else set()
        if name in reads:
            raise _Refused(f"{name} set from itself (line {node.lineno})")
        return
    if name not in _names(value):
        return
    counter = (
        isinstance(value, (nodes.Add, nodes.Sub))
        and isinstance(value.right, nodes.Const)
        and isinstance(value.right.value, int)
        and name not in _names(value.right)
        and not isinstance(value.left, (nodes.Add, nodes.Sub, nodes.Concat))
    )
    growth = (nodes.Add, nodes.Sub, nodes.Concat, nodes.List, nodes.Tuple, nodes.Dict)
    shrinks = not isinstance(value, growth) and not any(value.find_all((*growth, nodes.Filter)))
    shrinks = shrinks and not any(
        isinstance(call.node, nodes.Name) for call in value.find_all(nodes.Call)
    )
    if not counter and not shrinks:  # x.split(...)[-1], x.strip(): cannot grow x
        raise _Refused(f"{name} set from itself other than as a counter (line {node.lineno})")


def _check_loop_list(node: Any, line: int) -> None:
    """A loop runs over the conversation's own lists, filtered, reversed or sliced."""
    from jinja2 import nodes

    while True:
        filtered = isinstance(node, nodes.Filter) and node.name in _LOOP_FILTERS
        sliced = isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice)
        if (filtered and node.node is not None) or sliced:
            node = node.node
        elif (
            isinstance(node, nodes.Call)
            and isinstance(node.node, nodes.Getattr)
            and node.node.attr in ("items", "keys", "values")
            and not node.args
        ):
            node = node.node.node
        else:
            break
    if isinstance(node, nodes.Name) and node.name in _LOOP_ROOTS:
        return
    if isinstance(node, nodes.Getattr) and node.attr in _LOOP_FIELDS:
        return
    keyed = isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
    if keyed and node.arg.value in _LOOP_FIELDS:
        return
    raise _Refused(f"a loop over something other than the messages' own lists (line {line})")
