"""Independent float64 numpy references for the loss kernels.

Written from the formulas in docs/losses.md, in probability space (mixtures as
plain weighted sums, then a log), one token row at a time where that is
clearer. Nothing here is shared with the jax implementation.
"""

import numpy as np


def softmax(logits, temperature=1.0, where=None):
    z = np.asarray(logits, np.float64) / temperature
    valid = np.isfinite(z)
    if where is not None:
        valid = valid & np.broadcast_to(where, z.shape)
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape[:-1]):
        row, ok = z[idx], valid[idx]
        if not ok.any():
            continue
        e = np.where(ok, np.exp(row - row[ok].max()), 0.0)
        out[idx] = e / e.sum()
    return out


def kl(p, q):
    """sum p log(p / q) over the last axis with 0 log 0 = 0 (inf where q = 0 < p)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    out = np.zeros(p.shape[:-1])
    for idx in np.ndindex(p.shape[:-1]):
        total = 0.0
        for pv, qv in zip(p[idx], q[idx]):
            if pv > 0:
                total += np.inf if qv == 0 else pv * np.log(pv / qv)
        out[idx] = total
    return out


def _pq(s, t, temperature, where):
    return softmax(s, temperature, where), softmax(t, temperature, where)


def forward_kl(s, t, temperature=1.0, where=None):
    q, p = _pq(s, t, temperature, where)
    return kl(p, q)


def reverse_kl(s, t, temperature=1.0, where=None):
    q, p = _pq(s, t, temperature, where)
    return kl(q, p)


def generalized_jsd(s, t, beta=0.5, temperature=1.0, where=None):
    q, p = _pq(s, t, temperature, where)
    if beta == 0:
        return kl(p, q)
    if beta == 1:
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def js_divergence(s, t, temperature=1.0, where=None):
    return generalized_jsd(s, t, 0.5, temperature, where)


def _expand(alpha, ndim):
    a = np.asarray(alpha, np.float64)
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def skew_forward_kl(s, t, alpha=0.1, temperature=1.0, where=None):
    q, p = _pq(s, t, temperature, where)
    a = _expand(alpha, p.ndim)
    return kl(p, a * p + (1 - a) * q)


def skew_reverse_kl(s, t, alpha=0.1, temperature=1.0, where=None, q_in_mixture=None):
    q, p = _pq(s, t, temperature, where)
    a = _expand(alpha, p.ndim)
    q_mix = q if q_in_mixture is None else q_in_mixture
    return kl(q, (1 - a) * p + a * q_mix)


def total_variation(s, t, temperature=1.0, where=None):
    q, p = _pq(s, t, temperature, where)
    return 0.5 * np.abs(p - q).sum(-1)


def adaptive_kl(s, t, mu=0.5, temperature=1.0, where=None):
    q, p = _pq(s, t, temperature, where)
    fkl, rkl = kl(p, q), kl(q, p)
    out = np.zeros(p.shape[:-1])
    for idx in np.ndindex(p.shape[:-1]):
        order = np.argsort(p[idx], kind="stable")
        running, g_head, g_tail = 0.0, 0.0, 0.0
        for v in order:
            running += p[idx][v]
            gap = abs(p[idx][v] - q[idx][v])
            if running <= mu:
                g_tail += gap
            else:
                g_head += gap
        total = g_head + g_tail
        if total > 0:
            out[idx] = g_head / total * fkl[idx] + g_tail / total * rkl[idx]
    return out


def token_mean(values, mask, normalizer=None):
    m = np.asarray(mask, np.float64)
    count = m.sum() if normalizer is None else normalizer
    return 0.0 if count == 0 else float((np.asarray(values, np.float64) * m).sum() / count)


def sequence_mean(values, mask):
    v, m = np.asarray(values, np.float64), np.asarray(mask, np.float64)
    means = [(v[b] * m[b]).sum() / m[b].sum() for b in range(v.shape[0]) if m[b].sum() > 0]
    return float(np.mean(means)) if means else 0.0


def cald(st, tt, mt, ss, ts, ms, alpha_t, alpha_s, beta, temperature=1.0, reduction="sequence"):
    reduce = sequence_mean if reduction == "sequence" else token_mean
    skl = skew_forward_kl(st, tt, alpha_t, temperature)
    srkl = skew_reverse_kl(ss, ts, alpha_s, temperature)
    return (1 - beta) * reduce(skl, mt) + beta * reduce(srkl, ms)


def curriculum_alpha(teacher_lp, student_lp, mask, reference_gap, alpha0=0.1, alpha_min=0.01, eps=1e-5):
    """The release's rule: clip(1 - (1 - a0) m / (gap + eps), a_min, a0); a zero denominator -> a_min."""
    out = []
    for b in range(mask.shape[0]):
        m = mask[b].astype(bool)
        p_bar = np.exp(np.mean(np.asarray(teacher_lp, np.float64)[b][m]))
        q_bar = np.exp(np.mean(np.asarray(student_lp, np.float64)[b][m]))
        gap = p_bar - q_bar
        denominator = gap + eps
        alpha = alpha_min if denominator == 0 else 1 - (1 - alpha0) * reference_gap / denominator
        out.append(min(max(alpha, alpha_min), alpha0))
    return np.array(out)


