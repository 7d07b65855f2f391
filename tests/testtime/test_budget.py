import json
import math

import pytest

from miro.testtime.budget import Budget, BudgetError, BudgetExceeded, Candidate, SearchTrace, Trace
from miro.utils.config import ConfigError


def test_budget_in_samples_or_nfe():
    assert Budget(samples=4).total(6) == 24 and Budget(nfe=10).total(6) == 10
    m = Budget(samples=2).meter(6)
    assert (m.total, m.spent, m.left) == (12, 0, 12)
    m.charge(6)
    m.charge(6)
    assert m.left == 0 and not m.can_afford(1e-6)
    with pytest.raises(BudgetExceeded, match="needs 1 NFE-eq but only 0 of the budget's 12 are left"):
        m.charge(1)
    m.charge_report(5)  # reporting is never charged against the budget
    assert m.spent == 12 and m.report == 5


@pytest.mark.parametrize("kw,match", [
    ({}, "give exactly one of samples"),
    ({"samples": 2, "nfe": 3}, "give exactly one of samples"),
    ({"samples": 0}, r"budget.samples=0: must be a number > 0"),
    ({"nfe": -1}, r"budget.nfe=-1: must be a number > 0"),
    ({"samples": math.inf}, "budget.samples=inf"),
])  # fmt: skip
def test_bad_budgets_name_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        Budget(**kw)


def test_a_budget_below_one_sample_is_refused_with_the_numbers():
    with pytest.raises(
        BudgetError, match=r"budget nfe=5 = 5 NFE-eq per image is below one sample \(6 NFE-eq"
    ):
        Budget(nfe=5).meter(6)
    with pytest.raises(BudgetError, match="samples=0.5 = 3 NFE-eq"):
        Budget(samples=0.5).meter(6)
    Budget(nfe=6).meter(6)  # exactly one sample is enough


def test_trace_is_json_and_round_trips():
    s = SearchTrace(prompt="a red circle", seed=3, budget_nfe=12.0, nfe=12.0, report_nfe=2.0, wall_time=0.5,
                    candidates=[Candidate(0, {"a": 1.0, "b": math.nan}, math.nan, {"guidance_scale": 7.0},
                                          {"seed": 3, "index": 0}, 6.0)], noise_norm=13.9, noise_dim=192)  # fmt: skip
    t = Trace(method="best_of_n", options={"n": None}, one_sample_nfe=6.0, budget={"samples": 2, "nfe": None},
              searches=[s, s])  # fmt: skip
    d = json.loads(t.to_json())  # strict JSON: NaN is written as null
    assert d["nfe"] == 24.0 and d["report_nfe"] == 4.0 and d["wall_time"] == 1.0
    assert d["searches"][0]["candidates"][0]["rewards"] == {"a": 1.0, "b": None}
    back = Trace.from_dict(d)
    assert back.nfe == 24.0 and back.searches[0].candidates[0].rewards["a"] == 1.0
    assert math.isnan(back.searches[0].candidates[0].score) and back.searches[1].chosen_rewards["a"] == 1.0
