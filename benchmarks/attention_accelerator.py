"""Attention implementations on an accelerator: accuracy against the reference, memory and time.

Three sections (run all, or name some on the command line):

* ``correctness``: ``cudnn`` (on CPU: the same ``jax.nn.dot_product_attention``
  call with ``implementation='xla'``) and ``xla_chunked`` in bf16/fp16 against
  the float32 reference on the same rounded inputs, with GQA (8 query heads,
  2 key/value heads), padding and packed segments, with and without a window;
  outputs and gradients.
* ``model_level``: a bf16 decoder's logits with each ``attention_impl`` against
  ``reference`` (padded batch, a window on one of two layers); what ``auto``
  resolves to.
* ``memory_and_time``: one attention op at GPT-2-small shape (12 heads of 64,
  batch 1, bf16), forward + backward: compiled temporary memory and the
  median of 5 timed runs, ``T`` from ``$TS`` (default 1k..8k).

Usage::

    python benchmarks/attention_accelerator.py
    T=100 TS=256 python benchmarks/attention_accelerator.py   # a quick CPU dry run
"""
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.models import attention_impl as ai

ON_GPU = jax.default_backend() == "gpu"
print("jax", jax.__version__, jax.devices(), flush=True)
MiB = 2**20


def section(fn):
    t0 = time.time()
    try:
        fn()
    except Exception:  # noqa: BLE001  (reported; the next section still runs)
        traceback.print_exc()
    print(f"[{fn.__name__}: {time.time() - t0:.1f}s]", flush=True)


def inputs(b, h, k, t, d, dtype, seed=0):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(b, h, t, d)), dtype)
    kk = jnp.asarray(r.normal(size=(b, k, t, d)), dtype)
    v = jnp.asarray(r.normal(size=(b, k, t, d)), dtype)
    valid = np.ones((b, t), bool)
    valid[0, : t // 5] = False
    if b > 1:
        valid[1, t - t // 7:] = False
    segs = np.zeros((b, t), np.int32)
    segs[-1, t // 2:] = 1
    seg = ai.segment_ids_from_mask(jnp.asarray(valid), jnp.asarray(segs))
    return q, kk, v, seg


def run(impl, q, k, v, seg, window, scale):
    if impl == "cudnn" and not ON_GPU:
        return ai.dot_product_attention(q, k, v, scale=scale, q_segment_ids_BxT=seg, kv_segment_ids_BxS=seg,
                                        window=window, implementation="xla")
    return ai.attend(q, k, v, scale=scale, q_segment_ids_BxT=seg, kv_segment_ids_BxS=seg, window=window,
                     impl=impl)[0]


def compare(impl, q, k, v, s, window, scale, want, g_want, cot) -> str:
    fn = lambda q, k, v: run(impl, q, k, v, s, window, scale)  # noqa: E731
    got = jax.jit(fn)(q, k, v).astype(jnp.float32)
    g = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * cot), argnums=(0, 1, 2)))(q, k, v)
    err = float(jnp.max(jnp.abs(got - want)))
    gerr = [float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)) / float(jnp.max(jnp.abs(b)))) for a, b in zip(g, g_want)]
    return f"max|out-ref|={err:.2e} grad max|diff|/max|ref| q,k,v=" + ",".join(f"{e:.1e}" for e in gerr)


def correctness():
    """Each implementation against the float32 reference of the same (rounded) inputs: values and gradients."""
    for dtype in (jnp.bfloat16, jnp.float16):
        for d in (64, 128):
            q, k, v, seg = inputs(2, 8, 2, int(os.environ.get("T", 1000)), d, dtype)
            scale = d**-0.5
            f32 = [x.astype(jnp.float32) for x in (q, k, v)]
            for window in (None, 129):
                for use_seg in (False, True):
                    s = seg if use_seg else None
                    want = jax.jit(lambda q, k, v: run("reference", q, k, v, s, window, scale))(*f32)
                    cot = jnp.asarray(np.random.default_rng(1).normal(size=want.shape), jnp.float32)
                    g_want = jax.jit(jax.grad(lambda q, k, v: jnp.sum(run("reference", q, k, v, s, window, scale)
                                                                      * cot), argnums=(0, 1, 2)))(*f32)
                    for impl in ("cudnn", "xla_chunked"):
                        label = f"{jnp.dtype(dtype).name} D={d} window={window} segments={use_seg} {impl}"
                        try:
                            print(f"{label}: {compare(impl, q, k, v, s, window, scale, want, g_want, cot)}", flush=True)
                        except Exception as e:  # noqa: BLE001  (reported; the other cases still run)
                            print(f"{label}: failed {type(e).__name__}: {str(e)[:300]}", flush=True)


