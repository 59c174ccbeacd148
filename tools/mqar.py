#!/usr/bin/env python3
"""Deterministic multi-query associative recall (MQAR) examples, zoology-style (MODEL.md §11).

This docstring is the specification; `src/eval/mqar.rs` implements the same generator and must produce identical
examples from the same parameters. All integer arithmetic is on unsigned 64-bit words, wrapping modulo 2^64.

Parameters: `vocab_size` V (even), `seq_len` T (even, T < V), `num_kv_pairs` K (4·K ≤ T), `power_a` a (0 < a ≤ 1),
`seed` (a u64) and the example index i (0, 1, 2, ...). Examples are independent: example i depends only on the
parameters and i, so the first n examples of a larger set are the set of n examples.

PRNG (SplitMix64). `mix(z)`: z ← (z ⊕ (z >> 30))·0xBF58476D1CE4E5B9; z ← (z ⊕ (z >> 27))·0x94D049BB133111EB;
return z ⊕ (z >> 31). A generator with state s: `next()` does s ← s + 0x9E3779B97F4A7C15 and returns mix(s);
`below(n)` = next() mod n. Example i uses a generator whose initial state is mix(mix(seed) + i).

Example i, in this order of draws (exactly T + K draws):
1. Keys: the pool [1, 2, ..., V/2 − 1] (length L = V/2 − 1). For j = 0..K−1: r = j + below(L − j); swap pool[j]
   and pool[r]. key_j = pool[j]. (Partial Fisher–Yates.)
2. Values: the pool [V/2, V/2 + 1, ..., V − 1] (length V/2), the same procedure: value_j = pool[j].
3. Gaps: S = (T − 2K)/2 slots; slot g (0-based) has the integer weight W_g = max(1, floor(2^30 · (g+1)^(a−1) + 0.5))
   computed in IEEE double precision (C `pow`). For j = 0..K−1: total = Σ W over the slots not yet taken;
   r = below(total); walk the untaken slots in increasing g, subtracting each W_g from r until r < W_g: that slot is
   gap_j; mark it taken. (Weighted sampling without replacement, p_g ∝ (g+1)^(a−1) as zoology's `power_a`.)
4. Tokens: positions 2j and 2j+1 hold key_j and value_j (j < K). For every position p = 2K, ..., T−1 in increasing
   order, token[p] = below(V) (filler noise, zoology's `random_non_queries`). Then for each j, the position
   q_j = 2K + 2·gap_j is overwritten with key_j.

The model reads the T tokens; query j is scored at position q_j, where the prediction (argmax of the logits) must be
value_j. An example's score is the number of its K queries answered correctly; accuracy = Σ scores / (n·K).

Fingerprint (FNV-1a 64 over 32-bit words): h = 0xCBF29CE484222325; for each word, for each of its 4 little-endian
bytes b: h ← (h ⊕ b)·0x100000001B3. The words are, example by example: its T tokens, then q_j and value_j for
j = 0..K−1.

    python3 tools/mqar.py --seq-len 256 --kv 16 --seed 1 --examples 2       # print examples as JSON
    python3 tools/mqar.py --self-test                                         # vectorised vs scalar generator
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def mix(z: int) -> int:
    """SplitMix64 finaliser on a Python int (mod 2^64)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class SplitMix64:
    """Scalar SplitMix64 generator."""

    def __init__(self, state: int):
        self.state = state & M64

    def next(self) -> int:
        self.state = (self.state + GOLDEN) & M64
        return mix(self.state)

    def below(self, n: int) -> int:
        return self.next() % n


def example_state(seed: int, index: int) -> int:
    """Initial generator state of example `index`."""
    return mix((mix(seed & M64) + index) & M64)


def gap_weights(seq_len: int, num_kv_pairs: int, power_a: float) -> list:
    slots = (seq_len - 2 * num_kv_pairs) // 2
    return [max(1, int(math.floor(2.0 ** 30 * float(g + 1) ** (power_a - 1.0) + 0.5))) for g in range(slots)]


def check_params(vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float) -> None:
    if vocab_size % 2 or seq_len % 2:
        raise ValueError("vocab_size and seq_len must be even")
    if not seq_len < vocab_size:
        raise ValueError("seq_len must be below vocab_size")
    if num_kv_pairs < 1 or 4 * num_kv_pairs > seq_len:
        raise ValueError("need 1 <= num_kv_pairs and 4 * num_kv_pairs <= seq_len")
    if not 0.0 < power_a <= 1.0:
        raise ValueError("power_a must be in (0, 1]")


