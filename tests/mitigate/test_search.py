"""The measured search for the smallest model within tolerance: exact against brute force when
drops are monotone in bits, feasible on the validation split, never on the test split, each
candidate evaluated once; the baselines (uniform, loss-only, HAWQ order) and the infeasible
tolerance's message."""

import copy
import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError, DataError
from fairquant.metrics import sensitivity
from fairquant.metrics.curvature import ggn_diagonal
from fairquant.metrics.verdict import Tolerance
from fairquant.mitigate import search
from fairquant.mitigate.allocate import ToleranceUnreachable
from fairquant.mitigate.search import (
    Evaluation,
    Evaluator,
    SearchConfig,
    boundary,
    compare_searches,
    hawq_order,
    loss_only,
    search_smallest,
    smallest_uniform,
)
from fairquant.quant import parse_precision, quantize_model, quantized_layers
from fairquant.quant.build import quantize
from fairquant.quant.configs import DeployedPrecision
from fairquant.quant.precision import FLOAT_BITS, parse_precisions

GROUPS = ["a", "b", "c"]


def _blobs(n: int, seed: int, offset: float = 0.0) -> Split:
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=gen) * 1.5
    gen.manual_seed(seed)
    g = torch.arange(n) % 3
    y = torch.randint(0, 3, (n,), generator=gen)
    x = centers[y] + torch.randn(n, 6, generator=gen) * (0.8 + 0.4 * g[:, None].float())
    return Split(x + offset, y, g)


@pytest.fixture(scope="module")
def tiny():
    """A 3-layer MLP trained on Gaussian blobs (groups differ in noise), a validation split and
    a test split marked by an offset of 1000 that no search may ever feed the model."""
    torch.manual_seed(0)
    train, validation, test = _blobs(600, 1), _blobs(300, 2), _blobs(300, 3, offset=1000.0)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.x), train.y).backward()
        opt.step()
    return model.eval(), validation, test


CONFIG = SearchConfig(bits=(2, 3, 4, 8), samples_per_group=40, max_rounds=30)


def _validation_drops(model, validation, precision) -> np.ndarray:
    def accuracy(m):
        correct = (m(validation.x).argmax(1) == validation.y).double()
        return np.array([correct[validation.g == a].mean().item() * 100 for a in range(3)])

    with torch.no_grad():
        return accuracy(model) - accuracy(quantize_model(model, precision))