def cross_model_attention(params, se_in, se_tgt, hs, ms, te_in, te_tgt, ht, mt, std_over="all"):
    """Per-sample loops over positions; torch-style unbiased stds over the whole tensor ('all', DSKD's
    ``x.std()``) or over the teacher's response positions ('response')."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    se_in, se_tgt, hs, te_in, te_tgt, ht = map(f, (se_in, se_tgt, hs, te_in, te_tgt, ht))
    ms, mt = np.asarray(ms, bool), np.asarray(mt, bool)
    lin = lambda name, x: x @ f(params[name]["kernel"]) + f(params[name]["bias"])  # noqa: E731

    def std(x):
        vals = x.ravel() if std_over == "all" else x[mt].ravel()
        return vals.std(ddof=1)

    index_t = np.concatenate([te_in, te_tgt], -1)
    index_s = np.concatenate([se_in, se_tgt], -1)
    key = index_t / std(index_t)
    value_t = lin("t2s", ht / std(ht) + te_tgt / std(te_tgt))
    value_s = lin("s2t", hs)
    query = lin("query", index_s)
    batch, s_len, _ = hs.shape
    t_len, dt = ht.shape[1], ht.shape[2]
    w_t2s = np.zeros((batch, s_len, t_len))
    w_s2t = np.zeros((batch, t_len, s_len))
    for b in range(batch):
        scores = query[b] @ key[b].T / np.sqrt(2 * dt)
        for i in range(s_len):
            cols = [j for j in range(t_len) if ms[b, i] and mt[b, j]]
            if cols:
                e = np.exp(scores[i, cols] - scores[i, cols].max())
                w_t2s[b, i, cols] = e / e.sum()
        for j in range(t_len):
            rows = [i for i in range(s_len) if ms[b, i] and mt[b, j]]
            if rows:
                e = np.exp(scores[rows, j] - scores[rows, j].max())
                w_s2t[b, j, rows] = e / e.sum()
    t2s = np.einsum("bst,btd->bsd", w_t2s, value_t)
    s2t = np.einsum("bts,bsd->btd", w_s2t, value_s)
    return t2s, s2t, w_t2s, w_s2t


def cross_entropy(logits, targets):
    """-log softmax(logits)[target] per row."""
    p = softmax(logits)
    return -np.log(np.take_along_axis(p, np.asarray(targets)[..., None], -1)[..., 0])


def dskd_terms(params, hs, ht, ws, wt, zs, zt, targets, mask, n, divergence=forward_kl, temperature=1.0):
    """DSKD (same vocabulary): (ce_t2s, kd_stu, kd_tea), each summed over mask and divided by n."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    lin = lambda name, x: f(x) @ f(params[name]["kernel"]) + f(params[name]["bias"])  # noqa: E731
    z_t2s = lin("t2s", ht) @ f(ws)
    z_s2t = lin("s2t", hs) @ f(wt)
    ce_t2s = cross_entropy(z_t2s, targets)
    kd_stu = divergence(zs, z_t2s, temperature=temperature)
    kd_tea = forward_kl(z_s2t, zt, temperature=temperature)
    return tuple(token_mean(v, mask, normalizer=n) for v in (ce_t2s, kd_stu, kd_tea))