def model_level():
    import jdistill.models as jm

    config = jm.DecoderConfig(model_type="llama", vocab_size=256, hidden_size=256, num_layers=2, num_heads=4,
                              num_kv_heads=2, head_dim=64, mlp_dim=512, dtype="bfloat16",
                              sliding_window=33, sliding_window_layers=(True, False))
    r = np.random.default_rng(3)
    ids = r.integers(1, 256, (4, 300)).astype(np.int32)
    mask = np.ones((4, 300), np.int32)
    mask[1, :50] = 0
    mask[2, 250:] = 0
    model = jm.create_model(config.replace(attention_impl="reference"), rngs=0)
    from flax import nnx

    _, state = nnx.split(model)
    logits = {}
    for impl in ("reference", "auto", "cudnn", "xla_chunked"):
        graphdef, _ = nnx.split(nnx.eval_shape(lambda: jm.Decoder(config.replace(attention_impl=impl),
                                                                  rngs=nnx.Rngs(0))))
        fn = jax.jit(lambda st, ids, mask: nnx.merge(graphdef, st)(ids, mask).logits.astype(jnp.float32))
        try:
            logits[impl] = np.asarray(fn(state, ids, mask))
        except Exception as e:  # noqa: BLE001  (reported, the other implementations still run)
            print(impl, "failed:", type(e).__name__, str(e)[:300])
    print("auto resolves to", ai.resolve_implementation("auto", dtype=jnp.bfloat16, head_dim=64))
    real = mask.astype(bool)
    for impl, x in logits.items():
        print(f"model bf16 logits {impl} vs reference: max|diff| on real tokens "
              f"{np.max(np.abs(x[real] - logits['reference'][real])):.3e} (logit scale {np.abs(logits['reference']).max():.2f})")


def memory_and_time():
    """GPT-2-small attention shape (12 heads of 64), batch 1, bf16: fwd+bwd of one attention op."""
    print("| T | impl | temp MiB | fwd+bwd ms |")
    for t in [int(x) for x in os.environ.get("TS", "1024,2048,4096,8192").split(",")]:
        q, k, v, seg = inputs(1, 12, 12, t, 64, jnp.bfloat16)
        for impl in ("reference", "xla_chunked", "cudnn"):
            for use_seg in (False, True):
                s = seg if use_seg else None

                def loss(q, k, v, impl=impl, s=s):
                    return jnp.sum(run(impl, q, k, v, s, None, 0.125).astype(jnp.float32))

                try:
                    f = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
                    compiled = f.lower(q, k, v).compile()
                    mem = compiled.memory_analysis().temp_size_in_bytes / MiB
                    jax.block_until_ready(compiled(q, k, v))
                    times = []
                    for _ in range(5):
                        t0 = time.perf_counter()
                        jax.block_until_ready(compiled(q, k, v))
                        times.append((time.perf_counter() - t0) * 1e3)
                    print(f"| {t} | {impl}{' +pad/seg' if use_seg else ''} | {mem:,.0f} | {np.median(times):.2f} |",
                          flush=True)
                except Exception as e:  # noqa: BLE001
                    print(f"| {t} | {impl}{' +pad/seg' if use_seg else ''} | failed: {type(e).__name__} "
                          f"{str(e)[:200]} |", flush=True)


if __name__ == "__main__":
    for name in sys.argv[1:] or ["correctness", "model_level", "memory_and_time"]:
        section(globals()[name])
