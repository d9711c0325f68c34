"""Hidden tests of stage `embeddings`, part 2: cosine_similarity, nearest and analogy.

(This file sorts before test_embeddings.py, whose out-of-range tests must run last.)
Expected values come from the reference in float64. Cosines over d terms are compared
with the elementwise tolerance or the derived bound of their sums
(embeddings_checks.cosine_atol), whichever is larger. Error carried forward: nearest
is also right when it ranks by the student's OWN cosine_similarity (read back, when
those scores have no near tie), analogy when it returns the student's own
nearest(table[b] - table[a] + table[c], table, k, [a, b, c]); where they still fail,
the feedback names the student's cosine or nearest mistake and the test charging it.
"""

import pytest
import torch

from grader.testing import CheckFailure, StudentCodeError, expect_close, expect_equal, randn

from embeddings_checks import (NEAREST_TEST, assert_outside, cosine_atol,  # this folder's helpers
                               cosine_mistakes, cosine_note, int64, matches_own_cosine, own_nearest, ranking)

# The analogy table of the handout (section 6): dims are (royalty, maleness, fruitiness).
WORDS = ["man", "woman", "king", "queen", "prince", "apple"]
MAN, WOMAN, KING, QUEEN, PRINCE, APPLE = range(6)
ANALOGY_TABLE = [[1.0, 0.5, 0.0], [1.0, -0.5, 0.0], [4.0, 1.0, 0.0],
                 [4.0, -1.0, 1.0], [3.0, 2.0, 0.0], [0.0, 0.0, 2.0]]

# A table where cosine similarity and the dot product rank the rows differently (query [1, 0]).
# cosine: 2 (0.992), 4 (0.894), 1 (0.707), 0 (0), 3 (-1);  dot: 1 (3), 4 (1), 2 (0.8), 0, 3
NEAREST_TABLE = [[0.0, 1.0], [3.0, 3.0], [0.8, 0.1], [-1.0, 0.0], [1.0, -0.5]]
NEAREST_QUERY = [1.0, 0.0]


# ---- cosine_similarity ------------------------------------------------------------

COSINE_CASES = {"(4, 8) vs (8,)": ((4, 8), (8,)), "(2, 1, 8) vs (1, 3, 8)": ((2, 1, 8), (1, 3, 8)),
                "(6, 6) vs (6, 6)": ((6, 6), (6, 6)), "(3,) vs (3,)": ((3,), (3,)),
                "(4, 768) vs (768,)": ((4, 768), (768,))}


def check_cosine(got, expected: torch.Tensor, a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """expect_close with atol = max(elementwise, cosine_atol(d)); for d = 768 (float32) the
    bound 9.2e-5 is the larger (random cosines there are ~0.04, 1e-5 + 1e-4·|cos| ≈ 1.4e-5), and
    the named mistakes stay far outside it (asserted): dim 0 has another shape, the dot product
    is ~700x too big, 1 - cos is ~1 away, squared norms shrink |cos| ~0.04 to ~5e-5."""
    elementwise_atol, rtol = (1e-10, 1e-8) if expected.dtype == torch.float64 else (1e-5, 1e-4)
    atol = max(elementwise_atol, cosine_atol(a.shape[-1], expected.dtype))
    mistakes = cosine_mistakes(a, b, expected.dtype)
    if atol > elementwise_atol:
        assert_outside(expected, mistakes, atol, rtol)
    expect_close(got, expected, what=what, mistakes=mistakes, atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", list(COSINE_CASES))
def test_cosine(student, reference, device, case):
    """cosine_similarity over the last dim with broadcasting, {case}"""
    shape_a, shape_b = COSINE_CASES[case]
    a, b = randn(*shape_a, seed=8, device=device), randn(*shape_b, seed=9, device=device)
    expected = reference.cosine_similarity(a.double(), b.double()).float()
    # Norms are far above eps: every reading of eps (clamped norms, clamped product, added) agrees.
    eps = {"(3,) vs (3,)": {"eps": 1e-6}, "(6, 6) vs (6, 6)": {"eps": 1e-8}}.get(case, {})
    check_cosine(student.embeddings.cosine_similarity(a, b, **eps), expected, a, b,
                 what=f"cosine_similarity(a {tuple(a.shape)}, b {tuple(b.shape)}"
                      + "".join(f", eps={v:g}" for v in eps.values()) + ")")


def test_cosine_float64(student, reference, device):
    """cosine_similarity keeps float64"""
    # Norms about 10: eps = 1e-8 added to a norm product of ~100 stays below the float64 tolerance.
    a = 4 * randn(5, 7, seed=10, device=device, dtype=torch.float64)
    b = 4 * randn(7, seed=11, device=device, dtype=torch.float64)
    check_cosine(student.embeddings.cosine_similarity(a, b), reference.cosine_similarity(a, b), a, b,
                 what="cosine_similarity(a (5, 7) float64, b (7,) float64)")


def test_cosine_zero_vector(student, device):
    """cosine_similarity of a zero vector is 0, not NaN"""
    a = torch.zeros(2, 4, device=device)
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], device=device)
    # The cosine mistakes (dim 0 has another shape here), with 1 - cosine as ones: with the norms
    # clamped, 1 - 0, not the NaN of the unclamped formula.
    expect_close(student.embeddings.cosine_similarity(a, b), torch.zeros(2, device=device), atol=1e-6,
                 what="cosine_similarity(zero vectors, [[1, 2, 3, 4], zeros]) (clamp each norm to at "
                      "least eps, so that a zero vector gives 0 instead of 0 / 0)",
                 mistakes=cosine_mistakes(a, b, torch.float32) | {
                     "the result is 1 - cosine (the cosine distance)": torch.ones(2, device=device)})