def test_search_is_feasible_on_validation_and_never_feeds_the_test_split(tiny, monkeypatch):
    model, validation, test = tiny
    seen = []

    def record(fn):
        def wrapped(m, x, *args, **kwargs):
            seen.append(float(x.abs().max()))
            return fn(m, x, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(search, "predict_logits", record(search.predict_logits))
    monkeypatch.setattr(sensitivity, "predict_logits", record(sensitivity.predict_logits))
    monkeypatch.setattr(sensitivity, "ggn_diagonal", record(sensitivity.ggn_diagonal))
    monkeypatch.setattr(search, "ggn_diagonal", record(search.ggn_diagonal))
    tolerance = Tolerance(max_drop=2.0, per_group={"c": 3.0})
    results, table = compare_searches(model, validation, GROUPS, tolerance, config=CONFIG)
    assert seen and max(seen) < 100 < float(test.x.abs().min())  # only validation samples
    for method in ("fairquant", "measured", "uniform", "hawq"):
        r = results[method]
        drops = _validation_drops(model, validation, r.precision)
        np.testing.assert_allclose(r.drop.to_numpy(), drops, atol=1e-9)
        assert r.feasible and (drops <= [2.0, 2.0, 3.0]).all()
    loss = results["loss-only"]  # bounds the average only: it may break a group
    assert float(loss.drop.mean()) <= 2.0 + 1e-9
    assert results["fairquant"].size_bytes <= results["uniform"].size_bytes
    assert list(table.method) == list(search.METHODS)
    assert table.set_index("method").loc["measured", "speedup"] == pytest.approx(1.0)
    assert {f"drop[{a}]" for a in GROUPS} <= set(table.columns)


def test_rounds_improve_monotonically_and_precision_saves_as_a_spec(tiny, tmp_path):
    model, validation, _ = tiny
    r = search_smallest(model, validation, GROUPS, Tolerance(max_drop=2.0), config=CONFIG)
    uniform = smallest_uniform(model, validation, GROUPS, Tolerance(max_drop=2.0), config=CONFIG)
    incumbents = [uniform.size_bytes, *r.rounds.size_bytes[r.rounds.feasible]]
    assert all(b < a for a, b in itertools.pairwise(incumbents))  # every kept one is smaller
    assert r.size_bytes == incumbents[-1]
    assert r.layers.bits.tolist() == [b for _, b in r.precision.layers]
    (loaded,) = parse_precisions([f"@{r.precision.save(tmp_path / 'spec.json')}"])
    assert loaded.layers == r.precision.layers


def test_evaluator_measures_each_candidate_once(tiny, monkeypatch):
    model, validation, _ = tiny
    calls = []

    def counting(m, precision, **kwargs):
        calls.append(tuple(b for _, b in precision.layers))
        return quantize(m, precision, **kwargs)

    monkeypatch.setattr(search, "quantize", counting)
    ev = Evaluator(model, validation, GROUPS)
    first = ev.evaluate([2, 4, 8])
    assert ev.evaluate((2, 4, 8)) is first and ev.evaluations == 2  # fp32 and one candidate
    tolerance = Tolerance(max_drop=2.0)
    for fn in (smallest_uniform, search_smallest, hawq_order, smallest_uniform):
        fn(model, validation, GROUPS, tolerance, config=CONFIG, evaluator=ev)
    assert len(calls) == len(set(calls))
    with ev.usage() as use:  # alone, a method is charged for what it used, cached or not
        smallest_uniform(model, validation, GROUPS, tolerance, config=CONFIG, evaluator=ev)
    assert use.evaluations == 1 + len(CONFIG.bits)
    assert use.seconds >= sum(ev.cost((b,) * 3) for b in CONFIG.bits)


class _Monotone(Evaluator):
    """Synthetic drops, monotone in every layer's bits and not additive (a group's drop is a
    saturating function of its summed quantization errors), with a predictor that misjudges
    each layer by a factor in [0.3, 3]: the loop must still prove the brute-force optimum."""

    def __init__(self, model, validation, seed: int):
        super().__init__(model, validation, GROUPS)
        rng = np.random.default_rng(seed)
        self.weight = rng.gamma(1.0, 1.0, (3, len(self.layers)))
        self.misjudged = self.weight * rng.uniform(0.3, 3.0, self.weight.shape)

    def error(self, b: int) -> float:
        return 4.0 ** (4 - b)

    def _evaluate(self, bits):
        e = np.array([self.error(b) for b in bits])
        drop = 100 * (1 - np.exp(-(self.weight @ e) / 200))
        index = pd.Index(GROUPS, name="group")
        return Evaluation(
            bits=bits,
            size_bytes=search.packed_size_bytes(self.model, self.precision(bits)),
            accuracy=pd.Series(100 - drop, index=index),
            drop=pd.Series(drop, index=index),
            excess=pd.Series(drop / 100, index=index),
            drop_high=pd.Series(drop, index=index),
        )

    def predicted_table(self, options, sensitivity, samples, seed):
        rows = [
            (layer, b, n, a, self.misjudged[i, j] * self.error(b) / 2000)
            for j, (layer, n) in enumerate(zip(self.layers, self.numel, strict=True))
            for b in options
            for i, a in enumerate(GROUPS)
        ]
        return pd.DataFrame(rows, columns=["layer", "bits", "numel", "group", "excess"])


@pytest.mark.parametrize("seed", range(6))
def test_search_proves_the_brute_force_optimum_when_drops_are_monotone(tiny, seed):
    model, validation, _ = tiny
    ev = _Monotone(model, validation, seed)
    tolerance = Tolerance(max_drop=3.0, per_group={"b": 6.0})
    config = SearchConfig(bits=(2, 3, 4, 8), max_rounds=64)
    r = search_smallest(model, validation, GROUPS, tolerance, config=config, evaluator=ev)
    every = [ev.evaluate(b) for b in itertools.product(config.bits, repeat=len(ev.layers))]
    best = min(e.size_bytes for e in every if e.feasible(tolerance))
    assert r.proven and r.feasible and r.size_bytes == best
    assert len(r.rounds) < len(every) - len(config.bits)


def test_smallest_uniform_against_every_width(tiny):
    model, validation, _ = tiny
    tolerance = Tolerance(max_drop=1.0)
    r = smallest_uniform(model, validation, GROUPS, tolerance, config=CONFIG)
    passing = [
        b
        for b in CONFIG.bits
        if (_validation_drops(model, validation, parse_precision(f"int{b}")) <= 1.0).all()
    ]
    assert r.layers.bits.tolist() == [min(passing)] * 3
    assert list(r.rounds.feasible) == [b in passing for b in CONFIG.bits]


def test_hawq_lowers_bits_in_the_order_of_the_scores(tiny):
    model, validation, _ = tiny
    ev = Evaluator(model, validation, GROUPS)
    tolerance = Tolerance(max_drop=5.0)
    r = hawq_order(model, validation, GROUPS, tolerance, config=CONFIG, evaluator=ev)
    score = ev.trace_table(CONFIG.bits, 40, 0).set_index(["layer", "bits"]).score
    bits, options, order = [8, 8, 8], list(CONFIG.bits), []
    while any(b != options[0] for b in bits):  # each step the cheapest next one by score
        steps = {
            i: score[(layer, options[options.index(b) - 1])]
            for i, (layer, b) in enumerate(zip(ev.layers, bits, strict=True))
            if b != options[0]
        }
        i = min(steps, key=steps.get)
        bits[i] = options[options.index(bits[i]) - 1]
        order.append(tuple(bits))
    feasible = [ev.evaluate(b).feasible(tolerance) for b in order]
    assert set(r.rounds.size_bytes) <= {ev.evaluate(b).size_bytes for b in order}
    assert len(r.rounds) <= int(np.ceil(np.log2(len(order) + 1)))  # bisection, not a scan
    kept = next((k for k, ok in enumerate(feasible) if not ok), len(order))  # first break
    if feasible == sorted(feasible, reverse=True):  # drops grow along the order: a linear scan
        want = order[kept - 1] if kept else (8, 8, 8)
        assert tuple(r.layers.bits) == want
    assert r.feasible and tuple(r.layers.bits) in {*order, (8, 8, 8)}


def test_one_ggn_pass_serves_the_predictor_and_hawq(tiny, monkeypatch):
    """The diagonal predictor and HAWQ's trace share one per-group GGN-diagonal pass; HAWQ's
    pooled trace weights the groups by their validation shares."""
    model, validation, _ = tiny
    calls = []

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return ggn_diagonal(*args, **kwargs)

    monkeypatch.setattr(search, "ggn_diagonal", counting)
    monkeypatch.setattr(sensitivity, "ggn_diagonal", counting)
    ev = Evaluator(model, validation, GROUPS)
    tolerance = Tolerance(max_drop=5.0)
    search_smallest(model, validation, GROUPS, tolerance, config=CONFIG, evaluator=ev)
    hawq_order(model, validation, GROUPS, tolerance, config=CONFIG, evaluator=ev)
    assert calls == [40 * len(GROUPS)]
    curv = ev.diagonal(40, 0)
    shares = torch.bincount(validation.g, minlength=3).double()
    table = ev.trace_table(CONFIG.bits, 40, 0).drop_duplicates("layer").set_index("layer")
    for name, layer in quantized_layers(model):
        d = curv.diag[f"{name}.weight"]  # (groups, *shape)
        want = (shares @ d.flatten(1).sum(1) / shares.sum()).item() / layer.weight.numel()
        assert table.loc[name, "trace"] == pytest.approx(want, rel=1e-12)


def test_loss_only_bounds_the_population_average(tiny):
    model, validation, _ = tiny
    weights = {"a": 0.6, "b": 0.3, "c": 0.1}
    r = loss_only(
        model, validation, GROUPS, Tolerance(max_drop=2.0), config=CONFIG, weights=weights
    )
    assert float(r.drop @ pd.Series(weights)) <= 2.0 + 1e-9
    with pytest.raises(ConfigError, match="do not cover"):
        loss_only(model, validation, GROUPS, Tolerance(), config=CONFIG, weights={"a": 1.0})


def test_an_unreachable_tolerance_names_the_group_and_what_is_reachable(tiny):
    model, validation, _ = tiny
    config = SearchConfig(bits=(2, 3), max_rounds=2)
    ev = Evaluator(model, validation, GROUPS)
    drops = ev.evaluate((3, 3, 3)).drop
    tolerance = Tolerance(max_drop=99.0, per_group={drops.idxmax(): float(drops.max()) - 0.5})
    for fn in (search_smallest, smallest_uniform, hawq_order):
        with pytest.raises(ToleranceUnreachable, match=f"group '{drops.idxmax()}' loses") as e:
            fn(model, validation, GROUPS, tolerance, config=config, evaluator=ev)
        assert "\n" not in str(e.value) and e.value.group == drops.idxmax()
        assert e.value.reachable <= float(drops.max())


def test_bad_options_and_data_are_refused(tiny):
    model, validation, _ = tiny
    with pytest.raises(ConfigError, match="sensitivity"):
        SearchConfig(sensitivity="guess")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bits"):
        SearchConfig(bits=(1, 4))
    with pytest.raises(ConfigError, match="max_rounds"):
        SearchConfig(max_rounds=-1)
    one_group = validation.subset(torch.nonzero(validation.g != 2).flatten())
    with pytest.raises(DataError, match=r"no samples of the groups \['c'\]"):
        Evaluator(model, one_group, GROUPS)
    with pytest.raises(ConfigError, match="unknown groups"):
        search_smallest(model, validation, GROUPS, Tolerance(per_group={"z": 1.0}))
    ev = Evaluator(model, validation, GROUPS)
    with pytest.raises(ConfigError, match="another model"):
        search_smallest(
            model,
            validation,
            GROUPS,
            Tolerance(),
            config=SearchConfig(per_channel=True),
            evaluator=ev,
        )


def test_boundary_reads_the_crossing_off_the_uniform_widths():
    p, m = np.array([0.0, 1.0, 2.0, 4.0]), np.array([0.0, 0.5, 3.0, 9.0])
    assert boundary(p, m, 1.0) == pytest.approx(1.2)  # between (1, 0.5) and (2, 3)
    assert boundary(p, m, 10.0) == np.inf
    assert boundary(np.array([2.0]), np.array([4.0]), 1.0) == pytest.approx(0.5)
    p, m = np.array([0.0, 1.0]), np.array([0.0, 1.2])  # one sample over: bisect, not creep
    assert boundary(p, m, 1.0) == pytest.approx(0.5)


def test_the_upper_bound_criterion_keeps_each_group_s_interval_within_the_tolerance(tiny):
    model, validation, _ = tiny
    tolerance = Tolerance(max_drop=10.0)
    strict = replace(CONFIG, criterion="upper-bound")
    loose = smallest_uniform(model, validation, GROUPS, tolerance, config=CONFIG)
    bounded = smallest_uniform(model, validation, GROUPS, tolerance, config=strict)
    assert bounded.size_bytes >= loose.size_bytes  # the bound is never below the estimate
    ev = Evaluator(model, validation, GROUPS, criterion="upper-bound")
    r = search_smallest(model, validation, GROUPS, tolerance, config=strict, evaluator=ev)
    measured = ev.evaluate(tuple(r.layers.bits))
    assert (measured.drop_high >= measured.drop - 1e-9).all()
    assert (measured.drop_high <= 10.0).all() and r.feasible
    with pytest.raises(ConfigError, match="criterion"):
        search_smallest(model, validation, GROUPS, tolerance, config=CONFIG, evaluator=ev)
    with pytest.raises(ConfigError, match="criterion must be one of"):
        SearchConfig(criterion="median")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def outlier(tiny):
    """``tiny``'s MLP with one output row of its first layer 1000x larger (and the next layer's
    matching input column 1000x smaller: the same function): per-tensor int8 rounds the first
    layer's other rows to zero, so ONNX Runtime's int8 breaks the groups unless it stays in
    float. Returns the model, the validation split and calibration inputs."""
    pytest.importorskip("onnxruntime", reason="the ort: precisions need onnxruntime")
    pytest.importorskip("onnx", reason="the ort: precisions need onnx")
    model, validation, _ = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        model[0].weight[0] *= 1000
        model[0].bias[0] *= 1000
        model[2].weight[:, 0] /= 1000
    return model, validation, _blobs(128, 4).x


def _session_predict(path, x: torch.Tensor) -> np.ndarray:
    """Predicted classes from a bare onnxruntime session (no fairquant code)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x.numpy()})[0].argmax(1)


def _drops(model, path, split: Split) -> np.ndarray:
    right_fp32 = (model(split.x).argmax(1) == split.y).numpy()
    right = _session_predict(path, split.x) == split.y.numpy()
    g = split.g.numpy()
    return np.array([100 * (right_fp32[g == a].mean() - right[g == a].mean()) for a in range(3)])


def test_search_on_ort_keeps_the_layers_that_break_a_group_in_float(outlier, tmp_path):
    model, validation, calibration = outlier
    tolerance = Tolerance(max_drop=2.0)
    # the base alone breaks the groups (measured with ONNX Runtime itself)
    whole = quantize(model, "ort:int8", calibration=calibration).save(tmp_path / "all.onnx")
    assert _drops(model, whole, validation).max() > 20
    config = SearchConfig(base="ort:int8", samples_per_group=40, max_rounds=8)
    assert config.bits == (8, FLOAT_BITS) and config.per_channel is False
    r = search_smallest(
        model, validation, GROUPS, tolerance, config=config, calibration=calibration
    )
    assert r.feasible
    bits = dict(zip(r.layers.layer, r.layers.bits, strict=True))
    assert bits["0"] == FLOAT_BITS and 8 in bits.values()  # the outlier layer in float, not all
    assert isinstance(r.precision, DeployedPrecision) and r.precision.toolchain == "ort"
    assert r.precision.float_layers  # ONNX Runtime's nodes_to_exclude
    # the result is what ONNX Runtime builds: its file's size and its own drops on validation
    built = quantize(model, r.precision, calibration=calibration)
    path = built.save(tmp_path / "chosen.onnx")
    assert path.suffix == ".onnx" and r.size_bytes == path.stat().st_size == built.size_bytes
    np.testing.assert_allclose(_drops(model, path, validation), r.drop.to_numpy(), atol=1e-9)
    assert (r.drop <= 2.0).all()


def test_when_only_float_keeps_the_tolerance_the_search_says_so(outlier):
    _, validation, calibration = outlier
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight.normal_()
        model[0].weight[0] *= 1000  # the other rows round to zero in per-tensor int8
    config = SearchConfig(base="ort:int8", samples_per_group=40, max_rounds=4)
    with pytest.raises(ToleranceUnreachable, match="no candidate with a layer at ort:int8") as e:
        search_smallest(
            model.eval(), validation, GROUPS, Tolerance(max_drop=2.0), config=config,
            calibration=calibration,
        )  # fmt: skip
    assert e.value.group in GROUPS and e.value.reachable > 2.0


def test_a_deployed_base_refuses_what_it_cannot_express(outlier):
    model, validation, _ = outlier
    for kwargs, message in (
        ({"base": "int4"}, "expected a deployed precision"),
        ({"base": "ort:int8", "bits": (4, 8)}, "fixes the choice per layer"),
        ({"base": "ort:int8", "sensitivity": "measured"}, "measured table simulates"),
        ({"base": "ort:int8", "per_channel": True}, "spell the per-channel precision"),
    ):
        with pytest.raises(ConfigError, match=message):
            SearchConfig(**kwargs)
    assert SearchConfig(base="ort:int8-pc").per_channel is True
    config = replace(SearchConfig(base="ort:int8"), max_rounds=3)  # what it set, it keeps
    assert config.bits == (8, FLOAT_BITS) and config.base.name == "ort:int8"
    with pytest.raises(ConfigError, match="pass calibration inputs"):
        search_smallest(
            model, validation, GROUPS, Tolerance(max_drop=2.0), config=SearchConfig(base="ort:int8")
        )
