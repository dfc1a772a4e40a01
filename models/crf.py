"""A linear-chain CRF over tag indices (text-agnostic).

Shapes: ``B`` batch, ``L`` padded length, ``T`` tags. Sentence ``b`` occupies
positions ``0 .. lengths[b] - 1``; everything after is padding and is never read,
so a sentence's result does not depend on what it is batched with.

Disallowed transitions (see :func:`models.schemes.allowed_transitions`) get the
large *finite* score :data:`NEG` rather than ``-inf``: log-space sums then never
meet ``-inf - (-inf)`` (NaN), and even an impossible gold path has a finite
loss and finite gradients. ``exp(NEG)`` underflows to exactly 0 in float32, so
such paths carry no probability mass.

Scores are computed in float32, or in float64 when the emissions are float64
(so tests can compare exactly); half-precision inputs are upcast.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

NEG = -10000.0
_REDUCTIONS = ("sum", "mean", "none")

#: On the CPU, Viterbi scores only each tag's allowed predecessors (:func:`_viterbi_numpy_sparse`) from this
#: many tags and this batch size up; below, the dense ``(T, T)`` step is cheaper (fewer numpy calls per
#: position). zh-pos (60 BMES tags), CTB6 dev lengths, one thread, µs per sentence dense -> sparse: 365 -> 193
#: at batch 64, 496 -> 379 at 16, 667 -> 573 at 8, 806 -> 773 at 4, 718 -> 1,361 at 1; zh-ner's 13 BIOES
#: tags were slower sparse at every batch size.
SPARSE_MIN_TAGS = 32
SPARSE_MIN_BATCH = 8


class CRF(nn.Module):
    """Linear-chain CRF with optional hard transition constraints.

    ``allowed`` is a bool ``(T + 2, T + 2)`` matrix (rows/columns ``T`` and
    ``T + 1`` are START and END) or ``None`` for no constraint. It is kept as a
    persistent buffer so a saved model restores its constraints.
    """

    def __init__(self, num_tags: int, allowed: Tensor | None = None):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be >= 1, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [i -> j]
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.register_buffer("allowed", _check_allowed(allowed, num_tags), persistent=True)
        self._groups: tuple[bytes, list[tuple[np.ndarray, np.ndarray]]] | None = None  # see _predecessor_groups

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    # ------------------------------------------------------------------ public

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor, reduction: str = "sum") -> Tensor:
        """Negative log-likelihood of the gold ``tags`` (B, L); ``reduction`` over sentences.

        ``"mean"`` averages over sentences (not tokens). Empty sentences score 0.
        """
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        em, lengths, mask = self._prepare(emissions, lengths)
        if em.shape[1] == 0:  # nothing to score; indexing position 0 below would fail
            losses = em.new_zeros(em.shape[0])
        else:
            losses = self._log_partition(em, mask) - self._gold_score(em, tags, lengths, mask)
            losses = torch.where(lengths > 0, losses, 0.0)  # (B,)
        if reduction == "none":
            return losses
        return losses.sum() if reduction == "sum" else losses.mean()

    def viterbi(
        self, emissions: Tensor, lengths: Tensor, tag_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Best tags (B, L) long, 0 at padding, and their scores (B,).

        ``tag_mask`` (B, L, T) bool restricts the tags allowed at each position;
        an all-False row is read as "no restriction" so callers cannot make the
        search empty by accident.
        """
        em, lengths, mask = self._prepare(emissions, lengths)
        batch, length, num_tags = em.shape
        if length == 0:
            return em.new_zeros(batch, 0, dtype=torch.long), em.new_zeros(batch)
        if tag_mask is not None:
            tag_mask = tag_mask.to(device=em.device, dtype=torch.bool)
            tag_mask = tag_mask | ~tag_mask.any(dim=-1, keepdim=True)
            # A penalty, not a hard cut: conflicting constraints still yield a path.
            em = em.masked_fill(~tag_mask, NEG)
        trans, start, end = self._scores(em.dtype)
        if em.device.type == "cpu":  # same recursion in numpy: far less overhead per position
            arrays = (em.detach().numpy(), lengths.numpy(), trans.detach().numpy(), start.detach().numpy(),
                      end.detach().numpy())
            if num_tags >= SPARSE_MIN_TAGS and batch >= SPARSE_MIN_BATCH:
                tags, best_score = _viterbi_numpy_sparse(*arrays, self._predecessor_groups())
            else:
                tags, best_score = _viterbi_numpy(*arrays)
            return torch.from_numpy(tags), torch.from_numpy(best_score)
        return _viterbi_torch(em, lengths, mask, trans, start, end)

    def marginals(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """Posterior ``p(y_t = j)`` (B, L, T): rows sum to 1 at real positions, 0 at padding."""
        em, lengths, mask = self._prepare(emissions, lengths)
        batch, length, num_tags = em.shape
        if length == 0:
            return em.new_zeros(batch, 0, num_tags)
        trans, start, end = self._scores(em.dtype)
        alphas = [start + em[:, 0]]  # alphas[t]: (B, T) at position t
        betas = [end.expand(batch, num_tags)]  # betas[k]: (B, T) at position L - 1 - k
        # One pass fills alpha from the left and beta from the right together.
        for t in range(1, length):
            alpha = torch.logsumexp(alphas[-1].unsqueeze(2) + trans, dim=1) + em[:, t]
            alphas.append(torch.where(mask[:, t, None], alpha, alphas[-1]))  # frozen past the end
            s = length - 1 - t
            beta = torch.logsumexp(trans + (em[:, s + 1] + betas[-1]).unsqueeze(1), dim=2)
            betas.append(torch.where(mask[:, s + 1, None], beta, end))  # a last tag only ends
        alpha, beta = torch.stack(alphas, dim=1), torch.stack(betas[::-1], dim=1)  # (B, L, T)
        log_z = torch.logsumexp(alpha[:, -1] + end, dim=1)  # (B,)
        posterior = torch.exp(alpha + beta - log_z[:, None, None])
        # where, not multiply: padding values may overflow to inf and inf * 0 is NaN.
        return torch.where(mask.unsqueeze(2), posterior, 0.0)

    @torch.no_grad()
    def extend(self, num_new: int, allowed: Tensor | None) -> None:
        """Grow to ``num_tags + num_new`` tags; new tags take the last indices.

        Existing scores are kept, new ones start at 0. ``allowed`` is the full
        new ``(T + 2, T + 2)`` matrix (or None). Parameters are replaced, so an
        optimizer built before must be rebuilt.
        """
        if num_new < 0:
            raise ValueError(f"num_new must be >= 0, got {num_new}")
        new = self.num_tags + num_new
        self.allowed = _check_allowed(allowed, new).to(self.allowed.device)
        self.transitions = _grown(self.transitions, (new, new))
        self.start_transitions = _grown(self.start_transitions, (new,))
        self.end_transitions = _grown(self.end_transitions, (new,))
        self.num_tags = new

    # ----------------------------------------------------------------- helpers

    def _predecessor_groups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The tags grouped by how many predecessors they allow: ``(tags (n,), their allowed predecessors
        (n, k), ascending)`` per group (kept until ``allowed`` changes)."""
        allowed = self.allowed[: self.num_tags, : self.num_tags].cpu().numpy()
        key = allowed.tobytes()
        if self._groups is None or self._groups[0] != key:
            counts = allowed.sum(axis=0)
            groups = []
            for k in sorted(set(counts.tolist()) - {0}):
                tags = np.flatnonzero(counts == k)
                groups.append((tags, np.stack([np.flatnonzero(allowed[:, j]) for j in tags])))
            self._groups = (key, groups)
        return self._groups[1]

    def _prepare(self, emissions: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Upcast emissions, zero their padding, and build the (B, L) position mask."""
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            raise ValueError(f"emissions must be (B, L, {self.num_tags}), got {tuple(emissions.shape)}")
        dtype = torch.promote_types(emissions.dtype, torch.float32)
        lengths = lengths.to(device=emissions.device, dtype=torch.long)
        positions = torch.arange(emissions.shape[1], device=emissions.device)
        mask = positions.unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
        # Padding may hold anything (NaN, inf); zero it so no such value reaches any arithmetic.
        em = emissions.to(dtype).masked_fill(~mask.unsqueeze(2), 0.0)
        return em, lengths, mask

    def _scores(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Transition (T, T), start (T,) and end (T,) scores with the constraint penalty."""
        n, allowed = self.num_tags, self.allowed
        trans = self.transitions.to(dtype).masked_fill(~allowed[:n, :n], NEG)
        start = self.start_transitions.to(dtype).masked_fill(~allowed[n, :n], NEG)
        end = self.end_transitions.to(dtype).masked_fill(~allowed[:n, n + 1], NEG)
        return trans, start, end

    def _log_partition(self, em: Tensor, mask: Tensor) -> Tensor:
        """log Z (B,) by the forward algorithm; needs L >= 1."""
        trans, start, end = self._scores(em.dtype)
        alpha = start + em[:, 0]  # (B, T)
        for t in range(1, em.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + em[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)  # frozen past the end
        return torch.logsumexp(alpha + end, dim=1)

    def _gold_score(self, em: Tensor, tags: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        """Score (B,) of the given paths; needs L >= 1."""
        trans, start, end = self._scores(em.dtype)
        # Padded tag values are arbitrary (even -100); make them valid indices.
        tags = torch.where(mask, tags.to(device=em.device, dtype=torch.long), 0)  # (B, L)
        emit = em.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, L)
        step = trans[tags[:, :-1], tags[:, 1:]]  # (B, L - 1)
        last = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # (B,)
        inner = torch.where(mask, emit, 0.0).sum(1) + torch.where(mask[:, 1:], step, 0.0).sum(1)
        edges = torch.where(lengths > 0, start[tags[:, 0]] + end[last], 0.0)
        return inner + edges


def _viterbi_torch(
    em: Tensor, lengths: Tensor, mask: Tensor, trans: Tensor, start: Tensor, end: Tensor
) -> tuple[Tensor, Tensor]:
    """:meth:`CRF.viterbi`'s recursion with tensor operations on the emissions' device (CUDA).

    On a GPU each operation is a kernel launch, and with short tag sets the launches are the cost,
    so every position takes three forward and one backward, written into preallocated buffers. Rows
    are taken longest first (sorted here and back if they are not), so the sentences still running at
    a position are a prefix of the batch and the others are left alone instead of masked.
    """
    batch, length, num_tags = em.shape
    host_lengths = lengths.cpu()
    order = None
    if batch > 1 and not bool((host_lengths[:-1] >= host_lengths[1:]).all()):
        order = torch.argsort(host_lengths, descending=True, stable=True)
        host_lengths = host_lengths[order]
        em, order = em[order.to(em.device)], order.to(em.device)
    # running[t]: rows with length > t (a prefix); a finished row's score stays at its last position's
    running = torch.searchsorted(-host_lengths, -torch.arange(length), side="left").tolist()
    steps = em.transpose(0, 1).contiguous()  # (L, B, T): each position's rows are contiguous
    score = start + steps[0]  # (B, T)
    best = torch.empty_like(score)
    pointers = torch.empty(length, batch, num_tags, dtype=torch.long, device=em.device)
    for t in range(1, length):
        n = running[t]
        if n == 0:
            break
        torch.max(score[:n].unsqueeze(2) + trans, dim=1, out=(best[:n], pointers[t, :n]))
        torch.add(best[:n], steps[t, :n], out=score[:n])
    final = score + end
    best_score, last = final.max(dim=1)  # (B,)
    path = last.expand(length, batch).contiguous()  # (L, B): a row keeps its last tag up to its end
    for t in range(length - 1, 0, -1):
        n = running[t]
        if n:
            torch.gather(pointers[t, :n], 1, path[t, :n].unsqueeze(1), out=path[t - 1, :n].unsqueeze(1))
    tags = path.T
    if order is not None:
        back = torch.empty_like(order)
        back[order] = torch.arange(batch, device=order.device)
        tags, best_score = tags[back], best_score[back]
    return torch.where(mask, tags, 0), torch.where(lengths > 0, best_score, 0.0)


def _viterbi_numpy(
    em: np.ndarray, lengths: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CRF.viterbi`'s recursion on the host: (B, L, T) emissions (padding zeroed, tag mask
    applied) -> best tags (B, L), 0 at padding, and their scores (B,).

    Arrays are laid out (L, T, B) so every step reduces over whole contiguous rows of sentences,
    and each step only touches the sentences still running: a prefix, rows being taken longest
    first (as planned batches come; sorted here and back if they are not).
    """
    em, lengths, back = _longest_first(em, lengths)
    batch, length, num_tags = em.shape
    steps = np.ascontiguousarray(em.transpose(1, 2, 0))  # (L, T, B)
    score = start[:, None] + steps[0]  # (T, B)
    pointers = np.empty((length, num_tags, batch), dtype=np.int64)
    pointers[:] = np.arange(num_tags)[:, None]  # padding points back to the same tag
    across = trans[:, :, None]  # (T previous, T next, 1)
    running = np.searchsorted(-lengths, -np.arange(length), side="left").tolist()  # rows with length > t
    for t in range(1, length):
        n = running[t]
        if n == 0:
            break
        cand = score[:, None, :n] + across  # (T previous, T next, b)
        pointers[t, :, :n] = cand.argmax(axis=0)
        np.add(cand.max(axis=0), steps[t, :, :n], out=score[:, :n])
    # the (B, T) views of the final scores and of each step's pointers
    tags, best_score = _backtrack((score + end[:, None]).T, pointers.transpose(0, 2, 1), lengths, em.dtype)
    return (tags, best_score) if back is None else (tags[back], best_score[back])


def _longest_first(em: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The batch's rows longest first (stable), and the order that puts results back (None: already so)."""
    if len(lengths) < 2 or bool((lengths[:-1] >= lengths[1:]).all()):
        return em, lengths, None
    order = np.argsort(-lengths, kind="stable")
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return em[order], lengths[order], back


def _backtrack(final: np.ndarray, pointers: np.ndarray, lengths: np.ndarray, dtype: np.dtype
               ) -> tuple[np.ndarray, np.ndarray]:
    """Best tags (B, L), 0 at padding, and scores (B,) from the final scores (B, T) (end scores added) and
    each position's best previous tag (L, B, T)."""
    batch, length = final.shape[0], pointers.shape[0]
    last = final.argmax(axis=1)  # (B,)
    rows = np.arange(batch)
    best = final[rows, last]
    tags = np.empty((batch, length), dtype=np.int64)
    for t in range(length - 1, -1, -1):
        tags[:, t] = last
        last = pointers[t][rows, last]
    tags[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return tags, np.where(lengths > 0, best, 0.0).astype(dtype)


def _viterbi_numpy_sparse(
    em: np.ndarray, lengths: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray,
    groups: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_viterbi_numpy` for many tags: each step scores only the allowed predecessors of each tag
    (``groups``, from :meth:`CRF._predecessor_groups`), e.g. 2 of 60 for an M- or E- tag of BMES-POS.

    The result is the dense recursion's, not an approximation: a disallowed transition scores exactly
    :data:`NEG`, so the best path through one comes from the best-scoring tag of all, plus ``NEG``; that one
    "escape" candidate is kept beside each tag's allowed ones (it wins only where constraints conflict).
    Only an exact tie between an allowed candidate and the escape could be broken otherwise than the dense
    argmax breaks it (tests compare paths and scores bit for bit).
    Layout (B, T), rows longest first (sorted here and back if they are not).
    """
    em, lengths, back = _longest_first(em, lengths)
    batch, length, num_tags = em.shape
    score = start[None, :] + em[:, 0]  # (B, T)
    pointers = np.empty((length, batch, num_tags), dtype=np.int64)
    pointers[:] = np.arange(num_tags)  # padding points back to the same tag
    running = np.searchsorted(-lengths, -np.arange(length), side="left").tolist()  # rows with length > t
    steps = []
    for tags, preds in groups:
        shared = bool((preds == preds[0]).all())  # e.g. B- and S- tags all follow the same E- and S- tags
        steps.append((tags, preds[0] if shared else preds, trans[preds, tags[:, None]], shared,
                      preds.ravel(), np.arange(len(tags))[None, :] * preds.shape[1]))
    covered = np.concatenate([tags for tags, _ in groups]) if groups else np.empty(0, dtype=np.int64)
    orphans = np.setdiff1d(np.arange(num_tags), covered)  # tags no transition may reach
    for t in range(1, length):
        n = running[t]
        if n == 0:
            break
        live = score[:n]
        top = live.argmax(axis=1)  # (b,) each row's best tag: its "escape" through a disallowed transition
        escape = (live[np.arange(n), top] + NEG)[:, None]
        nxt = np.empty_like(live)
        ptr = pointers[t, :n]
        for tags, preds, weights, shared, flat, offsets in steps:
            if not shared and preds.shape[1] == 2:  # I-/M-/E- tags: two predecessors, compared directly
                first = live[:, preds[:, 0]] + weights[:, 0]  # (b, n_tags)
                second = live[:, preds[:, 1]] + weights[:, 1]
                later = second > first  # a tie keeps the lower tag, as argmax does
                best = np.where(later, second, first)
                prev = np.where(later, preds[:, 1], preds[:, 0])
            else:
                cand = (live[:, preds][:, None, :] if shared else live[:, preds]) + weights  # (b, n_tags, k)
                pick = cand.argmax(axis=2)
                best = np.take_along_axis(cand, pick[..., None], 2)[..., 0]
                prev = preds[pick] if shared else flat[pick + offsets]
            worse = best < escape
            if worse.any():
                best = np.where(worse, escape, best)
                prev = np.where(worse, top[:, None], prev)
            nxt[:, tags] = best
            ptr[:, tags] = prev
        if len(orphans):
            nxt[:, orphans] = escape
            ptr[:, orphans] = top[:, None]
        nxt += em[:n, t]
        score[:n] = nxt
    tags, best_score = _backtrack(score + end[None, :], pointers, lengths, em.dtype)
    return (tags, best_score) if back is None else (tags[back], best_score[back])


def _check_allowed(allowed: Tensor | None, num_tags: int) -> Tensor:
    size = num_tags + 2
    if allowed is None:
        return torch.ones(size, size, dtype=torch.bool)
    allowed = torch.as_tensor(allowed).to(dtype=torch.bool).clone()
    if allowed.shape != (size, size):
        raise ValueError(f"allowed must be ({size}, {size}) for {num_tags} tags, got {tuple(allowed.shape)}")
    return allowed


def _grown(param: nn.Parameter, shape: tuple[int, ...]) -> nn.Parameter:
    """A zero parameter of ``shape`` with ``param`` copied into its leading corner."""
    grown = param.new_zeros(shape)
    grown[tuple(slice(0, n) for n in param.shape)] = param
    return nn.Parameter(grown, requires_grad=param.requires_grad)