def example_scalar(index: int, seed: int, vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float):
    """One example with the plain generator: (tokens [T], query positions [K], values [K])."""
    check_params(vocab_size, seq_len, num_kv_pairs, power_a)
    v, t, k = vocab_size, seq_len, num_kv_pairs
    rng = SplitMix64(example_state(seed, index))

    def distinct(pool):
        for j in range(k):
            r = j + rng.below(len(pool) - j)
            pool[j], pool[r] = pool[r], pool[j]
        return pool[:k]

    keys = distinct(list(range(1, v // 2)))
    values = distinct(list(range(v // 2, v)))
    weights = gap_weights(t, k, power_a)
    taken = [False] * len(weights)
    gaps = []
    for _ in range(k):
        r = rng.below(sum(w for w, tk in zip(weights, taken) if not tk))
        for g, w in enumerate(weights):
            if taken[g]:
                continue
            if r < w:
                taken[g] = True
                gaps.append(g)
                break
            r -= w
    tokens = [0] * t
    for j in range(k):
        tokens[2 * j], tokens[2 * j + 1] = keys[j], values[j]
    for p in range(2 * k, t):
        tokens[p] = rng.below(v)
    pos = [2 * k + 2 * g for g in gaps]
    for j in range(k):
        tokens[pos[j]] = keys[j]
    return tokens, pos, values


def _mix_np(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def generate(n: int, seed: int, vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float, start: int = 0,
             block: int = 4096):
    """Examples start..start+n (vectorised): tokens int64 [n,T], query positions int64 [n,K], values int64 [n,K]."""
    check_params(vocab_size, seq_len, num_kv_pairs, power_a)
    parts = [_generate_block(min(block, n - b), seed, vocab_size, seq_len, num_kv_pairs, power_a, start + b)
             for b in range(0, n, block)]
    if not parts:
        return (np.zeros((0, seq_len), np.int64), np.zeros((0, num_kv_pairs), np.int64),
                np.zeros((0, num_kv_pairs), np.int64))
    return tuple(np.concatenate(p) for p in zip(*parts))


def _generate_block(n, seed, v, t, k, power_a, start):
    with np.errstate(over="ignore"):
        state = _mix_np(np.uint64(mix(seed & M64)) + np.arange(start, start + n, dtype=np.uint64))
        steps = np.arange(1, t + k + 1, dtype=np.uint64) * np.uint64(GOLDEN)
        draws = _mix_np(state[:, None] + steps[None, :])
    rows = np.arange(n)

    def distinct(lo, length, col):
        pool = np.tile(np.arange(lo, lo + length, dtype=np.int32), (n, 1))
        for j in range(k):
            r = j + (draws[:, col + j] % np.uint64(length - j)).astype(np.int64)
            a, b = pool[:, j].copy(), pool[rows, r].copy()
            pool[rows, r] = a
            pool[:, j] = b
        return pool[:, :k].astype(np.int64)

    keys = distinct(1, v // 2 - 1, 0)
    values = distinct(v // 2, v // 2, k)
    weights = np.tile(np.array(gap_weights(t, k, power_a), dtype=np.uint64), (n, 1))
    gaps = np.zeros((n, k), dtype=np.int64)
    for j in range(k):
        r = draws[:, 2 * k + j] % weights.sum(axis=1)
        g = np.argmax(np.cumsum(weights, axis=1) > r[:, None], axis=1)
        gaps[:, j] = g
        weights[rows, g] = 0
    tokens = np.zeros((n, t), dtype=np.int64)
    tokens[:, 0:2 * k:2], tokens[:, 1:2 * k:2] = keys, values
    tokens[:, 2 * k:] = (draws[:, 3 * k:] % np.uint64(v)).astype(np.int64)
    pos = 2 * k + 2 * gaps
    tokens[rows[:, None], pos] = keys
    return tokens, pos, values


def fingerprint(tokens, pos, values) -> int:
    """FNV-1a 64 fingerprint of a set of examples (see the module docstring)."""
    words = np.concatenate([tokens, np.stack([pos, values], axis=2).reshape(len(tokens), -1)], axis=1)
    data = words.astype("<u4").tobytes()
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & M64
    return h


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--kv", type=int, default=16, help="number of key-value pairs")
    ap.add_argument("--power-a", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--examples", type=int, default=2)
    ap.add_argument("--self-test", action="store_true", help="compare the vectorised and scalar generators")
    args = ap.parse_args()
    params = (args.vocab_size, args.seq_len, args.kv, args.power_a)
    if args.self_test:
        for (v, t, k, a) in [params, (64, 32, 4, 0.01), (8192, 512, 64, 0.01), (100, 40, 10, 1.0)]:
            tok, pos, val = generate(9, args.seed, v, t, k, a, start=3, block=4)
            for i in range(9):
                st, sp, sv = example_scalar(3 + i, args.seed, v, t, k, a)
                if st != tok[i].tolist() or sp != pos[i].tolist() or sv != val[i].tolist():
                    sys.exit(f"mismatch at example {3 + i} for V={v} T={t} K={k} a={a}")
        print("vectorised and scalar generators agree")
        return
    tok, pos, val = generate(args.examples, args.seed, *params)
    print(json.dumps({"fnv1a64": f"{fingerprint(tok, pos, val):#018x}",
                      "examples": [{"tokens": t.tolist(), "query_positions": p.tolist(), "values": v.tolist()}
                                   for t, p, v in zip(tok, pos, val)]}))


if __name__ == "__main__":
    main()
