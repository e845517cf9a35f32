"""Hugging Face models through ``score`` and ``prune``, built from tiny configs (no download).

BERT (``BertForSequenceClassification``) takes dict batches with ``input_ids``, ``attention_mask`` and
``labels``; GPT-2 (``GPT2ForSequenceClassification``, padded sequences classified at their last token)
has ``transformers``' ``Conv1D`` projections, whose weight is stored transposed. Every criterion either
gives exact results, against per-sample loops of ``model(**sample).logits`` in float64 (the Fisher,
Gauss-Newton and Monte-Carlo Fisher families, the gradient criteria, GraSP against central differences),
finite deterministic ones (Hutchinson, random), or a clear error before anything changes (SynFlow: the
models look their integer inputs up in embeddings). GPT-2 as a language model (``GPT2LMHeadModel``) is
scored with ``token_cross_entropy`` against the same kind of loop over its sequences.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import initprune
from initprune import InitpruneError
from initprune.curvature import sample_model_labels
from initprune.curvature.per_sample import weight_owners

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

CLASSES = 3
VOCAB = 30
HUTCHINSON = ("hutch_diag", "hutch_pruner", "hutch_taylor")
CRITERIA = list(initprune.criteria())


def bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
        max_position_embeddings=16, num_labels=CLASSES, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).double()


def gpt2_config() -> object:
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=8, n_layer=2, n_head=2, n_positions=16, num_labels=CLASSES, pad_token_id=0,
        bos_token_id=1, eos_token_id=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip


def gpt2() -> nn.Module:
    torch.manual_seed(0)
    return transformers.GPT2ForSequenceClassification(gpt2_config()).double()


MODELS = {"bert": bert, "gpt2": gpt2}


def data(name: str, n: int = 5) -> list[dict[str, Tensor]]:
    """n padded sequences in two dict batches of unequal size (token 0 is GPT-2's padding)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (n, 6), generator=gen)
    mask = torch.ones(n, 6, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}]


def options(criterion: str) -> dict:
    return {"probes": 2} if criterion in HUTCHINSON else {}


def state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, Tensor]) -> None:
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"


# ------------------------------------------------------------------------------------------------------
# References: plain loops over the samples, model(**sample).logits


def samples(name: str) -> tuple[list[dict[str, Tensor]], Tensor]:
    rows = []
    for batch in data(name):
        for i in range(batch["labels"].shape[0]):
            rows.append({k: v[i : i + 1] for k, v in batch.items() if k != "labels"})
    return rows, torch.cat([b["labels"] for b in data(name)])


def grads(model: nn.Module, names: list[str], rows, labels: Tensor, temperature: float = 1.0):
    params = dict(model.named_parameters())
    out = []
    for row, y in zip(rows, labels, strict=True):
        loss = F.cross_entropy(model(**row).logits / temperature, y.view(1))
        out.append(dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True)))
    return out


def mean(dicts, fn=lambda t: t) -> dict[str, Tensor]:
    return {k: sum(fn(d[k]) for d in dicts) / len(dicts) for k in dicts[0]}


_REFERENCES: dict[str, dict] = {}


def references(name: str) -> dict:
    if name in _REFERENCES:
        return _REFERENCES[name]
    model = MODELS[name]().eval()
    names = list(initprune.prunable_parameters(model))
    params = dict(model.named_parameters())
    theta = {n: params[n].detach().clone() for n in names}
    rows, labels = samples(name)
    per_sample = grads(model, names, rows, labels)
    g, fisher = mean(per_sample), mean(per_sample, torch.square)
    ggn = {n: torch.zeros_like(theta[n]) for n in names}
    probs = []
    for row in rows:
        z = model(**row).logits[0]
        p = torch.softmax(z.detach(), -1)
        probs.append(p)
        lam = torch.diag(p) - torch.outer(p, p)
        jac = [
            torch.autograd.grad(z[c], [params[n] for n in names], retain_graph=True) for c in range(CLASSES)
        ]
        for c in range(CLASSES):
            for d in range(CLASSES):
                for k, n in enumerate(names):
                    ggn[n] += lam[c, d] * jac[c][k] * jac[d][k] / len(rows)
    drawn = sample_model_labels(torch.stack(probs), 1, torch.Generator().manual_seed(0))[:, 0]
    mc = mean(grads(model, names, rows, drawn), torch.square)

    def family(diag: dict[str, Tensor], prefix: str) -> dict[str, dict[str, Tensor]]:
        return {
            f"{prefix}_diag": diag,
            f"{prefix}_pruner": {n: 0.5 * theta[n] ** 2 * diag[n] for n in names},
            f"{prefix}_taylor": {n: (theta[n] * g[n] + 0.5 * theta[n] ** 2 * diag[n]).abs() for n in names},
        }

    refs = {
        **family(fisher, "fisher"),
        **family(ggn, "ggn"),
        **family(mc, "fisher_mc"),
        "grad_norm": {n: g[n].abs() for n in names},
        "snip": {n: (theta[n] * g[n]).abs() for n in names},
        "magnitude": {n: theta[n].abs() for n in names},
        "grasp": grasp_reference(model, names, rows, labels, theta),
    }
    _REFERENCES[name] = refs
    return refs


