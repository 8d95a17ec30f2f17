"""Hierarchical Chunk Attention Memory (HCAM, Lampinen et al. 2021) as a sequence core.

A stack of `n_layers` pre-norm blocks of width H (input width = output width). With
n_t = LayerNorm(x_t) the block's normed input ("row") at episode step e:

  x <- x + local(n_t) + read(n_t);   x <- x + MLP(LayerNorm(x))

With `time_encoding`, the first block's input is u_t + W tau(e): tau are sinusoidal
features of the episode step e (`episode_time`) and W a learned projection that starts
at zero. Without it nothing in the core tells e: the local path sees only offsets
within C steps and a softmax read does not count chunks, so a task whose events come
at fixed times (an episode that ends after L + 1 steps) cannot be timed. Imagined
steps advance e too.

- local: causal multi-head attention over the rows of steps t-C..t of the same
  episode (C = `chunk`), with a learned per-head bias for each offset 0..C. It covers
  the unfinished chunk, which the memory cannot see.
- read: HCAM over completed chunks of this layer's rows. Chunk j of an episode holds
  its steps jC..(j+1)C-1 and is readable from the step after it completes: query e
  may use chunk j iff (j+1)C <= e. Summary = mean of the chunk's rows; chunk logits
  q.k / sqrt(F) of bias-free projections of n_t and of the stop-gradient summary; the
  `top_k` visible chunks by logit (0: all visible ones) get softmax weights; in each,
  multi-head attention of n_t over its C stop-gradient rows plus sinusoidal slot
  encodings; the readout is the weighted sum, through a bias-free projection, so it is
  exactly 0 when no chunk is visible.

Memory in step mode is a ring of `max_chunks` (M) slots that overwrites the oldest;
an episode start (reset) clears it unless `across_episodes`. Sequence mode applies the
same rules as masks: a chunk is visible iff it completed before the query, lies in
the query's episode (unless across_episodes) and fewer than M chunks were written
after it up to the query.

State (a dict; one batch axis B; float rows in float32):
  step (B,) int32: steps taken in the current episode (fill count = step % C); imagined
    steps (remember=False) advance it without writing anything
  slot (B,) int32: ring slot the next chunk goes to
  valid (B, M) bool: ring slots holding a readable chunk
  window_valid (B, C) bool: which of the last C rows are in the current episode
  layers: n_layers dicts of
    contents (B, M, C, H): ring of chunk rows
    keys (B, M, H): chunk summaries (row means)
    accum (B, C, H): rows of the chunk being filled (zeros beyond the fill count)
    window (B, C, H): rows of the last C steps, oldest first (zeros where invalid)
  frozen (only in states built by `HCAMCore.freeze` for imagination): n_layers dicts of
    the summaries' and window's projections, reused by imagined steps (remember=False)
Every slot, row or key that is not valid holds zeros, so equal histories give equal
states whichever mode built them.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from recall2imagine.nets import sg

NEG = -jnp.inf


# ------------------------------------------------------------------------ maths


TIME_FEATURES = 32


def episode_time(step, dim=TIME_FEATURES):
    """Sine/cosine features (..., dim) float32 of integer steps (...): angles step *
    1e4^(-i/half), i < half = ceil(dim / 2), periods from 2 pi to about 2 pi 1e4 steps."""
    half = (dim + 1) // 2
    freqs = 1e4 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = jnp.asarray(step).astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], -1)[..., :dim]


def sinusoid(length, dim):
    """(length, dim) float32 encodings of positions 0..length-1 (`episode_time`'s)."""
    return episode_time(jnp.arange(length), dim)


def masked_softmax(logits, mask):
    """Softmax over the last axis restricted to mask (same shape); all zeros where
    nothing is valid (no uniform average of masked entries)."""
    top = sg(jnp.max(jnp.where(mask, logits, NEG), -1, keepdims=True))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    # exp(-inf) = 0 with a zero gradient: masked entries never produce NaN gradients.
    e = jnp.exp(jnp.where(mask, logits - top, NEG))
    return e / jnp.maximum(e.sum(-1, keepdims=True), jnp.finfo(e.dtype).tiny)


def select_top_k(logits, visible, top_k):
    """The top_k visible chunks by logit: logits, visible (..., N) -> indices (..., K)
    and softmax weights over the visible selected ones (..., K), K = min(top_k, N)."""
    top, idx = jax.lax.top_k(jnp.where(visible, logits, NEG), min(top_k, logits.shape[-1]))
    return idx, masked_softmax(top, jnp.take_along_axis(visible, idx, -1))


def chunk_weights(logits, visible, top_k):
    """Dense relevance weights (..., N) of chunks; top_k 0 weighs every visible chunk."""
    if top_k == 0:
        return masked_softmax(logits, visible)
    idx, weights = select_top_k(logits, visible, top_k)
    return jnp.put_along_axis(jnp.zeros_like(weights, shape=logits.shape), idx, weights, -1,
                              inplace=False)


def chunk_read(q, rows, weights, key, value, positions):
    """Attention within chunks, then their weighted sum, on the chunks' raw rows.

    q (..., h, d) projected queries; rows (..., N, C, H) stop-gradient chunk rows;
    weights (..., N); key, value: (kernel (H, h, d), bias (h, d)) of the row
    projections; positions (C, H) slot encodings added to every chunk's rows. Returns
    (..., h, d) float32: sum_n weights_n * softmax_c(q.k_nc / sqrt(d)) v_nc with
    k_nc = (rows_nc + positions_c) key_kernel + key_bias, v likewise.

    The projections are moved to the query side (q.k = (key_kernel q).row + q.bias)
    and the value side (sum_c p_c v_c = value_kernel(sum_c p_c row_c) + bias, as the
    p_c sum to 1): each stored row is read once as its H floats instead of as projected
    keys and values (2 x heads x d floats), and no stored chunk is ever projected.
    """
    (wk, bk), (wv, bv) = key, value
    scale = 1.0 / math.sqrt(q.shape[-1])
    q = q.astype(jnp.float32) * scale
    rows = rows.astype(jnp.float32)
    q_rows = jnp.einsum("...hd,fhd->...hf", q, wk.astype(jnp.float32))
    offset = jnp.einsum("...hf,cf->...hc", q_rows, positions) + jnp.einsum(
        "...hd,hd->...h", q, bk.astype(jnp.float32))[..., None]
    scores = jnp.einsum("...hf,...ncf->...nhc", q_rows, rows) + offset[..., None, :, :]
    probs = jax.nn.softmax(scores, -1) * weights[..., None, None]
    mixed = (jnp.einsum("...nhc,...ncf->...hf", probs, rows)
             + jnp.einsum("...nhc,cf->...hf", probs, positions))
    return (jnp.einsum("...hf,fhd->...hd", mixed, wv.astype(jnp.float32))
            + weights.sum(-1)[..., None, None] * bv.astype(jnp.float32))


def local_attention(q, k, v, valid, bias, offset_keys=None):
    """Causal local attention: q (..., h, d); k, v (..., W, h, d) at offsets 0..W-1
    back in time; valid (..., W) with offset 0 always valid; bias (h, W); offset_keys
    (W, h, d) or None: added to every row's key at that offset.
    Returns (..., h, d) float32."""
    if offset_keys is not None:
        k = k + offset_keys.astype(k.dtype)
    scores = jnp.einsum("...hd,...whd->...hw", q, k).astype(jnp.float32)
    scores = scores / math.sqrt(q.shape[-1]) + bias
    probs = jax.nn.softmax(jnp.where(valid[..., None, :], scores, NEG), -1)
    return jnp.einsum("...hw,...whd->...hd", probs, v.astype(jnp.float32))


def segment_softmax(scores, segment, segments):
    """Softmax of scores (R, ...) over the rows (leading axis) of each segment;
    segment (R,) int in [0, segments). Row-level form of the within-chunk softmax of
    `chunk_read` when chunks are runs of rows: no (queries, chunks, C) tensor."""
    top = sg(jax.ops.segment_max(scores, segment, segments))[segment]
    e = jnp.exp(scores - top)
    return e / jax.ops.segment_sum(e, segment, segments)[segment]


READS = ("auto", "dense", "gather")


def gathers(read, top_k, chunk, steps):
    """Whether a training pass of `steps` steps reads memory by gathering each query's
    top_k chunks (`HCAMBlock._read_selected`) rather than densely over every row of the
    window (`_read_sequence`; always with top_k 0). The two give the same outputs and
    gradients. The dense read scores T x (C + T) rows per head, the gathered one reads
    T x top_k x C rows of the core's width, so "auto" gathers from steps >= 4 top_k
    chunk (256 by default). World-model gradient on a 2-core CPU, dense against
    gathered (`benchmarks/hcam_read.py`): 1,500 against 540 ms at T = 1024, 105 against
    112 at T = 256 and 16 against 25 at T = 64 at the `cpu` widths; 24.8 against 21.9 ms
    at T = 256 at the `cpu tmaze` ones (benchmarks/results/hcam_read*.json)."""
    if read not in READS:
        raise ValueError(f"HCAM read must be one of {READS}, got {read!r}")
    if read == "auto":
        return top_k > 0 and steps >= 4 * top_k * chunk
    return read == "gather" and top_k > 0


# ------------------------------------------------------------- bookkeeping


def sequence_layout(reset, start, chunk, max_chunks, across):
    """Episode bookkeeping of a sequence call; rows are indexed on an extended axis of
    L = C + T: the start state's window (steps -C..-1), then steps 0..T-1.

    reset (T, B) bool; start: state's step (B,), slot (B,), valid (B, M), window_valid
    (B, C). Returns a dict of
      ep (L, B) int: episode id per row (0: the start's episode; -1: invalid row),
      pos (L, B) int: slot of each row in its chunk (episode step % C),
      estep (T, B): episode step, last (T, B): last reset step <= t (-1 if none),
      done (T, B) bool: step t completes a chunk, written (T, B): chunks completed
        before t (the chunk index of a completion at t),
      visible (B, T, T): query t may read the chunk completed at s,
      ring_visible (B, T, M): query t may read slot m of the start state,
      row_chunk (B, L): step (0..T-1) at which each row's chunk completes (clipped),
      row_ok (B, L): the row's chunk completes inside steps 0..T-1,
      segment (B * L,): chunk id of each (b, row) pair, rows of no complete chunk
        sharing one id per b; B * (L + 1) ids.
    """
    steps, c, m = reset.shape[0], chunk, max_chunks
    t = jnp.arange(steps)[:, None]
    last = jax.lax.cummax(jnp.where(reset, t, -1), axis=0)
    estep = jnp.where(last >= 0, t - last, start["step"][None] + t)
    ep_now = jnp.cumsum(reset.astype(jnp.int32), 0)
    ep = jnp.concatenate([jnp.where(start["window_valid"].T, 0, -1), ep_now])
    first = start["step"][None] - c + jnp.arange(c)[:, None]
    pos = jnp.concatenate([first, estep]) % c
    done = estep % c == c - 1
    written = jnp.cumsum(done.astype(jnp.int32), 0) - done

    same = jnp.bool_(across) | (ep_now.T[:, :, None] == ep_now.T[:, None, :])
    recent = written.T[:, :, None] - written.T[:, None, :] <= m
    causal = t.T[:, :, None] > t.T[:, None, :]
    visible = done.T[:, None, :] & causal & same & recent
    rank = (jnp.arange(m)[None] - start["slot"][:, None]) % m
    ring_visible = (start["valid"][:, None, :] & (jnp.bool_(across) | (ep_now.T == 0))[..., None]
                    & (rank[:, None, :] >= written.T[:, :, None]))

    length = c + steps
    end = jnp.arange(length)[:, None] + c - 1 - pos
    end_clip = jnp.clip(end, 0, length - 1)
    # Rows from the end back to the row are one episode, so the chunk is whole.
    same_chunk = jnp.take_along_axis(ep, end_clip, 0) == ep
    row_ok = ((end >= c) & (end < length) & same_chunk & (ep >= 0)).T
    batch_offset = (length + 1) * jnp.arange(ep.shape[1])[:, None]
    segment = jnp.where(row_ok, end_clip.T, length) + batch_offset
    return {"ep": ep, "pos": pos, "estep": estep, "last": last, "done": done,
            "written": written, "visible": visible, "ring_visible": ring_visible,
            "row_chunk": jnp.clip(end_clip.T - c, 0, steps - 1), "row_ok": row_ok,
            "segment": segment.reshape(-1)}


def clear_on_reset(state, reset, across):
    """The state after an episode start where reset (B,): window and fill restart;
    the memory too unless across."""
    r = reset[:, None]
    zero = lambda x: jnp.where(reset.reshape((-1,) + (1,) * (x.ndim - 1)), 0.0, x)
    memory = (lambda x: x) if across else zero
    layers = tuple({"contents": memory(layer["contents"]), "keys": memory(layer["keys"]),
                    "accum": zero(layer["accum"]), "window": zero(layer["window"])}
                   for layer in state["layers"])
    return {"step": jnp.where(reset, 0, state["step"]),
            "slot": state["slot"] if across else jnp.where(reset, 0, state["slot"]),
            "valid": state["valid"] if across else state["valid"] & ~r,
            "window_valid": state["window_valid"] & ~r, "layers": layers}


def write_row(layer, row, fill, write):
    """One layer's state after appending row (B, H) at fill (B,) int; write (B, M) bool
    marks the slot a completed chunk goes to (none unless fill == C - 1)."""
    chunk = layer["accum"].shape[1]
    accum = jnp.where((jnp.arange(chunk) == fill[:, None])[..., None], row[:, None], layer["accum"])
    complete = (fill == chunk - 1)[:, None, None]
    return {"contents": jnp.where(write[..., None, None], accum[:, None], layer["contents"]),
            "keys": jnp.where(write[..., None], accum.mean(1)[:, None], layer["keys"]),
            "accum": jnp.where(complete, 0.0, accum),
            "window": jnp.concatenate([layer["window"][:, 1:], row[:, None]], 1)}


# ------------------------------------------------------------------ modules


class HeadProjection(nn.Module):
    """Rows (..., features) -> (..., heads, head_dim), with DenseGeneral's parameters
    (kernel (features, heads, head_dim), bias (heads, head_dim)) and its initialisation;
    `raw` hands them to `chunk_read`, which applies them on the query side."""

    features: int
    heads: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        init = nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        self.kernel = self.param("kernel", init, (self.features, self.heads, self.head_dim))
        self.bias = self.param("bias", nn.initializers.zeros, (self.heads, self.head_dim))

    def __call__(self, x):
        y = jnp.einsum("...f,fhd->...hd", x.astype(self.dtype), self.kernel.astype(self.dtype))
        return y + self.bias.astype(self.dtype)

    def raw(self):
        return self.kernel, self.bias


class HCAMBlock(nn.Module):
    """One pre-norm block: local attention + HCAM read, then a residual MLP."""

    features: int
    chunk: int
    top_k: int
    heads: int
    width: int
    read: str = "auto"
    local_positions: bool = False
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        per_head = (self.heads, self.width // self.heads)
        project = lambda bias=True: nn.DenseGeneral(per_head, use_bias=bias, dtype=self.dtype)
        merge = lambda bias=True: nn.DenseGeneral(self.features, axis=(-2, -1), use_bias=bias,
                                                  dtype=self.dtype)
        # Rows are stored in float32 whatever the compute dtype. eps 1e-3 (DreamerV3's): the
        # world model's core input is exactly zero at an episode start, and LayerNorm's
        # gradient there scales with 1/sqrt(eps) (1000x with flax's default 1e-6).
        self.norm = nn.LayerNorm(epsilon=1e-3)
        self.local_q, self.local_k, self.local_v = project(), project(), project()
        self.local_out = merge()
        self.local_bias = self.param("local_bias", nn.initializers.zeros,
                                     (self.heads, self.chunk + 1))
        if self.local_positions:
            # A key for each offset 0..C, projected from its sinusoidal features: a query
            # picks offsets through a (features x heads x d) projection, not only through
            # one scalar bias per head and offset, which Adam moves by at most ~lr an update.
            self.local_pos = project(bias=False)
        scaled = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
        self.mem_query = nn.Dense(self.width, use_bias=False, dtype=self.dtype, kernel_init=scaled)
        self.mem_key = nn.Dense(self.width, use_bias=False, dtype=self.dtype, kernel_init=scaled)
        self.read_q = project()
        # Applied to stored rows inside `chunk_read` (query and value side).
        self.read_k, self.read_v = (HeadProjection(self.features, *per_head, dtype=self.dtype)
                                    for _ in range(2))
        # No bias: zero weights give an exactly zero readout.
        self.read_out = merge(bias=False)
        self.mlp_norm = nn.LayerNorm(epsilon=1e-3)
        self.mlp_in = nn.Dense(4 * self.features, dtype=self.dtype)
        self.mlp_out = nn.Dense(self.features, dtype=self.dtype)

    def _offset_keys(self):
        """(C + 1, heads, d) keys of offsets 0..C, or None without `local_positions`."""
        if not self.local_positions:
            return None
        return self.local_pos(sinusoid(self.chunk + 1, TIME_FEATURES))

    def _finish(self, x, mixed):
        x = x + mixed.astype(jnp.float32)
        return x + self.mlp_out(nn.gelu(self.mlp_in(self.mlp_norm(x)))).astype(jnp.float32)

    def _chunk_logits(self, query, summaries, spec, projected=None):
        """Chunk logits of query against the summaries (projected: their mem_key already)."""
        keys = self.mem_key(sg(summaries)) if projected is None else projected
        return jnp.einsum(spec, self.mem_query(query), keys).astype(jnp.float32) / math.sqrt(
            self.width)

    def freeze(self, layer):
        """The projections of a layer's memory and window that imagined steps reuse:
        mem_key of the summaries (B, M, F), local keys and values of the window
        (B, C, heads, d). (Stored rows are read raw by `chunk_read`: nothing to project.)"""
        return {"mem_keys": self.mem_key(sg(layer["keys"])),
                "window_k": self.local_k(layer["window"]), "window_v": self.local_v(layer["window"])}

    def _read(self, query, rows, weights):
        """`chunk_read` of this layer: query (..., h, d); rows (..., N, C, H); weights (..., N)."""
        return chunk_read(query, sg(rows), weights, self.read_k.raw(), self.read_v.raw(),
                          sinusoid(self.chunk, self.features))

    def _contents(self, rows, pos):
        """Stop-gradient rows plus the encoding of their slot pos (int, rows' shape[:-1])."""
        return sg(rows + sinusoid(self.chunk, self.features)[pos])

    def step(self, x, state, layer, frozen=None):
        """x (B, H) float32; state: the cleared shared bookkeeping; layer: this layer's
        state; frozen: its `freeze` projections (imagination) or None. Returns
        (y (B, H), row (B, H) to append, frozen with the window moved on, or None)."""
        row = self.norm(x)
        k_now, v_now = self.local_k(row), self.local_v(row)
        if frozen is None:
            window_k, window_v = self.local_k(layer["window"]), self.local_v(layer["window"])
        else:
            window_k, window_v = frozen["window_k"], frozen["window_v"]
        now = jnp.ones(row.shape[:1] + (1,), bool)
        local = local_attention(self.local_q(row),
                                jnp.concatenate([k_now[:, None], window_k[:, ::-1]], 1),
                                jnp.concatenate([v_now[:, None], window_v[:, ::-1]], 1),
                                jnp.concatenate([now, state["window_valid"][:, ::-1]], 1),
                                self.local_bias, self._offset_keys())
        logits = self._chunk_logits(row, layer["keys"], "bf,bmf->bm",
                                    None if frozen is None else frozen["mem_keys"])
        if self.top_k:
            idx, weights = select_top_k(logits, state["valid"], self.top_k)
        else:
            idx, weights = None, masked_softmax(logits, state["valid"])
        contents = layer["contents"]
        if idx is not None:
            contents = jnp.take_along_axis(contents, idx[:, :, None, None], 1)
        read = self._read(self.read_q(row), contents, weights)
        if frozen is not None:
            frozen = {**frozen, "window_k": jnp.concatenate([window_k[:, 1:], k_now[:, None]], 1),
                      "window_v": jnp.concatenate([window_v[:, 1:], v_now[:, None]], 1)}
        return self._finish(x, self.local_out(local) + self.read_out(read)), row, frozen

    def sequence(self, x, layout, prefix, ring):
        """x (T, B, H) float32; layout from `sequence_layout`; prefix (C, B, H) rows of
        the start window; ring: the start's {contents, keys} or None (no chunk).
        Returns (y (T, B, H), rows (C + T, B, H))."""
        row = self.norm(x)
        rows = jnp.concatenate([prefix, row])
        local = self._local_sequence(row, rows, layout)
        read = self._read_sequence(row, rows, layout, ring)
        return self._finish(x, self.local_out(local) + self.read_out(read)), rows

    def _local_sequence(self, row, rows, layout):
        """Blocked form of the step's local attention: offset j of step t is row C+t-j.

        Steps go in blocks of C; block i's queries (steps iC..iC+C-1) see the 2C rows
        iC..iC+2C-1 of the extended axis, masked to offsets 0..C of the same episode:
        two whole blocks of keys per block of queries instead of C+1 shifted copies."""
        c, steps = self.chunk, row.shape[0]
        blocks = -(-steps // c)
        pad = lambda a, fill=0: jnp.concatenate(
            [a, jnp.full((blocks * c - steps,) + a.shape[1:], fill, a.dtype)])
        pair = lambda a: jnp.concatenate([a[:-1], a[1:]], 1)  # (blocks + 1, C, ...) -> (blocks, 2C, ...)
        split = lambda a: a.reshape((-1, c) + a.shape[1:])
        query = split(pad(self.local_q(row)))
        keys, values = (pair(split(pad(f(rows)))) for f in (self.local_k, self.local_v))
        ep = pad(layout["ep"], -2)
        # offset[i, j] of query i against key j of its pair of blocks
        offset = c + jnp.arange(c)[:, None] - jnp.arange(2 * c)[None]
        near = (offset >= 0) & (offset <= c)
        valid = near[None, :, :, None] & (pair(split(ep))[:, None] == split(ep[c:])[:, :, None])
        scores = jnp.einsum("icbhd,ijbhd->ibhcj", query, keys).astype(jnp.float32)
        offset_keys = self._offset_keys()
        if offset_keys is not None:
            scores = scores + jnp.einsum("icbhd,cjhd->ibhcj", query,
                                         offset_keys[jnp.clip(offset, 0, c)]).astype(jnp.float32)
        scores = scores / math.sqrt(query.shape[-1]) + self.local_bias[:, jnp.clip(offset, 0, c)]
        probs = jax.nn.softmax(jnp.where(valid.transpose(0, 3, 1, 2)[:, :, None], scores, NEG), -1)
        out = jnp.einsum("ibhcj,ijbhd->icbhd", probs, values.astype(jnp.float32))
        return out.reshape((-1,) + out.shape[2:])[:steps]

    def _read_sequence(self, row, rows, layout, ring):
        c, steps = self.chunk, row.shape[0]
        # Summary of the chunk that completes at t: mean of rows t-C+1..t.
        summaries = sum(rows[c - i:c - i + steps] for i in range(c)) / c
        logits = self._chunk_logits(row, summaries, "tbf,sbf->bts")
        visible = layout["visible"]
        if ring is not None:
            logits = jnp.concatenate(
                [self._chunk_logits(row, ring["keys"], "tbf,bmf->btm"), logits], -1)
            visible = jnp.concatenate([layout["ring_visible"], visible], -1)
        if gathers(self.read, self.top_k, self.chunk, steps):
            return self._read_selected(row, rows, logits, visible, ring)
        weights = chunk_weights(logits, visible, self.top_k)
        ring_weights, weights = weights[..., :-steps], weights[..., -steps:]

        query = self.read_q(row)
        contents = self._contents(rows, layout["pos"])
        scores = jnp.einsum("tbhd,lbhd->blht", query, self.read_k(contents)).astype(jnp.float32)
        batch, length = scores.shape[:2]
        probs = segment_softmax(scores.reshape((batch * length,) + scores.shape[2:])
                                / math.sqrt(query.shape[-1]),
                                layout["segment"], batch * (length + 1)).reshape(scores.shape)
        # Each row weighs as its chunk does for each query (0: no complete chunk).
        row_weight = jnp.take_along_axis(weights, layout["row_chunk"][:, None], -1)
        row_weight = (row_weight * layout["row_ok"][:, None]).swapaxes(1, 2)[:, :, None]
        read = jnp.einsum("blht,lbhd->tbhd", row_weight * probs,
                          self.read_v(contents).astype(jnp.float32))
        if ring is not None:
            read = read + self._read(query, ring["contents"][None], ring_weights.swapaxes(0, 1))
        return read

    def _read_selected(self, row, rows, logits, visible, ring):
        """The read of `_read_sequence` with top_k > 0, as acting reads: each query's top_k
        chunks gathered (B, T, K, C, H) and read by `chunk_read`. Stored rows carry no
        gradient, so the gather has no backward pass: gradients reach the queries, the
        weights and the key and value projections only, with no scatter over rows x
        queries. logits, visible (B, T, M + T) with ring (M slots first) or (B, T, T)."""
        c, steps = self.chunk, row.shape[0]
        idx, weights = select_top_k(logits, visible, self.top_k)
        slots = 0 if ring is None else ring["keys"].shape[1]
        # The chunk completed at step s holds rows s + 1..s + C of the extended axis.
        rows_at = jnp.clip(idx - slots, 0, steps - 1)[..., None] + 1 + jnp.arange(c)
        batch = jnp.arange(rows.shape[1])[:, None, None, None]
        chunks = rows[rows_at, batch]
        if ring is not None:
            from_ring = jnp.take_along_axis(ring["contents"][:, None],
                                            jnp.clip(idx, 0, slots - 1)[..., None, None], 2)
            chunks = jnp.where((idx < slots)[..., None, None], from_ring, chunks)
        read = self._read(self.read_q(row).swapaxes(0, 1), chunks, weights)
        return read.swapaxes(0, 1)


class HCAMCore(nn.Module):
    """HCAM sequence core, width `features` (H) in and out; see the module docstring.

    Fields: n_layers blocks; chunk C; top_k (0: every visible chunk); heads; width F
    (attention feature size, divisible by heads); max_chunks M (ring slots per layer);
    across_episodes keeps completed chunks across resets; time_encoding adds a learned
    projection of the episode step's sinusoidal features to the input; read: how a
    training pass reads memory ("auto", "dense" or "gather"; see `gathers`); dtype of
    the projections.
    """

    features: int
    n_layers: int = 4
    chunk: int = 16
    top_k: int = 4
    heads: int = 4
    width: int = 128
    max_chunks: int = 64
    across_episodes: bool = False
    time_encoding: bool = True
    read: str = "auto"
    local_positions: bool = False
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        if self.time_encoding:
            # Zero at initialisation: the core starts as it would without the clock.
            self.clock = nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                                  kernel_init=nn.initializers.zeros)
        self.blocks = [HCAMBlock(features=self.features, chunk=self.chunk, top_k=self.top_k,
                                 heads=self.heads, width=self.width, read=self.read,
                                 local_positions=self.local_positions,
                                 dtype=self.dtype)
                       for _ in range(self.n_layers)]

    def initial_state(self, batch_shape):
        """The cleared state (nothing valid) for batch_shape (B,); layout in the module
        docstring."""
        (batch,) = batch_shape
        c, m, h = self.chunk, self.max_chunks, self.features
        zeros = lambda *shape: jnp.zeros((batch,) + shape, jnp.float32)
        layer = lambda: {"contents": zeros(m, c, h), "keys": zeros(m, h),
                         "accum": zeros(c, h), "window": zeros(c, h)}
        return {"step": jnp.zeros((batch,), jnp.int32), "slot": jnp.zeros((batch,), jnp.int32),
                "valid": jnp.zeros((batch, m), bool), "window_valid": jnp.zeros((batch, c), bool),
                "layers": tuple(layer() for _ in range(self.n_layers))}

    def freeze(self, state):
        """``state`` plus the projections that imagined steps (remember=False) would
        otherwise recompute from the unchanging memory on every step (key "frozen"):
        each imagined step then reads them instead of projecting the summaries and the
        window again. Same outputs as the plain state; `step` with remember=True
        drops them, since its writes would make them stale."""
        return {**state, "frozen": tuple(block.freeze(layer)
                                         for block, layer in zip(self.blocks, state["layers"]))}

    def _timed(self, x, step):
        """x (..., H) float32 plus the clock's projection of the episode steps step (...)."""
        if not self.time_encoding:
            return x
        return x + self.clock(episode_time(step)).astype(jnp.float32)

    def step(self, u, reset, state, remember=True):
        """Acting: u (B, H), reset (B,) bool, state -> (y (B, H) in u's dtype, state).
        Reads memory before writing u's rows: a chunk completed now is read from the
        next step on. remember=False (imagination) leaves the memory, the chunk being
        filled and the ring as they were: only the short-range window and the episode
        step (the clock of `time_encoding`) move on."""
        if u.ndim != 2 or u.shape[-1] != self.features:
            raise ValueError(f"HCAMCore.step expects u of shape (B, {self.features}), "
                             f"got {u.shape}")
        # Projections stay valid across a reset: it only masks memory and window out.
        frozen = state.get("frozen") if not remember else None
        state = clear_on_reset(state, jnp.asarray(reset), self.across_episodes)
        fill = state["step"] % self.chunk
        complete = fill == self.chunk - 1
        write = complete[:, None] & (jnp.arange(self.max_chunks) == state["slot"][:, None])
        x = self._timed(u.astype(jnp.float32), state["step"])
        layers, moved = [], []
        for i, (block, layer) in enumerate(zip(self.blocks, state["layers"])):
            x, row, layer_frozen = block.step(x, state, layer, None if frozen is None else frozen[i])
            layers.append(write_row(layer, row, fill, write))
            moved.append(layer_frozen)
        now = jnp.ones(fill.shape + (1,), bool)
        step = state["step"] + 1
        window_valid = jnp.concatenate([state["window_valid"][:, 1:], now], 1)
        if not remember:
            layers = [{**old, "window": new["window"]} for old, new in zip(state["layers"], layers)]
            state = {**state, "step": step, "window_valid": window_valid, "layers": tuple(layers)}
            return x.astype(u.dtype), state if frozen is None else {**state, "frozen": tuple(moved)}
        return x.astype(u.dtype), {
            "step": step,
            "slot": jnp.where(complete, (state["slot"] + 1) % self.max_chunks, state["slot"]),
            "valid": state["valid"] | write,
            "window_valid": window_valid,
            "layers": tuple(layers)}

    def __call__(self, u, reset, state=None, deterministic=True):
        """Training: all T steps at once, equal to `step` over them.

        Args:
          u: (T, B, H) float inputs.
          reset: (T, B) bool episode starts.
          state: the state before step 0 (as `step`, `initial_state` or `state_at`
            build it); None: the cleared state (cheaper: no stored chunks to read).
          deterministic: unused (no dropout); kept for the core interface.

        Returns:
          y (T, B, H) in u's dtype and a trace for `state_at`: {"reset", "start" (the
          start's step, slot, valid, window_valid), "rows": n_layers (C + T, B, H)
          float32 rows (the start window, then each step's), "ring": n_layers
          {contents, keys} of the start, or None}.
        """
        reset = jnp.asarray(reset)
        if u.ndim != 3 or u.shape[-1] != self.features or reset.shape != u.shape[:2]:
            raise ValueError(f"HCAMCore expects u (T, B, {self.features}) and reset (T, B), "
                             f"got {u.shape} and {reset.shape}")
        given = state is not None
        state = state if given else self.initial_state(u.shape[1:2])
        start = {k: state[k] for k in ("step", "slot", "valid", "window_valid")}
        layout = sequence_layout(reset, start, self.chunk, self.max_chunks, self.across_episodes)
        x = self._timed(u.astype(jnp.float32), layout["estep"])
        rows, rings = [], []
        for block, layer in zip(self.blocks, state["layers"]):
            ring = {"contents": layer["contents"], "keys": layer["keys"]} if given else None
            x, layer_rows = block.sequence(x, layout, layer["window"].swapaxes(0, 1), ring)
            rows.append(layer_rows)
            rings.append(ring)
        trace = {"reset": reset, "start": start, "rows": tuple(rows),
                 "ring": tuple(rings) if given else None}
        return x.astype(u.dtype), trace

    def state_at(self, trace, t, b):
        """The state `step` holds after step t of batch row b: t, b (N,) int.

        Holds only chunks completed by t. Materialises (N, M, C, H) contents per layer.
        """
        c, m, across = self.chunk, self.max_chunks, self.across_episodes
        start = trace["start"]
        layout = sequence_layout(trace["reset"], start, c, m, across)
        estep, ep = layout["estep"][t, b], layout["ep"][c + t, b]
        completed = layout["written"] + layout["done"]
        count = completed[t, b]
        # Ring slots number from the start's slot within its episode, else from the reset.
        own = jnp.bool_(across) | (ep == 0)
        since = layout["written"][jnp.maximum(layout["last"][t, b], 0), b]
        base = jnp.where(own, -start["slot"][b], since)
        # Slot m holds the latest chunk index g < count with g - base = m (mod M);
        # g < 0 is the start's own chunk in that slot.
        g = (count - 1)[:, None] - ((count - 1 - base)[:, None] - jnp.arange(m)) % m
        fresh = g >= 0
        valid = jnp.where(fresh, g >= jnp.where(own, 0, base)[:, None],
                          own[:, None] & start["valid"][b])
        completed_at = jax.vmap(jnp.searchsorted)(completed.T[b], g + 1)
        last_row = c + trace["reset"].shape[0] - 1
        # Rows on the extended axis: a chunk completed at s holds rows s+1..s+C.
        chunk_rows = jnp.clip(completed_at[..., None] + 1 + jnp.arange(c), 0, last_row)
        window_rows = t[:, None] + 1 + jnp.arange(c)
        window_valid = layout["ep"][window_rows, b[:, None]] == ep[:, None]
        fill = (estep + 1) % c
        accum_rows = jnp.clip(c + t[:, None] - fill[:, None] + 1 + jnp.arange(c), 0, last_row)
        accum_ok = jnp.arange(c) < fill[:, None]
        layers = []
        for i, rows in enumerate(trace["rows"]):
            contents = rows[chunk_rows, b[:, None, None]]
            keys = contents.mean(-2)
            if trace["ring"] is not None:
                ring = trace["ring"][i]
                contents = jnp.where(fresh[..., None, None], contents, ring["contents"][b])
                keys = jnp.where(fresh[..., None], keys, ring["keys"][b])
            layers.append({
                "contents": jnp.where(valid[..., None, None], contents, 0.0),
                "keys": jnp.where(valid[..., None], keys, 0.0),
                "accum": jnp.where(accum_ok[..., None], rows[accum_rows, b[:, None]], 0.0),
                "window": jnp.where(window_valid[..., None], rows[window_rows, b[:, None]], 0.0)})
        return {"step": (estep + 1).astype(jnp.int32),
                "slot": ((count - base) % m).astype(jnp.int32),
                "valid": valid, "window_valid": window_valid, "layers": tuple(layers)}
