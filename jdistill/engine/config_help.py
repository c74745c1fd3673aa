"""Every field of a run config with its value and what it means (``--config.help``).

The shared groups' descriptions are the one-line comments of
:func:`jdistill.engine.defaults.base_config` (read from its source, so the
comment next to a default is the documentation); the ``method`` group's are
the help lines of the method's ``Settings`` (:func:`jdistill.methods.settings_help`).
:func:`render` lists every field as ``key = value  # description``, adds the
shared default where the config file or the command line changed it, and
marks a required field left unset (a real-model preset's paths) as ``<required>``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import tokenize

import ml_collections

from jdistill import methods
from jdistill.engine import defaults

METHOD_NAME_HELP = "The method (jdistill.methods registry); set by the config file."


@functools.lru_cache(maxsize=None)
def shared_field_comments() -> dict[str, str]:
    """``{'group.key': comment}`` of every field :func:`~jdistill.engine.defaults.base_config` assigns.

    The LoRA groups (``student.lora.*``, ``teacher.lora.*``) take the comments
    of :func:`~jdistill.engine.defaults.lora_group`.
    """
    out = _assigned_comments(defaults.base_config, depth=2)
    for model in ("student", "teacher"):
        out.update({f"{model}.lora.{key}": text
                    for key, text in _assigned_comments(defaults.lora_group, depth=1).items()})
    return out


def _assigned_comments(function, *, depth: int) -> dict[str, str]:
    """``{'a.b': comment}`` of the ``x.a.b = value  # comment`` lines of ``function`` (``depth`` attributes)."""
    source = inspect.getsource(function)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            parts = []
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name) and len(parts) == depth:
                out[".".join(reversed(parts))] = comments.get(node.lineno, "")
    return out


def field_help(config: ml_collections.ConfigDict) -> dict[str, str]:
    """``{dotted key: description}`` for every field of ``config`` (shared groups and its method's settings)."""
    helps = dict(shared_field_comments())
    name = config.method.name
    helps["method.name"] = METHOD_NAME_HELP
    try:
        helps.update({key: text for key, _, text in methods.settings_help(name)})
    except ValueError:
        pass  # an unknown method name is reported by the run itself
    return helps


def flat_items(config, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, value)`` of every leaf of ``config``, in the config's order."""
    items = []
    for key, value in config.items():
        if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
            items.extend(flat_items(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _shown(value) -> str:
    return "<required>" if value is None else repr(value)


def render(config: ml_collections.ConfigDict, *, title: str = "", plain: bool = False) -> str:
    """The config as text: one ``key = value  # description`` line per field, grouped.

    ``plain``: no ``[group]`` headers (for TensorBoard's text panel, which gets
    the text indented as a code block by the caller).
    """
    helps = field_help(config)
    shared = defaults.base_config(config.method.name) if config.method.name in methods.METHODS else None
    base_values = dict(flat_items(shared)) if shared is not None else {}
    rows = flat_items(config)
    width = min(max((len(f"{k} = {_shown(v)}") for k, v in rows), default=0), 64)
    lines = [title] if title else []
    group = None
    for key, value in rows:
        head = key.split(".", 1)[0]
        if head != group and not plain:
            lines += ["", f"[{head}]"]
        group = head
        text = helps.get(key, "") or "(no description)"
        if key in base_values and base_values[key] != value and value is not None:
            text += f" (default: {base_values[key]!r})"
        if value is None:
            text = f"REQUIRED: set --config.{key}. " + text
        lines.append(f"{f'{key} = {_shown(value)}':<{width}}  # {text}")
    return "\n".join(lines).lstrip("\n") + "\n"