# ---- nearest and analogy -------------------------------------------------------------

def nearest_mistakes(query, table, k, exclude) -> dict:
    q, t = query.double().cpu(), table.double().cpu()
    cos = (t @ q) / (t.norm(dim=1) * q.norm())
    device = table.device
    return {
        "the rows are ranked by dot product; rank them by cosine similarity":
            lambda: ranking(t @ q, k, exclude).to(device),
        "the order is ascending (the worst match first); the best must come first":
            lambda: ranking(cos, k, exclude, descending=False).to(device),
        "exclude is ignored": lambda: ranking(cos, k).to(device),
    }


def check_nearest(student, got, expected, query, table, k, exclude, what: str) -> None:
    """got must be the k best rows by cosine; also accepted: the k best by the student's own
    cosine_similarity (error carried forward, charged by the cosine tests). Otherwise the
    feedback names the student's cosine mistake too, when there is one."""
    try:
        expect_equal(got, expected, what=what, mistakes=nearest_mistakes(query, table, k, exclude))
    except CheckFailure as failure:
        if matches_own_cosine(student, got, query, table, k, exclude):
            return
        note = cosine_note(student, query, table)
        raise CheckFailure(f"{failure}\n({note})" if note else str(failure)) from None


def call_nearest(student, *args, **kwargs):
    """student.embeddings.nearest(...); when it raises, the feedback names a cosine mistake too."""
    try:
        return student.embeddings.nearest(*args, **kwargs)
    except StudentCodeError as exc:
        note = "" if exc.is_a("NotImplementedError") else cosine_note(student, args[0], args[1])
        if not note:
            raise
        raise CheckFailure(f"{exc}\n({note})") from None


def call_analogy(student, table, a, b, c, *args, **kwargs):
    """student.embeddings.analogy(table, a, b, c, ...); when it raises, the feedback names a cosine
    mistake too (on the vector analogy ranks by), which the cosine tests charge."""
    try:
        return student.embeddings.analogy(table, a, b, c, *args, **kwargs)
    except StudentCodeError as exc:
        note = "" if exc.is_a("NotImplementedError") else cosine_note(student, table[b] - table[a] + table[c],
                                                                        table)
        if not note:
            raise
        raise CheckFailure(f"{exc}\n({note})") from None


@pytest.mark.parametrize("k, exclude", [(1, ()), (3, ()), (5, ()), (2, (2,)), (3, (2, 4))])
def test_nearest_hand(student, device, k, exclude):
    """nearest on a table where cosine and dot product disagree, k={k}, exclude={exclude}"""
    table, query = torch.tensor(NEAREST_TABLE, device=device), torch.tensor(NEAREST_QUERY, device=device)
    expected = ranking(torch.tensor(NEAREST_TABLE, dtype=torch.float64) @ torch.tensor(NEAREST_QUERY).double()
                       / torch.tensor(NEAREST_TABLE).double().norm(dim=1), k, exclude).to(device)
    args = (query, table, k) + ((list(exclude),) if exclude else ())
    what = f"nearest([1, 0], table, k={k}" + (f", exclude={list(exclude)})" if exclude else ")")
    check_nearest(student, call_nearest(student, *args), expected, query, table, k, exclude, what)


def test_nearest_defaults(student, device):
    """nearest with k and exclude omitted (k=1, exclude=()) and passed explicitly as those defaults"""
    table, query = torch.tensor(NEAREST_TABLE, device=device), torch.tensor(NEAREST_QUERY, device=device)
    expected = int64([2], device)
    for text, kwargs in [("", {}), (", k=1, exclude=()", {"k": 1, "exclude": ()}), (", exclude=[]", {"exclude": []})]:
        what = f"nearest([1, 0], table{text})"
        check_nearest(student, call_nearest(student, query, table, **kwargs), expected, query, table,
                      1, (), what)