def dskd_cma_terms(params, es, et, ws, wt, ids_s, tgt_s, ids_t, tgt_t, hs, ht, zs, zt, ms, mt, n,
                   divergence=forward_kl, temperature=1.0, std_over="all"):
    """DSKD-CMA: (ce_t2s, gated kd_stu, kd_tea), each summed over its mask and divided by n.

    Index embeddings are looked up at id 0 outside the response, as DSKD's ``formal_*`` ids."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    es, et = f(es), f(et)
    ms_b, mt_b = np.asarray(ms) > 0, np.asarray(mt) > 0
    ids_s, tgt_s_formal = np.where(ms_b, ids_s, 0), np.where(ms_b, tgt_s, 0)
    ids_t, tgt_t = np.where(mt_b, ids_t, 0), np.where(mt_b, tgt_t, 0)
    t2s, s2t, _, _ = cross_model_attention(
        params, es[ids_s], es[tgt_s_formal], hs, ms, et[ids_t], et[tgt_t], ht, mt, std_over)
    z_t2s = t2s @ f(ws)
    z_s2t = s2t @ f(wt)
    ce_t2s = cross_entropy(z_t2s, tgt_s)
    gate = (z_t2s.argmax(-1) == np.asarray(tgt_s)).astype(np.float64)
    kd_stu = gate * divergence(zs, z_t2s, temperature=temperature)
    kd_tea = forward_kl(z_s2t, zt, temperature=temperature)
    return token_mean(ce_t2s, ms, n), token_mean(kd_stu, ms, n), token_mean(kd_tea, mt, n)


def uld(s, t, temperature=1.0):
    """ULD per token: sum |sorted q - sorted p| (descending, shorter vocabulary zero-padded)."""
    q, p = softmax(s, temperature), softmax(t, temperature)
    size = max(q.shape[-1], p.shape[-1])
    out = np.zeros(q.shape[:-1])
    for idx in np.ndindex(q.shape[:-1]):
        a = np.zeros(size)
        b = np.zeros(size)
        a[: q.shape[-1]] = sorted(q[idx], reverse=True)
        b[: p.shape[-1]] = sorted(p[idx], reverse=True)
        out[idx] = np.abs(a - b).sum()
    return out


def numeric_grad(f, x, eps=1e-4):
    """Central differences of a float64 numpy function of one array."""
    x = np.asarray(x, np.float64)
    out = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        out[idx] = (f(up) - f(down)) / (2 * eps)
    return out


# ---- Relation and feature formulations (RKD, SP, FitNets, MiniLM), from the papers' definitions. ----


def huber(x, delta=1.0):
    """Huber (smooth L1) of a difference, Park et al. 2019 Eq. 5 with threshold delta."""
    x = np.asarray(x, np.float64)
    return np.where(np.abs(x) <= delta, 0.5 * x ** 2, delta * (np.abs(x) - 0.5 * delta))


def _selected_points(x, mask, g):
    """The selected points of group g as a float64 [n, D] array, and their indices."""
    sel = np.flatnonzero(np.asarray(mask)[g] > 0)
    return np.asarray(x, np.float64)[g][sel], sel


def rkd_distance(s, t, mask, delta=1.0):
    """[G, N] rows: point i's mean over selected j of huber(psi_D^s_ij - psi_D^t_ij); explicit difference vectors."""
    out = np.zeros(np.shape(mask))

    def psi(points):
        n = len(points)
        d = np.array([[np.linalg.norm(points[i] - points[j]) for j in range(n)] for i in range(n)])
        distinct = [d[i, j] for i in range(n) for j in range(n) if i != j]
        mu = np.mean(distinct) if distinct else 0.0
        return d / mu if mu > 0 else np.zeros_like(d)

    for g in range(np.shape(mask)[0]):
        ps, sel = _selected_points(s, mask, g)
        pt, _ = _selected_points(t, mask, g)
        if len(sel):
            out[g, sel] = huber(psi(ps) - psi(pt), delta).mean(axis=1)
    return out


def rkd_angle(s, t, mask, delta=1.0):
    """[G, N] rows: vertex j's mean over selected (k, l) of huber(cos angle k-j-l, student - teacher)."""
    out = np.zeros(np.shape(mask))

    def cosines_at(points, j):
        n = len(points)
        unit = np.zeros_like(points)
        for k in range(n):
            v = points[k] - points[j]
            norm = np.linalg.norm(v)
            if norm > 0:
                unit[k] = v / norm
        return np.array([[unit[k] @ unit[l] for l in range(n)] for k in range(n)])

    for g in range(np.shape(mask)[0]):
        ps, sel = _selected_points(s, mask, g)
        pt, _ = _selected_points(t, mask, g)
        for j, index in enumerate(sel):
            out[g, index] = huber(cosines_at(ps, j) - cosines_at(pt, j), delta).mean()
    return out


def similarity_preserving(s, t, mask):
    """[G, N] rows of ||G_s - G_t||_F^2 / n^2 (Tung & Mori 2019), G = row-L2-normalised Gram of the selected points."""
    out = np.zeros(np.shape(mask))

    def gram(points):
        g = points @ points.T
        norms = np.linalg.norm(g, axis=1, keepdims=True)
        return np.divide(g, norms, out=np.zeros_like(g), where=norms > 0)

    for g in range(np.shape(mask)[0]):
        ps, sel = _selected_points(s, mask, g)
        pt, _ = _selected_points(t, mask, g)
        if len(sel):
            out[g, sel] = ((gram(ps) - gram(pt)) ** 2).mean(axis=1)
    return out


def fitnets_hint(s, t):
    """0.5 * ||s - t||^2 over the last axis (Romero et al. 2015, Eq. 3)."""
    return 0.5 * np.sum((np.asarray(s, np.float64) - np.asarray(t, np.float64)) ** 2, axis=-1)


def minilm_attention(a_s, a_t):
    """[B, T]: KL(teacher head || student head) per query, mean over heads (Wang et al. 2020, Eq. 6)."""
    return kl(a_t, a_s).mean(axis=1)