def grasp_reference(model, names, rows, labels, theta, eps: float = 1e-5) -> dict[str, Tensor]:
    """θ ⊙ Hg with Hg from central differences of the mean gradient along g (T = 200)."""
    params = dict(model.named_parameters())

    def gradient() -> dict[str, Tensor]:
        return mean(grads(model, names, rows, labels, temperature=200.0))

    g = gradient()
    shifted = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for n in names:
                params[n].add_(sign * eps * g[n])
        shifted.append(gradient())
        with torch.no_grad():
            for n in names:
                params[n].copy_(theta[n])
    return {n: theta[n] * (shifted[0][n] - shifted[1][n]) / (2 * eps) for n in names}


SYNFLOW_ERROR = r"synflow cannot score \w+: it looks up integer inputs in Embedding"

# ------------------------------------------------------------------------------------------------------
# score and prune, every criterion


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", list(MODELS))
def test_score(name, criterion):
    model = MODELS[name]()
    before = state(model)
    if criterion == "synflow":
        with pytest.raises(InitpruneError, match=SYNFLOW_ERROR):
            initprune.score(model, criterion, data(name))
        assert_same_state(model, before)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = initprune.score(model, criterion, data(name), **options(criterion))
    assert_same_state(model, before)
    fallbacks = [w for w in caught if "torch.func.vmap cannot run" in str(w.message)]
    # The attention-mask code has data-dependent control flow: Hutchinson leaves vmap for the loop.
    assert len(fallbacks) == (criterion in HUTCHINSON)
    params = initprune.prunable_parameters(model)
    assert list(scores) == list(params)
    assert all(s.shape == params[k].shape and bool(torch.isfinite(s).all()) for k, s in scores.items())
    exact = references(name).get(criterion)
    if exact is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = initprune.score(model, criterion, data(name), **options(criterion))
        assert all(torch.equal(scores[k], again[k]) for k in scores)
        assert all(bool(s.ne(0).any()) for s in scores.values())
        return
    rtol = 1e-5 if criterion == "grasp" else 1e-9
    for k in exact:
        torch.testing.assert_close(
            scores[k], exact[k], rtol=rtol, atol=rtol * float(exact[k].abs().max()) + 1e-300
        )


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", list(MODELS))
def test_prune(name, criterion):
    model = MODELS[name]()
    before = state(model)
    kwargs = dict(sparsity=0.8, rounds=2 if criterion == "synflow" else None, **options(criterion))
    if criterion == "synflow":
        with pytest.raises(InitpruneError, match=SYNFLOW_ERROR):
            initprune.prune(model, criterion, data(name), **kwargs)
        assert_same_state(model, before)
        return
    mask = initprune.prune(model, criterion, data(name), **kwargs)
    params = initprune.prunable_parameters(model)
    assert list(mask) == list(params)
    assert mask.sparsity == pytest.approx(0.8, abs=0.01)
    for k, p in params.items():
        assert not p[~mask[k]].any(), f"pruned weights of {k} are not zero"
    scores = initprune.score(MODELS[name](), criterion, data(name), **options(criterion))
    expected = initprune.make_mask(scores, 0.8)
    assert all(torch.equal(mask[k], expected[k]) for k in mask)


# ------------------------------------------------------------------------------------------------------
# Batches and outputs


