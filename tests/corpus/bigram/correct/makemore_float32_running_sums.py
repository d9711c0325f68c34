"""STYLE: the makemore lecture's way: N[ix1, ix2] += 1 one bigram at a time, each row
normalised by a float32 running sum, and the NLL as a Python loop adding float32
log-probabilities one bigram at a time (log_likelihood = 0.0; log_likelihood += logprob).

Over the ~29k held-out bigrams the float32 running sum drifts ~3e-5 from the float64
truth; a correct solution, it must score the maximum.
"""

import torch

BOUNDARY = "."


def build_vocab(words):
    chars = sorted(list(set("".join(words))))
    if "." in chars:
        raise ValueError("words must not contain '.'")
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    itos = {i: s for s, i in stoi.items()}
    return stoi, itos


def bigram_counts(words, stoi):
    N = torch.zeros((len(stoi), len(stoi)), dtype=torch.int64)
    for w in words:
        chs = ["."] + list(w) + ["."]
        for ch1, ch2 in zip(chs, chs[1:]):
            ix1 = stoi[ch1]
            ix2 = stoi[ch2]
            N[ix1, ix2] += 1
    return N


def bigram_probs(counts, smoothing=1.0):
    P = (counts + smoothing).float()
    V = P.shape[0]
    for i in range(V):
        row_total = torch.zeros((), dtype=torch.float32, device=P.device)
        for j in range(V):
            row_total += P[i, j]
        if row_total > 0:
            P[i] = P[i] / row_total
        else:
            P[i] = 1.0 / V
    return P


def nll(probs, words, stoi):
    log_likelihood = 0.0
    n = 0
    for w in words:
        chs = ["."] + list(w) + ["."]
        for ch1, ch2 in zip(chs, chs[1:]):
            ix1 = stoi[ch1]
            ix2 = stoi[ch2]
            prob = probs[ix1, ix2]
            logprob = torch.log(prob)
            log_likelihood += logprob
            n += 1
    nll = -log_likelihood
    return (nll / n).item()


def sample(probs, itos, n, generator, max_len=50):
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    out = []
    for _ in range(n):
        chars = []
        ix = 0
        while len(chars) < max_len:
            p = probs[ix]
            ix = torch.multinomial(p, num_samples=1, replacement=True, generator=generator).item()
            if ix == 0:
                break
            chars.append(itos[ix])
        out.append("".join(chars))
    return out