@pytest.mark.parametrize("seed", [12, 13])
def test_nearest_random(student, reference, device, seed):
    """nearest on a random (64, 16) table returns the 5 best rows, best first (seed {seed})"""
    table, query = randn(64, 16, seed=seed, device=device), randn(16, seed=seed + 100, device=device)
    exclude = [3, 17, 40]
    cos = reference.cosine_similarity(query.double(), table.double())
    expected = ranking(cos, 5, exclude).to(device)
    what = "nearest(query, table (64, 16), k=5, exclude=[3, 17, 40])"
    check_nearest(student, call_nearest(student, query, table, 5, exclude), expected, query, table,
                  5, exclude, what)


def check_analogy(student, got, expected, table, a, b, c, k, what: str, mistakes: dict) -> None:
    """got must be the true answer, or (error carried forward) the student's own
    nearest(table[b] - table[a] + table[c], table, k, [a, b, c]), read back."""
    try:
        expect_equal(got, expected, what=what, mistakes=mistakes)
    except CheckFailure as failure:
        own = own_nearest(student, table[b] - table[a] + table[c], table, k, [a, b, c])
        if own is not None and expect_same(got, own):
            return   # the student's own nearest's answer: its mistake is charged by the nearest tests
        if own is not None and not expect_same(own, expected):
            raise CheckFailure(f"{failure}\n(note: your nearest(table[b] - table[a] + table[c], table, k, "
                               f"exclude=[a, b, c]) gives {own.tolist()} here; its mistake is charged by "
                               f"{NEAREST_TEST})") from None
        raise


def expect_same(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
        and a.dtype == b.dtype and a.device.type == b.device.type and torch.equal(a.cpu(), b.cpu())


@pytest.mark.points(2)
@pytest.mark.parametrize("k", [1, 2])
def test_analogy_hand(student, device, k):
    """analogy: man is to king as woman is to queen (k={k})"""
    table = torch.tensor(ANALOGY_TABLE, device=device)
    expected = {1: [QUEEN], 2: [QUEEN, PRINCE]}[k]
    got = call_analogy(student, table, MAN, KING, WOMAN, k)
    check_analogy(student, got, int64(expected, device), table, MAN, KING, WOMAN, k,
                  f"analogy(table, man, king, woman, k={k}) "
                  f"(the words are {WORDS}; expected {[WORDS[i] for i in expected]})", mistakes={
                      "the inputs a, b, c are not excluded (king itself is nearest to king - man + woman)":
                          int64({1: [KING], 2: [KING, QUEEN]}[k], device),
                      "the vector is table[a] - table[b] + table[c]; it must be table[b] - table[a] + table[c]":
                          int64({1: [APPLE], 2: [APPLE, QUEEN]}[k], device),
                  })


def test_analogy_default_k(student, device):
    """analogy with k omitted (k=1) and passed explicitly as k=1"""
    table = torch.tensor(ANALOGY_TABLE, device=device)
    for text, kwargs in [("", {}), (", k=1", {"k": 1})]:
        check_analogy(student, call_analogy(student, table, MAN, KING, WOMAN, **kwargs),
                      int64([QUEEN], device), table, MAN, KING, WOMAN, 1,
                      f"analogy(table, man, king, woman{text}) (expected ['queen'])", mistakes={
                          "the inputs a, b, c are not excluded": int64([KING], device),
                          "the vector is table[a] - table[b] + table[c]; it must be table[b] - table[a] + "
                          "table[c]": int64([APPLE], device)})


@pytest.mark.points(2)
def test_analogy_random(student, reference, device):
    """analogy on a random (40, 8) table returns the 3 best rows, inputs left out"""
    table = randn(40, 8, seed=14, device=device)
    for a, b, c in [(0, 1, 2), (5, 30, 12), (39, 7, 21)]:
        target = table.double()[b] - table.double()[a] + table.double()[c]
        expected = ranking(reference.cosine_similarity(target, table.double()), 3, [a, b, c]).to(device)
        swapped = table.double()[a] - table.double()[b] + table.double()[c]
        check_analogy(student, call_analogy(student, table, a, b, c, 3), expected, table, a, b, c, 3,
                      f"analogy(table (40, 8), {a}, {b}, {c}, k=3)", mistakes={
                          "the inputs a, b, c are not excluded": lambda: ranking(
                              reference.cosine_similarity(target, table.double()), 3).to(device),
                          "the vector is table[a] - table[b] + table[c]; it must be table[b] - table[a] + table[c]":
                              lambda: ranking(reference.cosine_similarity(swapped, table.double()), 3,
                                              [a, b, c]).to(device)})