def test_dict_batches_tuple_inputs_and_tensor_inputs_give_the_same_scores():
    model = bert()
    batches = data("bert")
    as_dict = initprune.score(model, "fisher_diag", batches)
    pairs = [({k: v for k, v in b.items() if k != "labels"}, b["labels"]) for b in batches]
    assert_equal(initprune.score(model, "fisher_diag", pairs), as_dict)
    # Positional: BertForSequenceClassification(input_ids, attention_mask).
    tuples = [((b["input_ids"], b["attention_mask"]), b["labels"]) for b in batches]
    assert_equal(initprune.score(model, "fisher_diag", tuples), as_dict)
    # One dict batch, given alone.
    one = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    assert_close(initprune.score(model, "fisher_diag", one), as_dict)
    # A tensor input: no attention mask, every position attended.
    plain = [(b["input_ids"], b["labels"]) for b in batches]
    masked = [({"input_ids": b["input_ids"]}, b["labels"]) for b in batches]
    assert_equal(initprune.score(model, "fisher_diag", plain), initprune.score(model, "fisher_diag", masked))


def assert_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_close(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-12 * float(b[k].abs().max()))


class Wrapped(nn.Module):
    """An MLP whose output is wrapped as ``kind``: a tuple, a dict, or an object with ``logits``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.net = nn.Sequential(
            nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, CLASSES)
        )

    def forward(self, x: Tensor) -> object:
        z = self.net(x)
        if self.kind == "tuple":
            return z, z.sum()
        if self.kind == "dict":
            return {"loss": z.sum(), "logits": z}
        if self.kind == "output":
            return transformers.modeling_outputs.SequenceClassifierOutput(logits=z)
        return z


@pytest.mark.parametrize("criterion", ["fisher_diag", "ggn_diag", "hutch_diag", "grasp", "snip"])
@pytest.mark.parametrize("kind", ["tuple", "dict", "output"])
def test_outputs_as_tuples_dicts_and_model_outputs(kind, criterion):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 6, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 1]))]
    torch.manual_seed(0)
    plain = Wrapped("tensor").double()
    torch.manual_seed(0)
    wrapped = Wrapped(kind).double()
    opts = options(criterion)
    assert_equal(
        initprune.score(wrapped, criterion, batches, **opts),
        initprune.score(plain, criterion, batches, **opts),
    )


def test_bad_batches_and_outputs_are_named():
    model = bert()
    batch = data("bert")[0]
    with pytest.raises(
        InitpruneError, match=r"batch 0 is a dict without 'labels' \(keys: input_ids, attention_mask\)"
    ):
        initprune.score(model, "snip", [{k: v for k, v in batch.items() if k != "labels"}])
    with pytest.raises(InitpruneError, match=r"input\(s\) 'attention_mask' of batch 0 are not tensors"):
        initprune.score(model, "snip", [{**batch, "attention_mask": [1, 1, 1]}])
    with pytest.raises(
        InitpruneError, match=r"batch 0 has inputs of shape \(3, 6\), \(2, 6\) but \(3,\) targets"
    ):
        initprune.score(model, "snip", [{**batch, "attention_mask": batch["attention_mask"][:2]}])
    with pytest.raises(InitpruneError, match=r"do not fit model BertForSequenceClassification"):
        initprune.score(model, "snip", [{**batch, "token_type_ids": torch.zeros(3, 9, dtype=torch.long)}])

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

        def forward(self, x: Tensor, scale: Tensor) -> Tensor:
            return self.b(self.a(x) * scale)

    x, scale, y = torch.randn(3, 6), torch.ones(3, 1), torch.tensor([0, 1, 2])
    scale[2] = float("nan")
    with pytest.raises(InitpruneError, match=r"batch 0, input 2 \(of 3\) in argument 1 contains NaN"):
        initprune.score(TwoInputs(), "snip", [((x, scale), y)])
    with pytest.raises(InitpruneError, match=r"batch 0, input 2 \(of 3\) in 'scale' contains NaN"):
        initprune.score(TwoInputs(), "snip", [({"x": x, "scale": scale}, y)])

    class NoLogits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"hidden": self.b(self.a(x))}

    with pytest.raises(
        InitpruneError, match=r"must return logits .* it returned a dict without 'logits' \(keys: hidden\)"
    ):
        initprune.score(NoLogits(), "snip", (torch.randn(2, 6), torch.tensor([0, 1])))


def test_warmup_takes_dict_batches():
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12,
        max_position_embeddings=16, num_labels=CLASSES,
    )  # fmt: skip

    class WithBatchNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.BertModel(config)
            self.bn = nn.BatchNorm1d(8)
            self.head = nn.Linear(8, CLASSES)

        def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
            return self.head(self.bn(h))

    model = WithBatchNorm()
    assert initprune.warmup_bn(model, data("bert"), batches=2) == 2
    assert int(model.bn.num_batches_tracked) == 2


# ------------------------------------------------------------------------------------------------------
# GPT-2's Conv1D, prune(prunable=), the per-sample loop where vmap cannot run


def test_gpt2_conv1d_is_prunable_and_takes_the_hook_route():
    model = gpt2()
    names = list(initprune.prunable_parameters(model))
    assert names == [
        f"transformer.h.{i}.{layer}.weight"
        for i in range(2)
        for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    params = initprune.prunable_parameters(model)
    assert weight_owners(model, params) is not None  # per-sample gradients from layer inputs and outputs
    assert params["transformer.h.0.attn.c_attn.weight"].shape == (8, 24)  # stored (in, out)


def test_gpt2_lm_head_stays_dense_and_its_last_token_scores_exactly():
    class LastToken(nn.Module):
        """GPT2LMHeadModel classifying a sequence by the next-token logits at its last position."""

        def __init__(self) -> None:
            super().__init__()
            self.lm = transformers.GPT2LMHeadModel(gpt2_config())

        def forward(self, input_ids: Tensor) -> Tensor:
            return self.lm(input_ids=input_ids).logits[:, -1]

    torch.manual_seed(0)
    model = LastToken().double()
    assert model.lm.lm_head.weight is model.lm.transformer.wte.weight
    for flag in (False, True):  # tied to the embedding table: dense even as the classifier
        assert "lm.lm_head.weight" not in initprune.prunable_parameters(model, include_classifier=flag)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randint(1, VOCAB, (4, 5), generator=gen), torch.randint(0, VOCAB, (4,), generator=gen)
    names = list(initprune.prunable_parameters(model))
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(params[n]) for n in names}
    for i in range(4):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        for n, g in zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True):
            expected[n] += g.square() / 4
    scores = initprune.score(model, "fisher_diag", (x, y))
    for n in names:
        torch.testing.assert_close(
            scores[n], expected[n], rtol=1e-9, atol=1e-9 * float(expected[n].abs().max())
        )
    mask = initprune.prune(model, "fisher_pruner", (x, y), sparsity=0.5)
    assert "lm.lm_head.weight" not in mask and bool((model.lm.transformer.wte.weight != 0).all())


def test_prune_takes_the_prunable_weights_like_score():
    model = gpt2()
    chosen = {n: p for n, p in model.named_parameters() if n.endswith("mlp.c_fc.weight")}
    before = state(model)
    mask = initprune.prune(model, "fisher_diag", data("gpt2"), sparsity=0.5, prunable=chosen)
    assert list(mask) == list(chosen) and mask.sparsity == pytest.approx(0.5, abs=0.01)
    for k, v in model.state_dict().items():
        if k not in chosen:
            assert torch.equal(v, before[k]), f"{k} changed"
    with pytest.raises(InitpruneError, match=r"prunable names 'x.weight', which are not parameters of"):
        initprune.prune(gpt2(), "magnitude", sparsity=0.5, prunable={"x.weight": nn.Parameter(torch.ones(2))})


@pytest.mark.parametrize("criterion", ["fisher_diag", "ggn_diag", "fisher_mc_diag"])
def test_where_vmap_cannot_run_the_per_sample_loop_is_exact(criterion):
    """A parameter the hook route does not cover (the word embeddings) sends BERT to vmap, which cannot
    run its attention-mask code: one warning line, then the exact loop."""
    model = bert()
    names = ["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.1.intermediate.dense.weight"]
    chosen = {n: p for n, p in model.named_parameters() if n in names}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = initprune.score(model, criterion, data("bert"), prunable=chosen)
    lines = [str(w.message) for w in caught if "torch.func.vmap cannot run" in str(w.message)]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(
        "per-sample gradients: torch.func.vmap cannot run BertForSequenceClassification"
    )
    model.eval()
    rows, labels = samples("bert")
    if criterion == "fisher_mc_diag":
        with torch.no_grad():
            probs = torch.cat([torch.softmax(model(**r).logits, -1) for r in rows])
        labels = sample_model_labels(probs, 1, torch.Generator().manual_seed(0))[:, 0]
    if criterion == "ggn_diag":  # the exact GGN of the embeddings, against the MC-free reference
        expected = {n: torch.zeros_like(chosen[n]) for n in names}
        params = dict(model.named_parameters())
        for row in rows:
            z = model(**row).logits[0]
            p = torch.softmax(z.detach(), -1)
            lam = torch.diag(p) - torch.outer(p, p)
            jac = [
                torch.autograd.grad(z[c], [params[n] for n in names], retain_graph=True)
                for c in range(CLASSES)
            ]
            for c in range(CLASSES):
                for d in range(CLASSES):
                    for k, n in enumerate(names):
                        expected[n] += lam[c, d] * jac[c][k] * jac[d][k] / len(rows)
    else:
        expected = mean(grads(model, names, rows, labels), torch.square)
    for n in names:
        torch.testing.assert_close(
            scores[n], expected[n], rtol=1e-9, atol=1e-9 * float(expected[n].abs().max())
        )


# ------------------------------------------------------------------------------------------------------
# GPT-2 as a language model, scored with the per-token loss


def gpt2_lm() -> nn.Module:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(gpt2_config()).double()


def lm_data() -> list[dict[str, Tensor]]:
    """Two dict batches of padded sequences whose ``labels`` are the next tokens (-100: not counted, at the
    last position and after the padding), as a language model's loss takes them unshifted."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(2, VOCAB, (5, 6), generator=gen)
    mask = torch.ones(5, 6, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    ids[mask == 0] = 0
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = torch.where(mask[:, 1:] == 1, ids[:, 1:], -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]


def lm_references() -> dict[str, dict[str, Tensor]]:
    """grad_norm, snip and the empirical-Fisher family from a plain loop: ℓ_i = the mean CE over sequence
    i's counted tokens, L = (1/N) Σ ℓ_i."""
    model = gpt2_lm().eval()
    names = list(initprune.prunable_parameters(model))
    params = dict(model.named_parameters())
    per_sample = []
    for batch in lm_data():
        for i in range(batch["labels"].shape[0]):
            row = {k: v[i : i + 1] for k, v in batch.items() if k != "labels"}
            y = batch["labels"][i]
            counted = y != -100
            loss = F.cross_entropy(model(**row).logits[0][counted], y[counted])
            per_sample.append(
                dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))
            )
    g, fisher = mean(per_sample), mean(per_sample, torch.square)
    theta = {n: params[n].detach() for n in names}
    return {
        "grad_norm": {n: g[n].abs() for n in names},
        "snip": {n: (theta[n] * g[n]).abs() for n in names},
        "fisher_diag": fisher,
        "fisher_pruner": {n: 0.5 * theta[n].square() * fisher[n] for n in names},
        "fisher_taylor": {n: (theta[n] * g[n] + 0.5 * theta[n].square() * fisher[n]).abs() for n in names},
    }


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::initprune.LayerCollapseWarning")
@pytest.mark.parametrize("criterion", CRITERIA)
def test_gpt2_language_model_with_the_token_loss(criterion):
    """Every criterion through ``score`` and ``prune`` on GPT2LMHeadModel with ``token_cross_entropy``:
    exact against the per-sample loop where it gives a reference, deterministic and finite otherwise,
    SynFlow refused before anything changes; the tied lm_head stays dense."""
    model = gpt2_lm()
    before = state(model)
    kwargs = dict(loss="token_cross_entropy", **options(criterion))
    if criterion == "synflow":
        with pytest.raises(InitpruneError, match=SYNFLOW_ERROR):
            initprune.score(model, criterion, lm_data(), **kwargs)
        assert_same_state(model, before)
        return
    scores = initprune.score(model, criterion, lm_data(), **kwargs)
    assert_same_state(model, before)
    params = initprune.prunable_parameters(model)
    assert list(scores) == list(params) and "lm_head.weight" not in scores
    assert all(s.shape == params[k].shape and bool(torch.isfinite(s).all()) for k, s in scores.items())
    exact = lm_references().get(criterion)
    if exact is None:
        again = initprune.score(gpt2_lm(), criterion, lm_data(), **kwargs)
        assert all(torch.equal(scores[k], again[k]) for k in scores)
    else:
        for k in exact:
            torch.testing.assert_close(
                scores[k], exact[k], rtol=1e-9, atol=1e-9 * float(exact[k].abs().max()) + 1e-300
            )
    mask = initprune.prune(model, criterion, lm_data(), sparsity=0.8, **kwargs)
    assert mask.sparsity == pytest.approx(0.8, abs=0.01)
    expected = initprune.make_mask(scores, 0.8)
    assert all(torch.equal(mask[k], expected[k]) for k in mask)
    assert all(not p[~mask[k]].any() for k, p in params.items())
