"""``/``-joined parameter paths (``"blocks/attn/q_proj/kernel"``) for NNX state.

Sharding rules and family weight maps both address parameters by these
strings.
"""

import jax


def keypath_to_str(keypath) -> str:
    """Converts a ``jax.tree_util`` key path into a parameter path.

    The ``.value`` attribute of NNX variables is dropped, so the path of a
    leaf in ``nnx.state(model)`` names the parameter itself.
    """
    parts = []
    for key in keypath:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name != "value":
                parts.append(key.name)
        else:
            parts.append(str(key))
    return "/".join(parts)


def map_with_param_path(fn, tree):
    """``jax.tree.map`` passing each leaf's parameter path: ``fn(path, leaf)``."""
    return jax.tree_util.tree_map_with_path(lambda kp, leaf: fn(keypath_to_str(kp), leaf), tree)


def flatten_with_param_paths(tree) -> dict:
    """``{parameter path: leaf}`` for every leaf of ``tree``."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {keypath_to_str(kp): leaf for kp, leaf in leaves}
